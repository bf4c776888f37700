"""A window's distinct count, kept up to date as the window slides, always equals a count from scratch, through
late events, pruning and spans that move back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.windows import Window

ITEMS = st.sampled_from(["a", "b", "c", "d", "e", None])
STEP = st.one_of(
    st.tuples(st.just("add"), st.floats(0, 2), ITEMS),  # in time order, `dt` after the last
    st.tuples(st.just("late"), st.floats(0, 5), ITEMS),  # `dt` before the last
    st.tuples(st.just("prune"), st.floats(0, 20), ITEMS),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(STEP, st.floats(0, 15), st.floats(0, 3)), max_size=200))
def test_distinct_counts_match_a_count_from_scratch(steps) -> None:  # type: ignore[no-untyped-def]
    w = Window()
    last = 0.0
    for (op, dt, item), width, back in steps:
        if op == "add":
            last += dt
            w.add(last, 1, item, "e")
        elif op == "late":
            w.add(last - dt, 1, item, "e")
        elif w.ts:
            w.prune(w.ts[-1] - dt)
        if w.ts:
            end = w.ts[-1] - back
            lo, hi = w.span(end - width, end)
            assert w.distinct(lo, hi) == len(set(w.items[lo:hi]))
