"""A window's distinct count, kept up to date as the window slides, always equals a count from scratch, through
late events, pruning and spans that move back; and every kind of slot dumps a copy of itself."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.windows import PARTS, Window

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


DUMPS = {
    "window": {"t": [1.0, 2.0], "a": [1.0, 3.0], "i": ["a", "b"], "e": ["e1", "e2"]},
    "series": {"f": 1, "t": [[1, 2.0]], "s": [[1, ["a", "b"]]], "l": {"a": 1}, "p": [[1, 1]], "rb": None, "rv": 0.0},
    "seen": {"since": 1.0, "v": {"a": [1.0, 2.0]}},
    "steps": {"m": [[[1.0, "e1", "j"]], []]},
    "presence": {"x": 1.0, "a": 2.0, "r": None, "l": "proxy-1"},
    "trail": {"r": {"alice": [[1.0, "e1"]]}, "h": [[2.0, "fraud", "e2"]], "c": [3.0], "k": False},
    "links": {"l": {"c1": [1.0, 2.0, "fraud", "e1", "e2"]}, "f": None, "a": None},
}


def _containers(obj: object) -> list[object]:
    if isinstance(obj, dict):
        return [obj] + [c for v in obj.values() for c in _containers(v)]
    if isinstance(obj, list):
        return [obj] + [c for v in obj for c in _containers(v)]
    return []


@pytest.mark.parametrize("part", sorted(DUMPS))
def test_a_dump_shares_no_list_or_dict_with_its_slot(part: str) -> None:
    """A checkpoint encodes dumps while evaluation changes the slots: a shared list would leak later changes
    into the checkpointed state."""
    slot = PARTS[part].load(DUMPS[part])
    live = {id(c) for name in type(slot).__slots__ for c in _containers(getattr(slot, name))}
    dumped = _containers(slot.dump())
    assert dumped and not [c for c in dumped if id(c) in live]
