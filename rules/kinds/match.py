"""`match`: every event that passes the filter is an alert (suppressed per group) — for things that are wrong
on their own, such as a read of a honeytoken customer or access after the end of employment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rules.alerts import Alert
from rules.context import Context
from rules.fields import Fact
from rules.kinds.base import Evaluator
from rules.model import Reader, Rule
from rules.state import State


@dataclass(frozen=True)
class MatchRule(Rule):
    kind: ClassVar[str] = "match"
    FIELDS: ClassVar[set[str]] = set()

    @classmethod
    def read(cls, r: Reader) -> dict[str, Any]:
        return {}

    def bind(self, ctx: Context) -> MatchEvaluator:
        return MatchEvaluator(self, ctx)


class MatchEvaluator(Evaluator):
    def observe(self, f: Fact, state: State) -> Alert | None:
        group = self.group(f)
        if self.suppressed(state, group, f.t):
            return None
        return self.fire(state, f, group, first=f.t, last=f.t, t=f.t, evidence=[f.event.id],
                         measures={"value": f.customers or f.rows},
                         default_summary="{person}: " + self.rule.title.lower() + " {when}.")
