"""The lane against the Python audit on generated conversations: the same events, in the same order.

A conversation is a run of round trips as a client and PostgreSQL exchange them (prepared statements through the
unnamed portal with and without a Describe, simple queries with literals, rows, errors after rows, notices,
an application_name change, a row limit, an empty query, transactions, pipelining), cut into chunks at random
places. One audit has the lane, the other not; every fact of every event must agree, and so must their order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.events import Source, decode
from agent.proxy import pgwire as w
from agent.proxy.analysis import Analyser
from agent.proxy.audit import AuditSession, QueryRecord, SessionInfo
from agent.proxy.encode import QueryEncoder
from agent.proxy.keys import KeyMatcher
from agent.spool import unpack_items as unpack

pytestmark = pytest.mark.skipif(w.Lane is None, reason="the C extension was not built")

CUSTOMERS, ITEMS = 16384, 16500
TEXT, INT8 = 25, 20
CLIENT_NEEDED = frozenset({w.Q, w.P, w.B, w.D, w.E, w.S, w.C, w.F, w.H, w.X})
ANALYSER = Analyser({"public.customers.national_id": "id_number"})


def msg(t: bytes, body: bytes = b"") -> bytes:
    return t + struct.pack("!I", len(body) + 4) + body


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def row_description(cols: list[tuple[str, int, int]]) -> bytes:
    body = struct.pack("!h", len(cols))
    for name, table, attnum in cols:
        body += cstr(name) + struct.pack("!IhIhih", table, attnum, TEXT, -1, -1, 0)
    return msg(b"T", body)


def data_row(values: list[str]) -> bytes:
    body = struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", len(v)) + v.encode()
    return msg(b"D", body)


def error(code: str, kind: bytes = b"E") -> bytes:
    return msg(kind, b"SERROR\0C" + cstr(code) + b"Msomething\0\0")


def ready(status: bytes = b"I") -> bytes:
    return msg(b"Z", status)


def bind(stmt: str, params: list[str]) -> bytes:
    body = cstr("") + cstr(stmt) + struct.pack("!hh", 0, len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p.encode()
    return msg(b"B", body + struct.pack("!h", 0))


# (statement name, SQL, result columns, how a row looks)
STATEMENTS = [
    ("s_items", "SELECT label FROM items WHERE id = $1", [("label", ITEMS, 2)], lambda i: [f"item {i}"]),
    ("s_nid", "SELECT national_id FROM customers WHERE customer_id = $1", [("national_id", CUSTOMERS, 3)],
     lambda i: [f"NID{i}"]),
    ("s_key", "SELECT customer_id, national_id FROM customers WHERE customer_id > $1",
     [("customer_id", CUSTOMERS, 1), ("national_id", CUSTOMERS, 3)], lambda i: [str(i), f"NID{i}"]),
    ("s_alias", "SELECT customer_id AS c FROM customers WHERE customer_id > $1", [("c", CUSTOMERS, 1)],
     lambda i: [str(i)]),
    ("s_upd", "UPDATE items SET label = label WHERE id = $1", None, None),
]
QUERIES = [  # simple queries: a text with literals, its columns, its rows
    ("SELECT label FROM items WHERE id = {n}", [("label", ITEMS, 2)], lambda i: [f"item {i}"]),
    ("select label from items where label = 'it''s {n}' or id in ({n}, 2)", [("label", ITEMS, 2)],
     lambda i: [f"it's {i}"]),
    ("SELECT national_id FROM customers WHERE customer_id = {n};", [("national_id", CUSTOMERS, 3)],
     lambda i: [f"NID{i}"]),
    ("SELECT customer_id FROM customers WHERE customer_id = {n}", [("customer_id", CUSTOMERS, 1)],
     lambda i: [str(i)]),
    ("/*custos_user='bob'*/ SELECT label FROM items WHERE id = {n}", [("label", ITEMS, 2)],
     lambda i: [f"item {i}"]),
    ("UPDATE items SET price = {n}.5 WHERE id = {n}", None, None),
    ("SELECT label FROM items WHERE id = {n}; SELECT 1", [("label", ITEMS, 2)], lambda i: [f"item {i}"]),
]


@dataclass
class Trip:
    client: bytes
    server: bytes


def prepare_all() -> Trip:
    client, server = b"", b""
    for name, sql, cols, _ in STATEMENTS:
        client += msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", 0)) + msg(b"D", b"S" + cstr(name))
        server += msg(b"1") + msg(b"t", struct.pack("!h", 0)) + (row_description(cols) if cols else msg(b"n"))
    return Trip(client + msg(b"S"), server + ready())


trips = st.one_of(
    # a prepared statement through the unnamed portal, as asyncpg (no Describe) or libpq (Describe) sends it
    st.builds(lambda k, rows, describe, status, notice, limit: prepared(k, rows, describe, status, notice, limit),
              st.integers(0, len(STATEMENTS) - 1), st.integers(0, 4), st.booleans(), st.sampled_from([b"I", b"T"]),
              st.integers(-1, 6), st.sampled_from([0, 0, 0, 2])),
    st.builds(lambda k, n, rows, fail, status, app: query(k, n, rows, fail, status, app),
              st.integers(0, len(QUERIES) - 1), st.integers(1, 10**6), st.integers(0, 4), st.booleans(),
              st.sampled_from([b"I", b"T"]), st.sampled_from([None, None, None, "renamed"])),
    st.just(Trip(msg(b"Q", b";\0"), msg(b"I") + ready())),
    st.just(Trip(msg(b"Q", cstr("BEGIN")), msg(b"C", cstr("BEGIN")) + ready(b"T"))),
    st.just(Trip(msg(b"Q", cstr("COMMIT")), msg(b"C", cstr("COMMIT")) + ready(b"I"))),
)


def prepared(k: int, rows: int, describe: bool, status: bytes, notice: int, limit: int) -> Trip:
    name, _, cols, make = STATEMENTS[k]
    client = bind(name, [str(k)]) + (msg(b"D", b"P\0") if describe else b"") + \
        msg(b"E", b"\0" + struct.pack("!i", limit)) + msg(b"S")
    server = [msg(b"2")] + ([row_description(cols) if cols else msg(b"n")] if describe else [])
    if cols:
        shown = rows if not limit else min(rows, limit)
        server += [data_row(make(i)) for i in range(shown)]
        server.append(msg(b"s") if limit and rows >= limit else msg(b"C", cstr(f"SELECT {shown}")))
    else:
        server.append(msg(b"C", cstr(f"UPDATE {rows}")))
    if 0 <= notice < len(server):
        server.insert(notice, error("01000", b"N"))
    return Trip(client, b"".join(server) + ready(status))


def query(k: int, n: int, rows: int, fail: bool, status: bytes, app: str | None) -> Trip:
    text, cols, make = QUERIES[k]
    server = b""
    if cols:
        server += row_description(cols) + b"".join(data_row(make(n + i)) for i in range(rows))
        server += error("22012") if fail else msg(b"C", cstr(f"SELECT {rows}"))
    else:
        server += msg(b"C", cstr(f"UPDATE {rows}"))
    if app is not None:
        server += msg(b"S", cstr("application_name") + cstr(app))
    return Trip(msg(b"Q", cstr(text.format(n=n))), server + ready(status))


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(marks, marks[1:], strict=False)]


def facts(body: bytes) -> tuple:  # type: ignore[type-arg]
    e = decode(body)
    p = e.payload
    return (p.statement, p.statement_type, tuple(p.tables_read), p.rows, p.bytes, p.error_code,
            tuple(p.customer_keys or ()), p.customer_keys_total, p.application_name, e.actor.end_user)


def run(conversation: list[Trip], pipelined: list[bool], points: list[int], lane: bool) -> list[tuple]:  # type: ignore[type-arg]
    info = SessionInfo("01a21b00-9886-714f-a9a3-fe5ba6c96e4e", "pg", "127.0.0.1", 5000, "127.0.0.1", 5432,
                       database="bank", user="teller", application_name="app")
    encoder = QueryEncoder(Source(type="proxy", name="pg"), "host")
    keys = KeyMatcher(["public.customers.customer_id"], b"secret")
    out: list[bytes] = []
    outbox = w.Outbox(lambda soon: None, 4, 10_000) if lane else None

    def drain() -> None:
        got = outbox.take() if outbox is not None else None
        if got is not None:
            out.extend(body for _, body in unpack(got[0]))

    def emit(rec: QueryRecord) -> None:
        drain()
        out.append(encoder.encode(rec, "01a21b00-9886-714f-a9a3-fe5ba6c96e4f"))

    def template(i: SessionInfo, a, end_user):  # type: ignore[no-untyped-def]
        return encoder.template(i, i.application_name, a, a, end_user)

    audit = AuditSession(info, ANALYSER, keys, emit, template=template if lane else None)
    if lane:
        audit.lane = w.Lane(audit.client_message, audit.server_message, audit.rows_seen, audit.adopt_unnamed,
                            audit.fast_query, outbox, audit.statements, audit.portals, audit.slots)
        cframer = w.Framer(audit.client_message, CLIENT_NEEDED.__contains__, lambda t, n: None, 1 << 20,
                           audit.lane, 0)
        sframer = w.Framer(audit.server_message, audit.wants, audit.skipped, 1 << 20, audit.lane, 1)
    else:
        cframer = w.Framer(audit.client_message, CLIENT_NEEDED.__contains__, lambda t, n: None)
        sframer = w.Framer(audit.server_message, audit.wants, audit.skipped)
    sframer.feed(msg(b"R", struct.pack("!I", 0)) + msg(b"K", struct.pack("!II", 7, 9)) + ready())
    if lane:
        audit.lane.enabled = 1  # type: ignore[attr-defined]
    owed: list[bytes] = []  # server answers held back: the client pipelines its next round trip first
    for n, trip in enumerate([prepare_all(), *conversation]):
        for chunk in cuts(trip.client, points[n::7]):
            cframer.feed(chunk)
        owed.append(trip.server)
        if not (n < len(pipelined) and pipelined[n]):
            for answer in owed:
                for chunk in cuts(answer, points[n + 3::5]):
                    sframer.feed(chunk)
            owed = []
    for answer in owed:
        sframer.feed(answer)
    if audit.lane is not None:
        audit.lane.give_up()  # type: ignore[attr-defined]
    audit.close()
    drain()
    return [facts(body) for body in out]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(trips, min_size=1, max_size=12), st.lists(st.booleans(), max_size=12),
       st.lists(st.integers(0, 10**6), min_size=40, max_size=40))
def test_the_lane_and_the_python_audit_write_the_same_events(conversation: list[Trip], pipelined: list[bool],
                                                            points: list[int]) -> None:
    expected = run(conversation, pipelined, points, lane=False)
    assert run(conversation, pipelined, points, lane=True) == expected


def test_the_lane_takes_the_common_round_trips() -> None:
    """The differential test above would pass with a lane that took nothing: this pins that it takes them."""
    conversation = [prepared(0, 1, describe, b"I", -1, 0) for describe in (False, True)] * 5
    conversation += [query(0, n, 1, False, b"I", None) for n in range(10)]
    expected = run(conversation, [], [1] * 40, lane=False)
    assert run(conversation, [], [1] * 40, lane=True) == expected and len(expected) == 20


@pytest.mark.parametrize("lane", [False, True])
def test_a_message_cut_right_after_its_header_is_still_read(lane: bool) -> None:
    """A read can end after a message's first five bytes: a CommandComplete or RowDescription cut there must
    still be read whole (they were once skipped as unneeded, and the statement was lost)."""
    trip = query(0, 7, 2, False, b"I", None)
    whole = run([trip], [], [0] * 40, lane=lane)
    # every cut of the answer at one place, the client's bytes whole
    for at in range(1, len(trip.server)):
        points = [0] * 40
        points[1 + 3] = at  # where `run` cuts the answer of round trip 1 (0 prepares the statements)
        assert run([trip], [], points, lane=lane) == whole, at
    assert whole == [("SELECT label FROM items WHERE id = ?", "SELECT", ("public.items",), 2, 24, None, (), None,
                      "app", None)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.one_of(
    st.binary(max_size=64),
    st.sampled_from([t.client for t in (prepared(0, 1, True, b"I", -1, 0), query(1, 5, 1, False, b"I", None))]),
    st.sampled_from([t.server for t in (prepared(0, 2, True, b"T", 1, 0), query(0, 5, 2, True, b"I", "x"))]),
)), max_size=30))
def test_the_lane_survives_arbitrary_bytes(chunks: list[tuple[bool, bytes]]) -> None:
    """Garbage mixed with real messages, in both directions: the lane and the audit raise at most the errors the
    proxy counts as a failed audit, and never crash the process."""
    info = SessionInfo("s", "pg", "127.0.0.1", 1, "127.0.0.1", 5432, database="bank", user="u")
    encoder = QueryEncoder(Source(type="proxy", name="pg"), "host")
    audit = AuditSession(info, ANALYSER, KeyMatcher(["public.customers.customer_id"], b"k"), lambda rec: None,
                         template=lambda i, a, u: encoder.template(i, i.application_name, a, a, u))
    outbox = w.Outbox(lambda soon: None, 4, 100)
    lane = w.Lane(audit.client_message, audit.server_message, audit.rows_seen, audit.adopt_unnamed,
                  audit.fast_query, outbox, audit.statements, audit.portals, audit.slots)
    framers = {False: w.Framer(audit.client_message, CLIENT_NEEDED.__contains__, lambda t, n: None, 256, lane, 0),
               True: w.Framer(audit.server_message, audit.wants, audit.skipped, 256, lane, 1)}
    framers[True].feed(prepare_all().server)
    lane.enabled = 1
    broken = set()
    for server, data in chunks:
        if server in broken:
            continue
        try:
            framers[server].feed(data)
        except (w.ProtocolError, struct.error, IndexError, ValueError, UnicodeDecodeError):
            broken.add(server)  # the proxy stops auditing the session here (see ClientSide.audit_fault)
    while outbox.take() is not None:
        pass
