"""Filters: every operator on its own, and a property test — any YAML-shaped input either parses or is refused
with a RuleSyntaxError, and a parsed filter never raises on an event."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.conditions import OPERATORS, parse_condition
from rules.errors import RuleSyntaxError
from rules.testing import build_events, test_context

CTX = test_context()
EVENT = build_events([{"who": "alice", "rows": 12, "classes": ["name", "card_number"], "tables": ["public.cards"],
                       "customers": ["canary-1"], "payload": {"client_addr": "10.1.2.3", "application_name": "psql",
                                                              "statement": "COPY public.cards TO STDOUT"}}])[0]


def matches(raw: Any) -> bool:
    from rules.engine import Engine
    from rules.state import MemoryState

    fact = Engine([], CTX, MemoryState()).fact(EVENT)
    return parse_condition(raw).compile(CTX)(fact)


@pytest.mark.parametrize("raw, expected", [
    ({"payload.rows": 12}, True),
    ({"payload.rows": {"gte": 13}}, False),
    ({"payload.rows": {"gt": 11, "lte": 12}}, True),
    ({"classes": {"intersects": ["card_number"]}}, True),
    ({"classes": {"contains_all": ["name", "national_id"]}}, False),
    ({"classes": {"contains": "name"}}, True),
    ({"payload.tables_read": {"glob": "public.c*"}}, True),
    ({"payload.statement": {"regex": "(?i)copy .* to stdout"}}, True),
    ({"origin": {"cidr": "10.1.0.0/16"}}, True),
    ({"site": "hq"}, True),
    ({"program": ["psql", "pgadmin"]}, True),
    ({"person.team": "loans"}, True),
    ({"payload.customer_keys": {"intersects": {"list": "honeytokens"}}}, True),
    ({"payload.error_code": {"exists": True}}, False),
    ({"sensitive": True}, True),
    ({"sensitive": ["national_id"]}, False),
    ({"not": {"person.team": "loans"}}, False),
    ({"any": [{"payload.rows": 1}, {"kind": "db.query"}]}, True),
    ({"all": [{"payload.rows": 12}, {"kind": "file.export"}]}, False),
    ({"field": "payload.rows", "lt": 100}, True),
    ({"kind": "db.query", "payload.rows": {"equals": 12}}, True),
])
def test_each_operator_decides_as_documented(raw: Any, expected: bool) -> None:
    assert matches(raw) is expected


def test_the_operator_table_is_the_documented_one() -> None:
    assert set(OPERATORS) == {"equals", "in", "intersects", "glob", "regex", "gt", "gte", "lt", "lte", "contains",
                              "contains_all", "exists", "cidr"}


keys = st.sampled_from(["all", "any", "not", "sensitive", "field", "payload.rows", "payload.tables_read", "classes",
                        "person.team", "origin", "nonsense", "payload", "person.x", "gte", "regex", "list",
                        "payload.counts", "payload.process", "actor", "source.type", "customers"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=6),
                    st.sampled_from(["(", "[a-", "10.0.0.0/8", "card_number", "*", "gte"]))
yamlish = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(keys, inner, max_size=3)), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, yamlish, min_size=1, max_size=3))
def test_any_input_parses_or_is_refused_cleanly_and_never_raises_on_an_event(raw: dict[str, Any]) -> None:
    try:
        cond = parse_condition(raw)
    except RuleSyntaxError:
        return
    from rules.engine import Engine
    from rules.state import MemoryState

    fact = Engine([], CTX, MemoryState()).fact(EVENT)
    assert cond.compile(CTX)(fact) in (True, False)
