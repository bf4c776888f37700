"""`absence`: something expected did not happen — an agent's heartbeat missing for `missing_for`, or (with
`while_active`) a proxy that sends nothing while other sources show its database in use.

The filter names the expected events; the group (say `agent_id` or `payload.database`) says whose they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rules.alerts import Alert, number, utc
from rules.conditions import Condition
from rules.context import Context
from rules.errors import RuleSyntaxError
from rules.fields import Fact
from rules.kinds.base import Evaluator
from rules.model import Reader, Rule, condition, duration
from rules.state import State
from rules.windows import Presence


@dataclass(frozen=True)
class AbsenceRule(Rule):
    missing_for: float = 900.0
    while_active: Condition | None = None

    kind: ClassVar[str] = "absence"
    FIELDS: ClassVar[set[str]] = {"missing_for", "while_active"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.missing_for <= 0:
            raise RuleSyntaxError("must be a positive duration such as 15m", file=self.where.file,
                                  line=self.where.line, field="missing_for")
        if self.group_by == ("person",):
            raise RuleSyntaxError("group an absence by what goes silent, such as [agent_id]",
                                  file=self.where.file, line=self.where.line, field="group_by")

    @classmethod
    def read(cls, r: Reader) -> dict[str, Any]:
        return {"missing_for": r.take("missing_for", duration),
                "while_active": r.take("while_active", condition(r.file, "while_active"), None)}

    def bind(self, ctx: Context) -> AbsenceEvaluator:
        return AbsenceEvaluator(self, ctx)


class AbsenceEvaluator(Evaluator):
    rule: AbsenceRule

    def __init__(self, rule: AbsenceRule, ctx: Context) -> None:
        super().__init__(rule, ctx)
        self.active = rule.while_active.compile(ctx) if rule.while_active is not None else None

    def accepts(self, f: Fact) -> bool:
        if self.allowed(f):
            return False
        return (self.pred is None or self.pred(f)) or (self.active is not None and self.active(f))

    def observe(self, f: Fact, state: State) -> Alert | None:
        group = self.group(f)
        t = f.t
        expected = self.pred is None or self.pred(f)
        if expected:
            seen = state.peek(self.id, "presence", group)
            if seen is not None and seen.alerted is None and seen.expected is not None and \
                    seen.expected <= t < seen.expected + 10:
                return None  # already known to be alive this very moment: spare the state a write
        p: Presence = state.slot(self.id, "presence", group, Presence)
        if expected:
            if p.expected is None or t > p.expected:
                p.expected = t
                p.label = f.event.host
            return None
        if self.active is None or not self.active(f):
            return None
        if p.active is None or t > p.active:
            p.active = t
        silent_since = p.expected if p.expected is not None else None
        if silent_since is None or t - silent_since < self.rule.missing_for or p.alerted == silent_since:
            return None
        p.alerted = silent_since
        return self._alert(state, group, p, silent_since, t, f)

    def tick(self, now: float, started: float, state: State) -> list[Alert]:
        if self.active is not None:
            return []
        out = []
        for group, p in state.groups(self.id, "presence"):
            if p.expected is None or p.alerted == p.expected:
                continue
            quiet_since = max(p.expected, started)  # nothing is silent for longer than we have been listening
            if now - quiet_since >= self.rule.missing_for:
                p.alerted = p.expected
                state.touch(self.id, "presence", group)
                out.append(self._alert(state, group, p, p.expected, now, None))
        return out

    def _alert(self, state: State, group: str, p: Presence, since: float, now: float, f: Fact | None) -> Alert:
        minutes = (now - since) / 60
        return self.fire(state, f, group, first=since, last=now, t=now, evidence=[f.event.id] if f else [],
                         measures={"what": group, "minutes": number(round(minutes)), "last_seen": utc(since)
                                   .strftime("%Y-%m-%d %H:%M UTC"), "host": p.label},
                         default_summary="{what} has sent nothing for {minutes} minutes (last at {last_seen}).",
                         anchor=f"{since}")
