"""`first_seen`: a person uses a host, network site, client program, database or sensitive table for the first
time after their learning period — or (with `alert_on: [dormant]`) uses something again after a long silence,
such as a dormant account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rules.alerts import Alert, number
from rules.conditions import ListRef
from rules.context import Context
from rules.errors import RuleSyntaxError
from rules.fields import Fact, compile_field
from rules.kinds.base import Evaluator
from rules.model import Reader, Rule, duration, fields, texts
from rules.state import State
from rules.windows import Seen

ALERT_ON = ("new", "dormant")


def _only(v: Any) -> ListRef:
    if isinstance(v, dict) and set(v) == {"list"}:
        return ListRef(str(v["list"]))
    raise ValueError("must be {list: NAME}, a context list the values must belong to")


@dataclass(frozen=True)
class FirstSeenRule(Rule):
    values: tuple[str, ...] = ("host",)
    learning: float = 14 * 86400.0
    alert_on: tuple[str, ...] = ("new",)
    dormant_after: float = 30 * 86400.0
    only: ListRef | None = None

    kind: ClassVar[str] = "first_seen"
    FIELDS: ClassVar[set[str]] = {"values", "learning", "alert_on", "dormant_after", "only"}

    def __post_init__(self) -> None:
        super().__post_init__()
        for a in self.alert_on:
            if a not in ALERT_ON:
                raise RuleSyntaxError(f"must be a list of {', '.join(ALERT_ON)}", file=self.where.file,
                                      line=self.where.line, field="alert_on")
        if not self.values:
            raise RuleSyntaxError("name the fields whose new values matter, such as [origin, site]",
                                  file=self.where.file, line=self.where.line, field="values")

    @classmethod
    def read(cls, r: Reader) -> dict[str, Any]:
        return {"values": r.take("values", fields), "learning": r.take("learning", duration, 14 * 86400.0),
                "alert_on": r.take("alert_on", texts, ("new",)),
                "dormant_after": r.take("dormant_after", duration, 30 * 86400.0),
                "only": r.take("only", _only, None)}

    def bind(self, ctx: Context) -> FirstSeenEvaluator:
        return FirstSeenEvaluator(self, ctx)


class FirstSeenEvaluator(Evaluator):
    rule: FirstSeenRule

    def __init__(self, rule: FirstSeenRule, ctx: Context) -> None:
        super().__init__(rule, ctx)
        self.getters = [(path, compile_field(path)) for path in rule.values]
        self.only = ctx.list(rule.only.name) if rule.only is not None else None
        self.new = "new" in rule.alert_on
        self.dormant = "dormant" in rule.alert_on
        self.fresh = min(3600.0, rule.dormant_after / 2)  # how stale a last-seen time may get before we write it

    def _all_recent(self, seen: Seen, f: Fact, t: float) -> bool:
        values = seen.values
        for path, get in self.getters:
            raw = get(f)
            for v in raw if isinstance(raw, list) else (raw,):
                if v is None or v == "" or (self.only is not None and v not in self.only):
                    continue
                rec = values.get(f"{path}={v}")
                if rec is None or not rec[0] <= t <= rec[1] + self.fresh:
                    return False
        return True

    def observe(self, f: Fact, state: State) -> Alert | None:
        r = self.rule
        group = self.group(f)
        t = f.t
        known = state.peek(self.id, "seen", group)
        if known is not None and known.since is not None and known.since <= t and self._all_recent(known, f, t):
            return None  # nothing new, nothing dormant, last-seen times fresh enough: no state to change
        seen: Seen = state.slot(self.id, "seen", group, Seen)
        if seen.since is None or t < seen.since:
            seen.since = t
        learned = t - seen.since >= r.learning
        found: list[str] = []
        gaps: list[float] = []
        for path, get in self.getters:
            raw = get(f)
            for v in raw if isinstance(raw, list) else (raw,):
                if v is None or v == "" or (self.only is not None and v not in self.only):
                    continue
                key = f"{path}={v}"
                rec = seen.values.get(key)
                if rec is None:
                    seen.values[key] = [t, t]
                    if self.new and learned:
                        found.append(f"{v} ({path})")
                    continue
                if self.dormant and t - rec[1] >= r.dormant_after:
                    found.append(str(v))
                    gaps.append(t - rec[1])
                if t < rec[0]:
                    rec[0] = t
                if t > rec[1]:
                    rec[1] = t
        if not found or self.suppressed(state, group, t):
            return None
        what = " and ".join(found)
        if gaps:
            days = max(gaps) / 86400
            summary = "{person} used {what} again {when}, after {idle_days} days without any use."
            measures: dict[str, Any] = {"what": what, "idle_days": number(round(days, 1))}
        else:
            summary = "{person} used {what} for the first time {when}."
            measures = {"what": what}
        return self.fire(state, f, group, first=t, last=t, t=t, evidence=[f.event.id], measures=measures,
                         default_summary=summary)
