"""`sequence`: ordered steps by the same person (group) within a window — say a bulk read of card columns,
then a file export holding card numbers, then that same file (`same: [payload.sha256]`) on removable media.

Steps are matched by event time, so steps that arrive out of order (a laptop that was offline) still chain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.events import KINDS
from rules.alerts import Alert
from rules.conditions import Condition, Where
from rules.context import Context
from rules.errors import RuleSyntaxError
from rules.fields import Fact, compile_field
from rules.kinds.base import Evaluator
from rules.model import Reader, Rule, condition, duration, fields, text, texts
from rules.state import State
from rules.windows import Steps


@dataclass(frozen=True)
class Step:
    name: str
    events: tuple[str, ...]
    filter: Condition | None = None
    same: tuple[str, ...] = ()  # fields whose values must equal the previous step's
    where: Where = field(default=Where(), compare=False, repr=False)

    def __post_init__(self) -> None:
        for kind in self.events:
            if kind not in KINDS:
                raise RuleSyntaxError(f"unknown event kind {kind!r}", file=self.where.file, line=self.where.line,
                                      field=f"steps.{self.name}.events")


def _steps(file: str | None) -> Any:
    def convert(v: Any) -> tuple[Step, ...]:
        if not isinstance(v, list) or len(v) < 2:
            raise ValueError("must be a list of at least two steps")
        out = []
        for i, raw in enumerate(v):
            if not isinstance(raw, Mapping):
                raise RuleSyntaxError("each step is {name, events, filter, same}", field=f"[{i}]")
            r = Reader(raw, file, None)
            r.unknown({"name", "events", "filter", "same"})
            out.append(Step(r.take("name", text, f"step {i + 1}"), r.take("events", texts),
                            r.take("filter", condition(file, f"steps[{i}].filter"), None),
                            r.take("same", fields, ()), r.where()))
        if out[0].same:
            raise RuleSyntaxError("the first step has no previous step to be the same as", field="[0].same")
        return tuple(out)
    return convert


@dataclass(frozen=True)
class SequenceRule(Rule):
    window: float = 3600.0
    steps: tuple[Step, ...] = ()

    kind: ClassVar[str] = "sequence"
    FIELDS: ClassVar[set[str]] = {"window", "steps"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.steps) < 2:
            raise RuleSyntaxError("a sequence needs at least two steps", file=self.where.file,
                                  line=self.where.line, field="steps")
        missing = {k for s in self.steps for k in s.events} - set(self.events)
        if missing:
            raise RuleSyntaxError(f"steps read {', '.join(sorted(missing))}; add them to events",
                                  file=self.where.file, line=self.where.line, field="events")

    @classmethod
    def read(cls, r: Reader) -> dict[str, Any]:
        return {"window": r.take("window", duration), "steps": r.take("steps", _steps(r.file))}

    def bind(self, ctx: Context) -> SequenceEvaluator:
        return SequenceEvaluator(self, ctx)


class SequenceEvaluator(Evaluator):
    rule: SequenceRule

    def __init__(self, rule: SequenceRule, ctx: Context) -> None:
        super().__init__(rule, ctx)
        self.steps = [(frozenset(s.events), s.filter.compile(ctx) if s.filter else None,
                       [compile_field(p) for p in s.same]) for s in rule.steps]
        self.n = len(self.steps)

    def sweep(self, now: float, state: State) -> int:
        keep = self.rule.window + 2 * 86400
        stale = [g for g, st in state.groups(self.id, "steps")
                 if all(m[0] < now - keep for step in st.matched for m in step)]
        for g in stale:
            state.drop(self.id, "steps", g)
        return len(stale)

    def accepts(self, f: Fact) -> bool:
        return super().accepts(f) and any(f.kind in kinds and (p is None or p(f)) for kinds, p, _ in self.steps)

    @staticmethod
    def _key(getters: list[Any], f: Fact) -> str | None:
        return "|".join(str(g(f)) for g in getters) if getters else None

    def observe(self, f: Fact, state: State) -> Alert | None:
        group = self.group(f)
        st: Steps = state.slot(self.id, "steps", group, lambda: Steps(self.n))
        t, eid = f.t, f.event.id
        for i, (kinds, pred, same) in enumerate(self.steps):
            if f.kind in kinds and (pred is None or pred(f)):
                # what this event offers the next step to join on, and what it needs from the previous one
                nxt = self._key(self.steps[i + 1][2], f) if i + 1 < self.n else None
                st.matched[i].append((t, eid, f"{self._key(same, f)}\x1f{nxt}"))
                st.matched[i].sort()
        newest = max((m[0] for step in st.matched for m in step), default=t)
        st.prune(newest - self.rule.window - 2 * 86400)
        chain = self._complete(st, eid)
        if chain is None or self.suppressed(state, group, t):
            return None
        times = [c[0] for c in chain]
        names = " → ".join(s.name for s in self.rule.steps)
        return self.fire(state, f, group, first=min(times), last=max(times), t=max(times),
                         evidence=[c[1] for c in chain], measures={"steps": names},
                         default_summary="{person} completed " + self.rule.title.lower() + " {when}: {steps}.",
                         anchor="+".join(c[1] for c in chain))

    def _complete(self, st: Steps, eid: str) -> list[tuple[float, str]] | None:
        """A chain of one match per step, in time order, within the window, joined where `same` says, that
        uses the event just seen; the latest-starting one."""
        window = self.rule.window
        # paths[i]: (time of step i, start time, [(t, eid)...], offered join key)
        paths: list[tuple[float, float, list[tuple[float, str]], str]] = [
            (t, t, [(t, e)], key.split("\x1f")[1]) for t, e, key in st.matched[0]]
        for i in range(1, self.n):
            nxt: list[tuple[float, float, list[tuple[float, str]], str]] = []
            for t, e, key in st.matched[i]:
                need, offer = key.split("\x1f")
                best = None
                for pt, start, chain, pkey in paths:
                    if pt <= t and t - start <= window and e not in (c[1] for c in chain) and (
                            not self.steps[i][2] or pkey == need):
                        if best is None or start > best[1]:
                            best = (pt, start, chain, pkey)
                if best is not None:
                    nxt.append((t, best[1], best[2] + [(t, e)], offer))
            paths = nxt
            if not paths:
                return None
        with_event = [p for p in paths if any(c[1] == eid for c in p[2])]
        if not with_event:
            return None
        return max(with_event, key=lambda p: p[1])[2]
