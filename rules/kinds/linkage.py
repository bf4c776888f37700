"""`linkage`: a person read customer C, and within `window` (default 30 days) C was hit — a loan applied for from
a new device, a contact change followed by a loan, or confirmed fraud. Each customer is linked to a person once;
when a person's linked customers (hit within `period`) reach `min_customers`, and are more than chance explains,
one alert names them all with the read and the hit of each, at the rule's severity; it is raised again only when
`severity_steps` (`{high: 5, critical: 10}`) says more customers make it more severe.

Chance: someone who reads a tenth of the bank's customers reads about a tenth of any list of victims. The rule
counts, over `period`, the distinct customers each person read (n), those anyone read (N) and, of those, the ones
hit (K); k linked customers are more than chance when P(X >= k) for X ~ Poisson(n K / N) is at most `max_p`
(default 0.001). `max_p: 1` turns the test off.

Reads and hits are matched by event time in both directions, so business records that arrive before the reads
(a late proxy spool, an import of last month's fraud cases) link all the same."""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from rules.alerts import Alert, alert_id, number, render, utc
from rules.context import Context
from rules.errors import RuleSyntaxError
from rules.fields import Fact
from rules.kinds.base import Evaluator
from rules.model import SEVERITIES, SEVERITY_RANK, Reader, Rule, duration, positive, texts, whole
from rules.state import State
from rules.windows import MAX_EVIDENCE, Links, Series, Trail

DAY = 86400.0
TRIGGERS: dict[str, tuple[str, ...]] = {  # trigger → the event kinds it needs
    "new_device_loan": ("business.loan_application",),
    "contact_change_loan": ("business.contact_change", "business.loan_application"),
    "fraud_confirmed": ("business.fraud_confirmed",),
}
READS_PER_READER = 8  # the latest reads of one customer by one person that are kept
REREAD = 3600.0  # a read within this of the person's previous read of the customer adds nothing
# Series groups of the customers anyone read, and of those hit: a control character no staff id holds (not NUL,
# which PostgreSQL text cannot hold; collector/rules_state.py renames state stored under the old NUL keys).
EVERYONE, HIT = "\x01all", "\x01hit"


def poisson_tail(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean)."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    term = math.exp(-mean)
    below = term
    for i in range(1, k):
        term *= mean / i
        below += term
    if below < 0.999:
        return max(0.0, 1.0 - below)
    # 1 - below loses precision near 1: sum the upper tail instead (it converges fast past the mean)
    term = math.exp(k * math.log(mean) - mean - math.lgamma(k + 1))
    total, i = 0.0, k
    while term > total * 1e-17 and i < k + 10_000:
        total += term
        i += 1
        term *= mean / i
    return total


def _steps(v: Any) -> tuple[tuple[int, str], ...]:
    if not isinstance(v, Mapping):
        raise ValueError("must map a severity to the number of customers that reaches it, such as "
                         "{high: 5, critical: 10}")
    out = []
    for severity, count in v.items():
        if severity not in SEVERITIES:
            raise ValueError(f"{severity!r}: must be one of {', '.join(SEVERITIES)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{severity}: {count!r} is not a number of customers (1 or more)")
        out.append((count, str(severity)))
    return tuple(sorted(out))


