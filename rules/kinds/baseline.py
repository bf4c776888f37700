"""`baseline`: a person's value for this day (or hour, or rolling span of days) is far above their own history —
above max(floor, pN of their past, k × their median) once they have a learning period behind them — and,
if asked, above their peer group's (team's) pooled history too. The alert says by how much."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rules.alerts import Alert
from rules.context import Context
from rules.errors import RuleSyntaxError
from rules.fields import Fact
from rules.kinds.base import Evaluator
from rules.kinds.threshold import KEY_CHARS
from rules.model import Reader, Rule, choice, non_negative, positive, whole
from rules.state import State
from rules.windows import Mark, Series

MEASURES = ("count", "sum_rows", "distinct_customers", "distinct_tables")
COMPARE = ("own", "peers", "own_and_peers")
_NOUNS = {"count": "queries", "sum_rows": "customer rows", "distinct_customers": "distinct customers",
          "distinct_tables": "distinct tables"}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; with few values, p99 is simply the largest."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def median(values: list[float]) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@dataclass(frozen=True)
class Peers:
    by: str = "team"
    k: float = 3.0
    floor: float = 0.0
    percentile: float = 99.0
    min_members: int = 3


def _peers(v: Any) -> Peers:
    if not isinstance(v, Mapping):
        raise ValueError("must be a mapping such as {by: team, k: 3, min_members: 3}")
    r = Reader(v, None, None)
    r.unknown({"by", "k", "floor", "percentile", "min_members"})
    return Peers(r.take("by", choice("team"), "team"), r.take("k", positive, 3.0),
                 r.take("floor", non_negative, 0.0), r.take("percentile", positive, 99.0),
                 r.take("min_members", whole, 3))


@dataclass(frozen=True)
class BaselineRule(Rule):
    measure: str = "count"
    bucket: str = "day"
    span: int = 1  # buckets the value covers: 1 = this day; 30 = the last 30 days, rolling
    history: int = 30  # buckets of own past to compare with
    learning: int = 7  # buckets since the person was first seen before the rule may fire
    min_active: int = 3  # buckets with activity needed in the history
    floor: float = 0.0
    k: float = 3.0
    percentile: float = 99.0
    margin: float = 1.25  # the percentile term is multiplied by this: a new maximum needs to be clearly new
    compare: str = "own"
    peers: Peers = field(default_factory=Peers)

    kind: ClassVar[str] = "baseline"
    FIELDS: ClassVar[set[str]] = {"measure", "bucket", "span", "history", "learning", "min_active", "floor", "k",
                                  "percentile", "margin", "compare", "peers"}

    def __post_init__(self) -> None:
        super().__post_init__()

        def bad(msg: str, fld: str) -> RuleSyntaxError:
            return RuleSyntaxError(msg, file=self.where.file, line=self.where.line, field=fld)
        if self.measure not in MEASURES:
            raise bad(f"must be one of {', '.join(MEASURES)}", "measure")
        if not 0 < self.percentile <= 100:
            raise bad("must be a percentile between 0 and 100", "percentile")
        if self.history < 2:
            raise bad("needs at least 2 buckets of history", "history")
        if self.compare not in COMPARE:
            raise bad(f"must be one of {', '.join(COMPARE)}", "compare")

    @classmethod
    def read(cls, r: Reader) -> dict[str, Any]:
        return {
            "measure": r.take("measure", choice(*MEASURES)), "bucket": r.take("bucket", choice("day", "hour"), "day"),
            "span": r.take("span", whole, 1), "history": r.take("history", whole, 30),
            "learning": r.take("learning", whole, 7), "min_active": r.take("min_active", whole, 3),
            "floor": r.take("floor", non_negative, 0.0), "k": r.take("k", positive, 3.0),
            "percentile": r.take("percentile", positive, 99.0), "margin": r.take("margin", positive, 1.25),
            "compare": r.take("compare", choice(*COMPARE), "own"),
            "peers": r.take("peers", _peers, Peers()),
        }

    def bind(self, ctx: Context) -> BaselineEvaluator:
        return BaselineEvaluator(self, ctx)


class BaselineEvaluator(Evaluator):
    rule: BaselineRule

    def __init__(self, rule: BaselineRule, ctx: Context) -> None:
        super().__init__(rule, ctx)
        self.rolling = rule.measure.startswith("distinct") and rule.span > 1
        self.own_cache: dict[str, tuple[int, int, float | None, float]] = {}
        self.peer_cache: dict[str, tuple[int, float | None, float]] = {}
        self.members: dict[str, set[str]] = {}
        self.last_value: dict[str, tuple[int, float]] = {}
        # rules that count the same thing the same way (own and peer spikes) share one series in the state
        signature = repr((rule.filter, rule.allow, rule.group_by, rule.include_system, rule.measure, rule.bucket,
                          rule.span, rule.history))
        self.series_id = "series:" + hashlib.sha1(signature.encode()).hexdigest()[:16]
        self.hour_bucket = rule.bucket == "hour"
        self._day_cache: dict[tuple[str, int], int] = {}

    def bucket_of(self, f: Fact) -> int:
        if self.hour_bucket:
            return int(f.t // 3600)
        day = f.memo.get("local_day")
        if day is not None:
            return day  # type: ignore[return-value]
        f.memo["local_day"] = day = self._local_day(f)  # type: ignore[assignment]
        return day

    def _local_day(self, f: Fact) -> int:
        cal = self.ctx.calendar_for(f.person)
        key = (cal.tz, int(f.t // 3600))
        b = self._day_cache.get(key)
        if b is None:
            if len(self._day_cache) > 100_000:
                self._day_cache.clear()
            b = self._day_cache[key] = cal.local(f.t).toordinal()
        return b

    def _add(self, s: Series, b: int, f: Fact) -> bool:
        m = self.rule.measure
        if m == "count":
            s.add_total(b, 1)
        elif m == "sum_rows":
            if not f.rows:
                return False
            s.add_total(b, f.rows)
        else:
            items = ([k[:KEY_CHARS] for k in f.customer_keys] if m == "distinct_customers"
                     else list(getattr(f.payload, "tables_read", None) or []))
            if not items:
                return False
            s.add_items(b, items, self.rolling, self.rule.span)
        return True

    def _team_members(self, state: State, team: str, group: str) -> set[str]:
        members = self.members.get(team)
        if members is None:
            m = state.peek(self.id, "mark", "peers:" + team)
            members = self.members[team] = set(m.value) if m is not None and m.value else set()
        if group not in members:
            members.add(group)
            state.slot(self.id, "mark", "peers:" + team, Mark).value = sorted(members)
        return members

    def own_threshold(self, s: Series, group: str, b: int) -> tuple[float | None, float]:
        cached = self.own_cache.get(group)
        if cached is not None and cached[0] == b and cached[1] == s.version:
            return cached[2], cached[3]
        r = self.rule
        hist = s.history(b, r.history, r.span, self.rolling)
        if s.first is None or b - s.first < r.learning or len(hist) < r.min_active:
            result: tuple[float | None, float] = (None, median(hist))
        else:
            med = median(hist)
            result = (max(r.floor, r.margin * percentile(hist, r.percentile), r.k * med), med)
        self.own_cache[group] = (b, s.version, *result)
        return result

    def peer_threshold(self, state: State, team: str, group: str, b: int) -> tuple[float | None, float]:
        key = f"{team}\x1f{group}"
        cached = self.peer_cache.get(key)
        if cached is not None and cached[0] == b:
            return cached[1], cached[2]
        r, p = self.rule, self.rule.peers
        pooled: list[float] = []
        count = 0
        for member in self.members.get(team, ()):
            if member == group:
                continue
            s = state.peek(self.series_id, "series", member)
            if s is None:
                continue
            hist = s.history(b, r.history, r.span, self.rolling)
            if hist:
                count += 1
                pooled.extend(hist)
        if count < p.min_members:
            result: tuple[float | None, float] = (None, median(pooled))
        else:
            med = median(pooled)
            result = (max(p.floor, r.margin * percentile(pooled, p.percentile), p.k * med), med)
        self.peer_cache[key] = (b, *result)
        return result

    def observe(self, f: Fact, state: State) -> Alert | None:
        r = self.rule
        group = self.group(f)
        s: Series = state.slot(self.series_id, "series", group, Series)
        b = self.bucket_of(f)
        added = f.memo.get(self.series_id)
        if added is None:
            added = f.memo[self.series_id] = self._add(s, b, f)  # type: ignore[index]
        if not added:
            return None
        team = f.person.team if f.person is not None else None
        if team and r.compare != "own":
            self._team_members(state, team, group)
        if s.totals and len(s.totals) > r.history + r.span + 2:
            s.prune(b - r.history - r.span - 1)
        value = s.value(b, r.span, self.rolling)
        if value <= r.floor or self.last_value.get(group) == (b, value):
            return None  # nothing new to judge: the value did not change since this group was last judged
        self.last_value[group] = (b, value)
        if self.suppressed(state, group, f.t):
            return None
        measures: dict[str, Any] = {"value": value}
        if r.compare in ("own", "own_and_peers"):
            own, med = self.own_threshold(s, group, b)
            if own is None or value <= own:
                return None
            measures.update(threshold=own, median=med, ratio=round(value / med, 1) if med else value)
        if r.compare in ("peers", "own_and_peers"):
            if not team:
                return None
            peer, pmed = self.peer_threshold(state, team, group, b)
            if peer is None or value <= peer:
                return None
            measures.update(peer_threshold=peer, peer_median=pmed,
                            peer_ratio=round(value / pmed, 1) if pmed else value)
        period = {("day", 1): "on {day}", ("hour", 1): "in the hour to {hour}"}.get(
            (r.bucket, r.span), f"over the last {r.span} {r.bucket}s to {{day}}")
        local = self.ctx.calendar_for(f.person).local(f.t)
        measures["day"] = f"{local:%A} {local.day} {local:%B}"
        measures["hour"] = f"{local:%H:00}"
        noun = _NOUNS[r.measure]
        if r.span > 1:
            measures["bucket"] = f"{r.span}-{r.bucket}"
            how = "{ratio}× their usual {bucket} count ({median})"
            if "peer_ratio" in measures:
                how += " and {peer_ratio}× their team's ({peer_median})"
        elif "ratio" in measures and "peer_ratio" in measures:
            how = "{ratio}× their usual {bucket} median ({median}) and {peer_ratio}× their team's ({peer_median})"
        elif "ratio" in measures:
            how = "{ratio}× their usual median ({median}), above their own threshold of {threshold}"
        else:
            how = "{peer_ratio}× the median of their team ({peer_median})"
        measures.setdefault("bucket", "daily" if r.bucket == "day" else "hourly")
        return self.fire(state, f, group, first=f.t, last=f.t, t=f.t, evidence=[f.event.id], measures=measures,
                         default_summary="{person} touched {value} " + noun + " " + period + " — " + how + ".",
                         anchor=f"{b}")
