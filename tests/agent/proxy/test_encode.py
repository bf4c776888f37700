"""The proxy's fast db.query encoding decodes to exactly the event the schema's Structs would make."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import Actor, DbQuery, DbQueryPayload, Source, decode, encode
from agent.proxy.analysis import Analyser
from agent.proxy.audit import QueryRecord, SessionInfo
from agent.proxy.encode import QueryEncoder
from agent.spool import unpack_items as unpack
from agent.proxy.writer import FastIds

try:
    from agent.proxy import _framer
except ImportError:  # pragma: no cover - the extension is optional
    _framer = None  # type: ignore[assignment]

ANALYSER = Analyser({"public.customers.full_name": "name"})
SOURCE = Source(type="proxy", name="pg-main")


def expected(rec: QueryRecord, event_id: str) -> DbQuery:
    a, d, info = rec.analysis, rec.data, rec.session
    started = dt.datetime.fromtimestamp(rec.started, dt.timezone.utc)
    payload = DbQueryPayload(
        session_id=info.session_id, statement_type=a.statement_type, fingerprint=a.fingerprint,
        statement=a.statement, database=info.database, application_name=info.application_name,
        client_addr=info.client_addr, client_port=info.client_port,
        server=f"{info.server_addr}:{info.server_port}", started_at=started,
        duration_ms=round(rec.duration * 1000, 3), tables_read=list(d.tables_read),
        tables_written=list(a.tables_written), columns=list(d.columns), sensitive_classes=list(d.sensitive_classes),
        rows=rec.rows or rec.counted or 0, bytes=rec.bytes, error_code=rec.error, cursor=rec.cursor,
        customer_keys=list(rec.keys or ()), customer_keys_total=rec.keys_total or None, unknown=list(d.unknown),
    )
    return DbQuery(id=event_id, ts=started, host="db-proxy-1", source=SOURCE, agent_id="agent-7",
                   actor=Actor(db_user=info.user or None, end_user=rec.end_user or None), payload=payload)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
statements = st.sampled_from([
    "SELECT c.full_name FROM customers c WHERE c.customer_id = $1", "UPDATE t SET a = 1 WHERE b = 'x'",
    "FETCH 10 FROM c1", "DECLARE c1 CURSOR FOR SELECT * FROM customers", "SELECT \"we\"\"ird\", '\\n' FROM x",
    "BEGIN", "not sql at all ((", "",
])


@settings(deadline=None)  # the first example imports the SQL parser
@given(statements, statements, text.filter(bool), st.one_of(st.none(), text.filter(bool)),
       st.one_of(st.none(), text), st.integers(0, 10**12), st.integers(0, 10**12),
       st.one_of(st.none(), st.sampled_from(["42P01", "57014"])), st.lists(st.binary(min_size=32, max_size=32),
                                                                           max_size=5),
       st.floats(0, 1e6), st.floats(1e9, 2e9))
def test_fast_encoding_equals_the_struct_encoding(sql: str, data_sql: str, user: str, end_user: str | None,
                                                  app: str | None, rows: int, size: int, error: str | None,
                                                  keys: list[bytes], duration: float, started: float) -> None:
    info = SessionInfo("01a21b00-9886-714f-a9a3-fe5ba6c96e4e", "pg", "127.0.0.1", 50000, "10.0.0.5", 5432,
                       database="bank", user=user, application_name=app)
    rec = QueryRecord(info, ANALYSER.analyse(sql), end_user)
    rec.data = ANALYSER.analyse(data_sql)
    rec.rows, rec.bytes, rec.error, rec.duration, rec.started = rows, size, error, duration, started
    rec.cursor = "c1" if "c1" in sql else None
    if keys:
        rec.keys = {k.hex(): None for k in keys}
        rec.keys_total = len(keys) + 3
    event_id = FastIds().next(started)
    fast = QueryEncoder(SOURCE, "db-proxy-1", "agent-7").encode(rec, event_id)
    assert decode(fast) == decode(encode(expected(rec, event_id)))


@given(st.lists(st.floats(1e9, 2e9), min_size=1, max_size=50))
def test_fast_ids_are_uuid7_of_each_events_millisecond_and_increase_with_time(times: list[float]) -> None:
    import uuid

    ids = FastIds()
    made = [(when, ids.next(when)) for when in sorted(times)]
    for when, event_id in made:
        u = uuid.UUID(event_id)
        assert str(u) == event_id and u.version == 7 and u.variant == uuid.RFC_4122
        assert u.int >> 80 == int(when * 1000)
    assert [i for _, i in made] == sorted({i for _, i in made})  # distinct, and in the order they were made


@pytest.mark.skipif(_framer is None, reason="the C extension was not built")
@settings(deadline=None)
@given(statements, text.filter(bool), st.one_of(st.none(), text.filter(bool)), st.one_of(st.none(), text),
       st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1), st.one_of(st.none(), st.integers(0, 2**63 - 1)),
       st.floats(0, 1e6), st.floats(1e9, 2e9))
def test_the_lanes_events_equal_the_python_encoding(sql: str, user: str, end_user: str | None, app: str | None,
                                                    rows: int, size: int, counted: int | None, duration: float,
                                                    started: float) -> None:
    """What agent/proxy/_framer.c writes from a template is the event QueryEncoder writes for that statement."""
    info = SessionInfo("01a21b00-9886-714f-a9a3-fe5ba6c96e4e", "pg", "127.0.0.1", 50000, "10.0.0.5", 5432,
                       database="bank", user=user, application_name=app)
    rec = QueryRecord(info, ANALYSER.analyse(sql), end_user)
    rec.rows, rec.bytes, rec.counted, rec.duration, rec.started = rows, size, counted, duration, started
    rec.cursor = None  # the lane never takes a cursor's statements
    encoder = QueryEncoder(SOURCE, "db-proxy-1", "agent-7")
    head, tail = encoder.template(info, app, rec.analysis, rec.data, end_user)
    items = unpack(_framer.event(head, tail, started, started + duration, rows, size,
                                 -1 if counted is None else counted))
    assert len(items) == 1
    event_id, body = items[0]
    got, want = decode(body), decode(encoder.encode(rec, event_id))
    assert uuid.UUID(event_id).version == 7 and uuid.UUID(event_id).int >> 80 == int(started * 1000)
    # Times: the same instant to the microsecond (each side rounds a float's last half-microsecond its own way).
    assert abs((got.ts - want.ts).total_seconds()) <= 1e-6 and got.payload.started_at == got.ts
    assert abs(got.payload.duration_ms - want.payload.duration_ms) <= 1e-3 + duration * 1e-9
    same = msgspec.structs.replace(got, ts=want.ts, payload=msgspec.structs.replace(
        got.payload, started_at=want.payload.started_at, duration_ms=want.payload.duration_ms))
    assert same == want


@pytest.mark.skipif(_framer is None, reason="the C extension was not built")
@pytest.mark.parametrize(("started", "duration", "rows", "size", "counted"), [
    (1_700_000_000.0, 0.0, 0, 0, -1),  # a whole second: no fraction in the time, "0.0" ms
    (1_700_000_000.25, 0.000125, 1, 7, -1),  # 0.125 ms
    (1_700_000_059.999999, 0.0105, 0, 12, 100_000),  # rows from the counted DataRows; 10.5 ms
    (1_799_999_999.000001, 3.0, 2**40, 2**62, -1),  # a microsecond past the second; 3000.0 ms
    (1_800_000_000.5, 86_400.017, 10, 10, 3),  # a day: 86400017.0 ms
])
def test_the_lanes_times_and_counts_are_written_as_msgspec_writes_them(started: float, duration: float, rows: int,
                                                                        size: int, counted: int) -> None:
    """Byte for byte, for times and durations whose rounding is not a tie."""
    info = SessionInfo("01a21b00-9886-714f-a9a3-fe5ba6c96e4e", "pg", "127.0.0.1", 50000, "10.0.0.5", 5432,
                       database="bank", user="app", application_name="web")
    rec = QueryRecord(info, ANALYSER.analyse("SELECT 1"), None)
    rec.rows, rec.bytes, rec.duration, rec.started = rows, size, duration, started
    rec.counted = None if counted < 0 else counted  # the lane's -1: no DataRow counted
    encoder = QueryEncoder(SOURCE, "db-proxy-1", "agent-7")
    head, tail = encoder.template(info, "web", rec.analysis, rec.data, None)
    [(event_id, body)] = unpack(_framer.event(head, tail, started, started + duration, rows, size, counted))
    assert body == encoder.encode(rec, event_id)
