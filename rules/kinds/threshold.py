"""`threshold`: an aggregate over a sliding window per group crosses a limit. `off_hours`: the same, counting
only what happens outside the person's working calendar (team hours and zone, weekends, holidays, own shifts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rules.alerts import Alert
from rules.context import Context
from rules.errors import RuleSyntaxError
from rules.fields import Fact
from rules.kinds.base import Evaluator
from rules.model import Reader, Rule, choice, duration, positive
from rules.state import State
from rules.windows import Window

AGGREGATES = ("count", "sum_rows", "sum_customers", "distinct_customers", "distinct_tables")
_NOUNS = {"count": "queries", "sum_rows": "rows", "sum_customers": "customer identifiers",
          "distinct_customers": "distinct customers", "distinct_tables": "distinct tables"}
KEY_CHARS = 16  # customer keys are kept shortened in state: 64 bits are plenty to count distinct customers


@dataclass(frozen=True)
class ThresholdRule(Rule):
    window: float = 3600.0
    aggregate: str = "count"
    limit: float = 1.0
    lateness: float = 2 * 86400.0  # how late an event may arrive and still meet its window

    kind: ClassVar[str] = "threshold"
    FIELDS: ClassVar[set[str]] = {"window", "aggregate", "limit", "lateness"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window <= 0:
            raise RuleSyntaxError("must be a positive duration such as 1h", file=self.where.file,
                                  line=self.where.line, field="window")
        if self.aggregate not in AGGREGATES:
            raise RuleSyntaxError(f"must be one of {', '.join(AGGREGATES)}", file=self.where.file,
                                  line=self.where.line, field="aggregate")

    @classmethod
    def read(cls, r: Reader) -> dict[str, Any]:
        return {"window": r.take("window", duration), "aggregate": r.take("aggregate", choice(*AGGREGATES)),
                "limit": r.take("limit", positive), "lateness": r.take("lateness", duration, 2 * 86400.0)}

    def bind(self, ctx: Context) -> ThresholdEvaluator:
        return ThresholdEvaluator(self, ctx)


@dataclass(frozen=True)
class OffHoursRule(ThresholdRule):
    limit: float = 1.0
    window: float = 3600.0
    kind: ClassVar[str] = "off_hours"

    @classmethod
    def read(cls, r: Reader) -> dict[str, Any]:
        return {"window": r.take("window", duration, 3600.0),
                "aggregate": r.take("aggregate", choice(*AGGREGATES), "count"),
                "limit": r.take("limit", positive, 1.0), "lateness": r.take("lateness", duration, 2 * 86400.0)}

    def bind(self, ctx: Context) -> ThresholdEvaluator:
        return ThresholdEvaluator(self, ctx, off_hours=True)


class ThresholdEvaluator(Evaluator):
    rule: ThresholdRule

    def __init__(self, rule: ThresholdRule, ctx: Context, *, off_hours: bool = False) -> None:
        super().__init__(rule, ctx)
        self.off_hours = off_hours
        self.window = rule.window
        self.keep = rule.window + rule.lateness
        self.limit = rule.limit
        agg = rule.aggregate
        self.distinct = agg.startswith("distinct")
        self.amount = {"count": lambda f: 1, "sum_rows": lambda f: f.rows,
                       "sum_customers": lambda f: f.customers}.get(agg)
        self.items = {"distinct_customers": lambda f: [k[:KEY_CHARS] for k in f.customer_keys],
                      "distinct_tables": lambda f: getattr(f.payload, "tables_read", None) or []}.get(agg)

    def sweep(self, now: float, state: State) -> int:
        stale = [g for g, w in state.groups(self.id, "window") if not w.ts or w.ts[-1] < now - self.keep]
        for g in stale:
            state.drop(self.id, "window", g)
        return len(stale)

    def accepts(self, f: Fact) -> bool:
        if not super().accepts(f):
            return False
        return not self.off_hours or not self.ctx.calendar_for(f.person).working(f.t)

    def observe(self, f: Fact, state: State) -> Alert | None:
        group = self.group(f)
        w: Window = state.slot(self.id, "window", group, Window)
        t, eid = f.t, f.event.id
        if self.items is not None:
            items = self.items(f)
            if not items:
                return None
            for item in items:
                w.add(t, 1, item, eid)
        else:
            amount = self.amount(f)  # type: ignore[misc]
            if not amount:
                return None
            w.add(t, amount, None, eid)
        if w.ts[0] < t - self.keep:
            w.prune(w.ts[-1] - self.keep)
        if (len(w) if self.distinct else w.sum_all) < self.limit or self.suppressed(state, group, t):
            return None  # (even everything kept is under the limit: no window can reach it)
        lo, hi = w.span(t - self.window, t)
        value = w.distinct(lo, hi) if self.distinct else w.total(lo, hi)
        if value < self.limit:
            return None
        noun = _NOUNS[self.rule.aggregate]
        where = " outside working hours" if self.off_hours else ""
        return self.fire(state, f, group, first=w.ts[lo], last=w.ts[hi - 1], t=t, evidence=w.evidence(lo, hi),
                         measures={"value": value, "limit": self.limit, "window_s": self.window},
                         default_summary="{person} reached {value} " + noun + where + " {when} (limit {limit}).")
