"""What every rule evaluator shares: filtering, allowlists, grouping, suppression and building the alert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from rules.alerts import Alert, alert_id, render, span_words, utc
from rules.context import Context
from rules.fields import Fact, compile_field
from rules.model import Rule
from rules.state import State
from rules.windows import Mark


def _text(v: Any) -> str:
    return "" if v is None else str(v)


class Evaluator:
    """Binds a rule to a site context. `observe` sees each accepted event; `tick` sees the clock."""

    def __init__(self, rule: Rule, ctx: Context) -> None:
        self.rule = rule
        self.id = rule.id
        self.ctx = ctx
        self.pred = rule.filter.compile(ctx) if rule.filter is not None else None
        self.allowed = rule.allow.compile(ctx)
        self.pred_key, shared_pred = ctx.shared(rule.filter, rule.filter.compile) if rule.filter is not None \
            else (-1, None)
        self.allow_key, shared_allow = ctx.shared(rule.allow, rule.allow.compile)
        self._shared_pred, self._shared_allow = shared_pred, shared_allow
        self.skip_system = not rule.include_system
        getters = [compile_field(p) for p in rule.group_by]
        if rule.group_by == ("person",):
            self.group = lambda f: f.who
        elif not getters:
            self.group = lambda f: ""
        elif len(getters) == 1:
            g = getters[0]
            self.group = lambda f: _text(g(f))
        else:
            self.group = lambda f: "|".join(_text(g(f)) for g in getters)

    def accepts(self, f: Fact) -> bool:
        if f.system and self.skip_system:
            return False  # database-internal reads (foreign-key checks) are nobody's reads
        memo = f.memo
        if self._shared_pred is not None:
            hit = memo.get(self.pred_key)
            if hit is None:
                hit = memo[self.pred_key] = self._shared_pred(f)
            if not hit:
                return False
        allowed = memo.get(self.allow_key)
        if allowed is None:
            allowed = memo[self.allow_key] = self._shared_allow(f)
        return not allowed

    def observe(self, f: Fact, state: State) -> Alert | None:
        raise NotImplementedError

    def tick(self, now: float, started: float, state: State) -> list[Alert]:
        return []

    def sweep(self, now: float, state: State) -> int:
        """Forget state no event can use any more; returns how many slots were dropped."""
        return 0

    # -- helpers -------------------------------------------------------------------------------------------------

    def suppressed(self, state: State, group: str, t: float) -> bool:
        m = state.peek(self.id, "mark", group)
        return m is not None and m.value is not None and abs(t - m.value) < self.rule.suppress

    def fire(self, state: State, f: Fact | None, group: str, *, first: float, last: float, t: float,
             evidence: list[str], measures: Mapping[str, Any], default_summary: str,
             anchor: str | None = None) -> Alert:
        state.slot(self.id, "mark", group, Mark).value = t
        person = f.person if f is not None else None
        who = person.display if person is not None else (f.who if f is not None else group)
        zone = self.ctx.calendar_for(person).zone
        values = self.values(f, who, zone, first, last, measures)
        summary = render(self.rule.summary, values) if self.rule.summary else render(default_summary, values)
        return Alert(
            alert_id=alert_id(self.id, group, anchor or (f.id if f is not None else str(t))),
            rule_id=self.id, title=self.rule.title, severity=self.rule.severity, tags=self.rule.tags,
            group=group, ts=utc(t), first_ts=utc(first), last_ts=utc(last), summary=summary,
            evidence=tuple(evidence), staff_id=person.staff_id if person else None,
            person_name=person.name or None if person else None, team=person.team if person else None,
            measures=dict(measures),
        )

    def values(self, f: Fact | None, who: str, zone: dt.tzinfo, first: float, last: float,
               measures: Mapping[str, Any]) -> dict[str, Any]:
        from rules.alerts import number

        vals: dict[str, Any] = {"person": who, "title": self.rule.title, "when": span_words(utc(first), utc(last),
                                                                                            zone)}
        if f is not None:
            p = f.payload
            vals.update(
                team=f.person.team if f.person else "", host=f.event.host, origin=f.origin or "",
                site=f.site or "unknown site", program=f.program or "unknown program",
                database=getattr(p, "database", None) or "", rows=number(f.rows), customers=number(f.customers),
                classes=", ".join(sorted(f.classes)) or "no sensitive classes",
                tables=", ".join(getattr(p, "tables_read", None) or []) or "",
                path=getattr(p, "path", "") or "", destination=getattr(p, "destination", "") or "",
                statement_type=getattr(p, "statement_type", "") or "",
            )
        for k, v in measures.items():
            vals[k] = number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        return vals
