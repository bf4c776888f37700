"""The string formats of the event schema are checked without regular expressions; they must accept exactly what
the documented pattern (as a whole-string match) accepts."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from agent.event_shapes import CLASS_NAME, EVENT_ID, HEX64, SOURCE_TYPE, Shape

SHAPES = [EVENT_ID, HEX64, SOURCE_TYPE, CLASS_NAME]
# Near misses: the characters the formats use, their upper-case forms, and a few that none allows.
NEAR = st.text(alphabet="0123456789abcdefz7-_.AFZ \n\u00e9", max_size=70)


def _agrees(shape: Shape, value: str) -> bool:
    return shape.check(value) == bool(re.fullmatch(shape.pattern.strip("^$"), value))


@given(st.sampled_from(SHAPES).flatmap(lambda s: st.tuples(st.just(s), st.from_regex(s.pattern.strip("^$"),
                                                                                      fullmatch=True))))
def test_every_value_the_pattern_allows_passes(case: tuple[Shape, str]) -> None:
    shape, value = case
    assert shape.check(value), value


@given(st.sampled_from(SHAPES), NEAR)
def test_near_misses_are_judged_as_the_pattern_judges_them(shape: Shape, value: str) -> None:
    assert _agrees(shape, value), (shape.pattern, value)


@given(st.sampled_from(SHAPES), st.from_regex(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                                               fullmatch=True), st.integers(0, 35), st.characters())
def test_one_changed_character_is_judged_as_the_pattern_judges_it(shape: Shape, value: str, at: int,
                                                                   ch: str) -> None:
    changed = value[:at] + ch + value[at + 1:]
    assert _agrees(shape, changed) and _agrees(shape, changed * 2) and _agrees(shape, changed[:32] * 2)
