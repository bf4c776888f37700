"""`need_to_know`: a person reads customers who are not in their work assignment (loan queue, branch portfolio,
open tickets — imported), counted per day: `limit` distinct such customers in a day raise one alert.

People with no assignment at all are not judged by this rule (their work is not assigned by customer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rules.alerts import Alert
from rules.context import Context
from rules.fields import Fact
from rules.kinds.base import Evaluator
from rules.kinds.threshold import KEY_CHARS
from rules.model import Reader, Rule, positive
from rules.state import State
from rules.windows import Series


@dataclass(frozen=True)
class NeedToKnowRule(Rule):
    limit: float = 5.0

    kind: ClassVar[str] = "need_to_know"
    FIELDS: ClassVar[set[str]] = {"limit"}

    @classmethod
    def read(cls, r: Reader) -> dict[str, Any]:
        return {"limit": r.take("limit", positive, 5.0)}

    def bind(self, ctx: Context) -> NeedToKnowEvaluator:
        return NeedToKnowEvaluator(self, ctx)


class NeedToKnowEvaluator(Evaluator):
    rule: NeedToKnowRule

    def observe(self, f: Fact, state: State) -> Alert | None:
        if f.person is None or not f.customer_keys:
            return None
        assigned = state.assignments(f.person.staff_id)
        if assigned is None:
            assigned = self.ctx.assignments.get(f.person.staff_id)
            if assigned is None:
                return None
        outside = [k[:KEY_CHARS] for k in f.customer_keys if k not in assigned]
        if not outside:
            return None
        group = self.group(f)
        s: Series = state.slot(self.id, "series", group, Series)
        cal = self.ctx.calendar_for(f.person)
        day = cal.local(f.t).toordinal()
        s.add_items(day, outside, rolling=False)
        if len(s.totals) > 3:
            s.prune(day - 2)
        value = s.totals.get(day, 0.0)
        if value < self.rule.limit or self.suppressed(state, group, f.t):
            return None
        return self.fire(state, f, group, first=f.t, last=f.t, t=f.t, evidence=[f.event.id],
                         measures={"value": value, "limit": self.rule.limit},
                         default_summary="{person} read {value} customers outside their work assignment {when}.",
                         anchor=str(day))
