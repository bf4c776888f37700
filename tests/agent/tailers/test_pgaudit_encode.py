"""pgAudit payloads encoded from cached fragments are, byte for byte, the DbQueryPayload's encoding."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import DbQueryPayload
from agent.tailers._sql import StatementFacts, analyse_statement
from agent.tailers.pgaudit_encode import QueryPayloads
from agent.tailers.pgaudit_sessions import Who

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
maybe = st.none() | text.filter(bool)
names = st.lists(text.filter(bool), max_size=3)
whos = st.builds(Who, session=text.filter(bool), user=maybe, database=maybe, application_name=maybe,
                 client_addr=maybe, client_port=st.none() | st.integers(0, 65535))
facts = st.builds(StatementFacts, statement_type=text, fingerprint=text, redacted=text,
                  tables_read=names.map(tuple), tables_written=names.map(tuple), columns=names.map(tuple),
                  sensitive_classes=names.map(tuple), end_user=maybe, cursor_name=maybe)
times = st.none() | st.datetimes(timezones=st.just(dt.timezone.utc))


@settings(max_examples=300)
@given(whos, facts, text, maybe, times, names, names, st.none() | st.integers(0, 10**15), st.booleans(), names)
def test_fragments_encode_exactly_as_the_struct(who: Who, f: StatementFacts, statement_type: str,
                                               server: str | None, started_at: dt.datetime | None,
                                               read: list[str], written: list[str], rows: int | None,
                                               system: bool, unknown: list[str]) -> None:
    payloads = QueryPayloads(server)
    expected = msgspec.json.encode(DbQueryPayload(
        session_id=who.session, statement_type=statement_type, fingerprint=f.fingerprint, statement=f.redacted,
        database=who.database, application_name=who.application_name, client_addr=who.client_addr,
        client_port=who.client_port, server=server, started_at=started_at, tables_read=read,
        tables_written=written, columns=list(f.columns), sensitive_classes=list(f.sensitive_classes), rows=rows,
        cursor=f.cursor_name, system=system, unknown=unknown,
    ))
    when = None if started_at is None else msgspec.json.encode(started_at)
    for _ in range(2):  # the second time from the cached fragments
        assert payloads.encode(who, f, statement_type, when, read, written, rows, system, unknown) == expected


def test_a_statement_shared_by_sessions_keeps_each_sessions_fields() -> None:
    payloads = QueryPayloads("db01:5432")
    f = analyse_statement("SELECT name FROM customers WHERE id = 7", "postgres")
    alice = Who("s1", "alice", "bank", "loan desk", "10.0.0.1", 50000)
    bob = Who("s2", "bob", "bank", None, "10.0.0.2", None)
    got = [msgspec.json.decode(payloads.encode(w, f, "SELECT", None, ["public.customers"], [], 1, False, []))
           for w in (alice, bob, alice)]
    assert [(p["session_id"], p.get("client_port")) for p in got] == [("s1", 50000), ("s2", None), ("s1", 50000)]
    assert {p["statement"] for p in got} == {"SELECT name FROM customers WHERE id = ?"}
