"""The string formats of the event schema, checked after decoding: a whole list, or a whole batch of events, is
judged exactly as value by value and event by event, and the first bad value is named by its path."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from agent import events as ev
from agent.event_shapes import CLASS_NAME, EVENT_ID, HEX64, SOURCE_TYPE, Shape, shape_error, shape_errors

SHAPES = [EVENT_ID, HEX64, SOURCE_TYPE, CLASS_NAME]


def _valid(shape: Shape) -> st.SearchStrategy[str]:
    return st.from_regex(shape.pattern.removeprefix("^").removesuffix("$"), fullmatch=True)


# Valid values, values one character away from valid, and near misses (upper case, NUL, newline, dashes).
def _values(shape: Shape) -> st.SearchStrategy[str]:
    mutated = st.tuples(_valid(shape), st.integers(0, 70), st.sampled_from("A-_.\n\x00 z7\u00e9")).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + 1:])
    return st.one_of(_valid(shape), mutated, st.text(alphabet="0123456789abcdef-_.A\n\x00", max_size=70))


@given(st.sampled_from(SHAPES).flatmap(lambda s: st.tuples(st.just(s), st.lists(_values(s), max_size=6))))
def test_a_list_is_judged_as_its_values_are_one_by_one(case: tuple[Shape, list[str]]) -> None:
    shape, values = case
    assert shape.check_all(values) == all(shape.check(v) for v in values)


def _event(keys: list[str], classes: list[str], source_type: str) -> ev.Envelope:
    return ev.new_event(ev.DbQuery, ev.DbQueryPayload(session_id="s", statement_type="SELECT", fingerprint="f",
                                                      statement="SELECT 1", customer_keys=keys,
                                                      sensitive_classes=classes),
                        source=ev.Source(type=source_type))


@given(st.lists(st.tuples(st.lists(_values(HEX64), max_size=3), st.lists(_values(CLASS_NAME), max_size=3),
                          _values(SOURCE_TYPE)), max_size=8))
def test_a_batch_is_judged_as_its_events_are_one_by_one(specs: list[tuple[list[str], list[str], str]]) -> None:
    events = [_event(*spec) for spec in specs]
    expected = {i: err for i, e in enumerate(events) if (err := shape_error(e)) is not None}
    assert shape_errors(events) == expected


def test_the_first_bad_value_is_named_by_its_path() -> None:
    e = _event(["ab" * 32, "AB" * 32], ["name"], "proxy")
    assert shape_error(e) == f"Expected `str` matching regex {HEX64.pattern!r} - at `$.payload.customer_keys[1]`"
    assert shape_error(msgspec.structs.replace(e, id="x")) is not None
    assert "`$.id`" in (shape_error(msgspec.structs.replace(e, id="x")) or "")
    assert shape_error(_event([], ["name", "Card"], "proxy")) == CLASS_NAME.error("$.payload.sensitive_classes[1]")
    assert shape_error(_event([], [], "proxy")) is None