@dataclass(frozen=True)
class LinkageRule(Rule):
    window: float = 30 * DAY
    triggers: tuple[str, ...] = tuple(TRIGGERS)
    min_customers: int = 3
    severity_steps: tuple[tuple[int, str], ...] = ()
    period: float = 90 * DAY
    max_p: float = 0.001

    kind: ClassVar[str] = "linkage"
    FIELDS: ClassVar[set[str]] = {"window", "triggers", "min_customers", "severity_steps", "period", "max_p"}

    def __post_init__(self) -> None:
        super().__post_init__()
        w = self.where

        def fail(message: str, fld: str) -> RuleSyntaxError:
            return RuleSyntaxError(message, file=w.file, line=w.line, field=fld)

        if not self.triggers:
            raise fail(f"name at least one of {', '.join(TRIGGERS)}", "triggers")
        for t in self.triggers:
            if t not in TRIGGERS:
                raise fail(f"{t!r} is not a trigger; use {', '.join(TRIGGERS)}", "triggers")
        needed = {"db.query"} | {k for t in self.triggers for k in TRIGGERS[t]}
        if needed - set(self.events):
            raise fail(f"the triggers need {', '.join(sorted(needed - set(self.events)))}; add them to events",
                       "events")
        if self.window <= 0 or self.period < self.window:
            raise fail("window must be a positive duration and period at least as long", "window")
        if not 0 < self.max_p <= 1:
            raise fail("must be a probability above 0 and at most 1, such as 0.001", "max_p")
        for count, severity in self.severity_steps:
            if SEVERITY_RANK[severity] <= SEVERITY_RANK[self.severity]:
                raise fail("a step may only raise the severity", "severity_steps")

    @classmethod
    def read(cls, r: Reader) -> dict[str, Any]:
        return {"window": r.take("window", duration, 30 * DAY), "triggers": r.take("triggers", texts,
                                                                                   tuple(TRIGGERS)),
                "min_customers": r.take("min_customers", whole, 3),
                "severity_steps": r.take("severity_steps", _steps, ()), "period": r.take("period", duration,
                                                                                          90 * DAY),
                "max_p": r.take("max_p", positive, 0.001)}

    def severity_for(self, count: int) -> str:
        severity = self.severity
        for at, s in self.severity_steps:
            if count >= at and SEVERITY_RANK[s] > SEVERITY_RANK[severity]:
                severity = s
        return severity

    def bind(self, ctx: Context) -> LinkageEvaluator:
        return LinkageEvaluator(self, ctx)


class LinkageEvaluator(Evaluator):
    rule: LinkageRule

    def __init__(self, rule: LinkageRule, ctx: Context) -> None:
        super().__init__(rule, ctx)
        self.triggers = frozenset(rule.triggers)

    def observe(self, f: Fact, state: State) -> list[Alert] | None:  # type: ignore[override]
        if f.kind == "db.query":
            return self._read(f, state)
        key = getattr(f.payload, "customer_key", None)
        if not key:
            return None
        trail: Trail = state.slot(self.id, "trail", key, Trail)
        what = self._hit(f, trail)
        if what is None:
            return None
        trail.add_hit((f.t, what, f.id))
        if trail.reads and not trail.counted:
            self._count(state, HIT, f.t)
            trail.counted = True
        out = []
        for who, reads in trail.reads.items():
            before = [r for r in reads if r[0] < f.t and f.t - r[0] <= self.rule.window]
            if before:
                alert = self._link(state, who, key, before[-1], (f.t, what, f.id), f.t)
                if alert is not None:
                    out.append(alert)
        return out or None

    def _hit(self, f: Fact, trail: Trail) -> str | None:
        p = f.payload
        if f.kind == "business.contact_change":
            trail.add_contact(f.t)
            return None
        if f.kind == "business.fraud_confirmed":
            return f"confirmed fraud (case {p.case_id})" if "fraud_confirmed" in self.triggers else None
        if f.kind != "business.loan_application":
            return None
        if "new_device_loan" in self.triggers and p.new_device:
            return "loan applied for from a new device"
        if "contact_change_loan" in self.triggers and any(
                f.t - self.rule.window <= c < f.t for c in trail.contacts):
            return "contact details changed, then a loan applied for"
        return None

    def _read(self, f: Fact, state: State) -> list[Alert] | None:
        who = self.group(f)
        out = []
        for key in f.customer_keys:
            trail: Trail = state.slot(self.id, "trail", key, Trail)
            if not trail.reads:
                self._count(state, EVERYONE, f.t)
                if trail.hits and not trail.counted:
                    self._count(state, HIT, f.t)
                    trail.counted = True
            reads = trail.reads.get(who)
            if reads is None:
                reads = trail.reads[who] = []
                self._count(state, who, f.t)
            elif abs(f.t - reads[-1][0]) < REREAD and f.t >= reads[-1][0]:
                continue
            insort(reads, (f.t, f.id))
            del reads[:-READS_PER_READER]
            for hit in trail.hits:  # the hit came in first: link now
                if f.t < hit[0] <= f.t + self.rule.window:
                    alert = self._link(state, who, key, (f.t, f.id), hit, f.t)
                    if alert is not None:
                        out.append(alert)
                    break
        return out or None

    def _link(self, state: State, who: str, key: str, read: tuple[float, str], hit: tuple[float, str, str],
              now: float) -> Alert | None:
        links: Links = state.slot(self.id, "links", who, Links)
        old = links.links.get(key)
        if old is None or hit[0] < old[1]:
            links.links[key] = (read[0], hit[0], hit[1], read[1], hit[2])
        recent = {k: v for k, v in links.links.items() if v[1] >= now - self.rule.period}
        if len(recent) < self.rule.min_customers:
            return None
        n, everyone, hit = (self._counted(state, g, now) for g in (who, EVERYONE, HIT))
        expected = n * hit / everyone if everyone else 0.0
        p = poisson_tail(len(recent), expected)
        if p > self.rule.max_p:
            return None
        severity = self.rule.severity_for(len(recent))
        if links.fired_at is not None and now - links.fired_at < self.rule.period and links.fired is not None \
                and SEVERITY_RANK[severity] <= SEVERITY_RANK[links.fired]:
            return None
        links.fired, links.fired_at = severity, now
        return self._alert(who, recent, severity, now, {"read": n, "expected": round(expected, 2), "p": p})

    def _count(self, state: State, group: str, t: float) -> None:
        s: Series = state.slot(self.id, "series", group, Series)
        s.add_total(int(t // DAY), 1.0)

    def _counted(self, state: State, group: str, now: float) -> int:
        s = state.peek(self.id, "series", group)
        if s is None:
            return 0
        first = int((now - self.rule.period) // DAY)
        return int(sum(v for b, v in s.totals.items() if b >= first))

    def _alert(self, who: str, links: dict[str, tuple[float, float, str, str, str]], severity: str,
               now: float, chance: dict[str, float]) -> Alert:
        person = self.ctx.directory.people.get(who)
        zone = self.ctx.calendar_for(person).zone
        ordered = sorted(links.items(), key=lambda kv: kv[1][0])
        listed = [{"customer": k, "read_at": utc(v[0]).isoformat(), "hit_at": utc(v[1]).isoformat(),
                   "days": round((v[1] - v[0]) / DAY, 1), "what": v[2]} for k, v in ordered]
        first, last = ordered[0][1][0], max(v[1] for _, v in ordered)
        gaps = sorted(x["days"] for x in listed)
        measures = {"customers": len(listed), "window_days": number(self.rule.window / DAY),
                    "median_days": gaps[len(gaps) // 2], **chance, "links": listed}
        values = {"person": person.display if person else who, "title": self.rule.title,
                  "customers": str(len(listed)), "window_days": measures["window_days"],
                  "median_days": str(measures["median_days"]),
                  "first": utc(first).astimezone(zone).strftime("%d %b %Y"),
                  "last": utc(last).astimezone(zone).strftime("%d %b %Y")}
        default = ("{person} read {customers} customers who were then hit within {window_days} days "
                   "(median {median_days} days after the read), between {first} and {last}.")
        summary = render(self.rule.summary or default, values)
        evidence = [e for _, v in ordered for e in (v[3], v[4])][-2 * MAX_EVIDENCE:]
        return Alert(
            alert_id=alert_id(self.id, who, f"{severity}:{ordered[0][0]}"), rule_id=self.id,
            title=self.rule.title, severity=severity, tags=self.rule.tags, group=who, ts=utc(now),
            first_ts=utc(first), last_ts=utc(last), summary=summary, evidence=tuple(evidence),
            staff_id=person.staff_id if person else None, person_name=person.name or None if person else None,
            team=person.team if person else None, measures=measures)

    def sweep(self, now: float, state: State) -> int:
        dropped = 0
        keep = self.rule.window + 2 * DAY
        for key, trail in state.groups(self.id, "trail"):
            if trail.newest() < now - keep:
                state.drop(self.id, "trail", key)
                dropped += 1
        for who, links in state.groups(self.id, "links"):
            if max((v[1] for v in links.links.values()), default=0.0) < now - self.rule.period:
                state.drop(self.id, "links", who)
                dropped += 1
        for group, series in state.groups(self.id, "series"):
            series.prune(int((now - self.rule.period) // DAY) - 1)
            state.touch(self.id, "series", group)
            if not series.totals:
                state.drop(self.id, "series", group)
                dropped += 1
        return dropped
