"""The message framer and parsers, driven by hypothesis: any split, any bytes, bounded memory."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.proxy import pgwire as w
from agent.proxy.analysis import Analyser
from agent.proxy.audit import AuditSession, QueryRecord, SessionInfo
from agent.proxy.keys import KeyMatcher

# Both implementations of the framer: the C one (built by setup.py) and the pure-Python one it stands in for.
FRAMERS = [pytest.param(w.PyFramer, id="python")] + \
    ([pytest.param(w._CFramer, id="c")] if w._CFramer is not None else [])  # noqa: SLF001

message = st.tuples(st.sampled_from(b"QPBDESCTZRKd123ntsIHGNAV"), st.binary(max_size=300))


def frame(t: int, body: bytes) -> bytes:
    return bytes([t]) + struct.pack("!I", len(body) + 4) + body


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts}) if data else []
    out, prev = [], 0
    for p in points + [len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


class Collector:
    def __init__(self) -> None:
        self.got: list[tuple[int, bytes, bool]] = []
        self.skipped: list[tuple[int, int]] = []

    def handler(self, t: int, body: bytes, truncated: bool) -> None:
        self.got.append((t, body, truncated))


@pytest.mark.parametrize("framer", FRAMERS)
@given(st.lists(message, max_size=30), st.lists(st.integers(min_value=0), max_size=20))
def test_framer_yields_the_same_messages_however_the_stream_is_cut(framer: type[w.PyFramer], msgs: list,
                                                                    cuts: list[int]) -> None:  # type: ignore[type-arg]
    c = Collector()
    f = framer(c.handler, lambda t: True, lambda t, n: c.skipped.append((t, n)), cap=1 << 20)
    for piece in chunks(b"".join(frame(t, b) for t, b in msgs), cuts):
        f.feed(piece)
    assert c.got == [(t, b, False) for t, b in msgs]


@pytest.mark.parametrize("framer", FRAMERS)
@given(st.lists(message, max_size=30), st.lists(st.integers(min_value=0), max_size=20),
       st.integers(min_value=0, max_value=64))
def test_framer_keeps_at_most_cap_bytes_and_skips_unwanted_bodies(framer: type[w.PyFramer], msgs: list,
                                                                   cuts: list[int], cap: int) -> None:  # type: ignore[type-arg]
    c = Collector()
    f = framer(c.handler, lambda t: t != ord("d"), lambda t, n: c.skipped.append((t, n)), cap=cap)
    for piece in chunks(b"".join(frame(t, b) for t, b in msgs), cuts):
        f.feed(piece)
        assert len(f._pend) <= cap + 5  # noqa: SLF001 - the bound is the point of the test
    wanted = [(t, b[:cap], len(b) > cap) for t, b in msgs if t != ord("d")]
    assert c.got == wanted
    assert c.skipped == [(t, len(b)) for t, b in msgs if t == ord("d")]


@pytest.mark.parametrize("framer", FRAMERS)
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=10))
def test_framer_on_random_bytes_raises_only_protocol_errors(framer: type[w.PyFramer], data: bytes,
                                                            cuts: list[int]) -> None:
    c = Collector()
    f = framer(c.handler, lambda t: True, lambda t, n: None, cap=256)
    try:
        for piece in chunks(data, cuts):
            f.feed(piece)
            assert len(f._pend) <= 256 + 5  # noqa: SLF001
    except w.ProtocolError:
        pass


class Recorder:
    """Every callback a framer makes, in order, with what the callbacks answered; `wants` answers by type."""

    def __init__(self, unwanted: bytes) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.unwanted = set(unwanted)

    def handler(self, t: int, body: bytes, truncated: bool) -> None:
        self.calls.append(("handler", t, body, truncated))

    def wants(self, t: int) -> bool:
        self.calls.append(("wants", t))
        return t not in self.unwanted

    def skipped(self, t: int, n: int) -> None:
        self.calls.append(("skipped", t, n))


@pytest.mark.skipif(w._CFramer is None, reason="the C framer was not built")  # noqa: SLF001
@given(st.one_of(st.binary(max_size=600), st.lists(message, max_size=20).map(
           lambda ms: b"".join(frame(t, b) for t, b in ms))),
       st.lists(st.integers(min_value=0), max_size=12), st.integers(min_value=0, max_value=80),
       st.binary(max_size=4))
def test_c_framer_makes_the_same_calls_as_the_python_framer(data: bytes, cuts: list[int], cap: int,
                                                             unwanted: bytes) -> None:
    seen = []
    for impl in (w.PyFramer, w._CFramer):  # noqa: SLF001
        r = Recorder(unwanted)
        f = impl(r.handler, r.wants, r.skipped, cap)
        error = None
        states = []
        try:
            for piece in chunks(data, cuts):
                f.feed(piece)
                states.append((f._pend, f._skip))  # noqa: SLF001
        except w.ProtocolError as e:
            error = str(e)
        seen.append((r.calls, states, error))
    assert seen[0] == seen[1]


def test_the_c_framer_is_built_and_used() -> None:
    """`pip install -e .` builds it (setup.py); if this fails, check that gcc and the Python headers exist."""
    assert w._CFramer is not None and w.Framer is w._CFramer  # noqa: SLF001


def _session(emitted: list[QueryRecord]) -> AuditSession:
    info = SessionInfo("s", "l", "127.0.0.1", 1, "127.0.0.1", 5432, database="d", user="u")
    keys = KeyMatcher(["public.customers.customer_id"], b"k")
    return AuditSession(info, Analyser({"public.customers.name": "name"}), keys, emitted.append)


# What a message parser may raise on a malformed body; the proxy counts these as protocol faults.
PARSE_ERRORS = (w.ProtocolError, struct.error, ValueError, IndexError)


@pytest.mark.parametrize("framer", FRAMERS)
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), message), max_size=40))
def test_audit_state_machine_survives_any_message_sequence(framer: type[w.PyFramer], seq: list) -> None:  # type: ignore[type-arg]
    emitted: list[QueryRecord] = []
    audit = _session(emitted)
    client = framer(audit.client_message, lambda t: True, lambda t, n: None, cap=1024)
    server = framer(audit.server_message, audit.wants, audit.skipped, cap=1024)
    for from_client, (t, body) in seq:
        try:
            (client if from_client else server).feed(frame(t, body))
        except PARSE_ERRORS:
            return  # the proxy stops auditing this session here and keeps forwarding
    audit.close()
    for rec in emitted:  # whatever arrived, what the audit reports is well-formed
        assert rec.rows >= 0 and rec.bytes >= 0 and rec.keys_total >= len(rec.keys or ())


def test_parsers_read_well_formed_messages() -> None:
    body = b"portal\0stmt\0" + struct.pack("!hh", 1, 1) + struct.pack("!h", 2) + struct.pack("!i", 3) + b"abc" \
        + struct.pack("!i", -1) + struct.pack("!hhh", 2, 1, 0)
    assert w.bind_message(body, False) == (b"portal", b"stmt", (1, 0))
    assert w.bind_message(body[:12], True) == (b"portal", b"stmt", None)
    assert w.command_rows(b"INSERT 0 17\0") == 17 and w.command_rows(b"BEGIN\0") is None
    err = b"SERROR\0VERROR\0C42P01\0Mrelation \"secret_value\" does not exist\0\0"
    assert w.error_sqlstate(err) == "42P01"
    row = struct.pack("!h", 3) + struct.pack("!i", 2) + b"ab" + struct.pack("!i", -1) + struct.pack("!i", 1) + b"z"
    assert w.data_row_fields(row, (0, 1, 2)) == [b"ab", None, b"z"]
    assert w.data_row_fields(row, (2,)) == [b"z"]


RELAYS = [pytest.param(w.PyRelay, id="python")] + \
    ([pytest.param(w._CRelay, id="c")] if w._CRelay is not None else [])  # noqa: SLF001


def _recording_relay(base: type) -> type:
    class Recording(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            self.seen: list[tuple[str, object]] = []

        def early_data(self, data: bytes) -> None:
            self.seen.append(("early", data))

        def audit_fault(self, exc: BaseException) -> None:
            self.seen.append(("fault", exc))

    return Recording


@pytest.mark.parametrize("base", RELAYS)
def test_a_relay_forwards_first_then_audits_and_an_audit_fault_never_stops_forwarding(base: type) -> None:
    relay = _recording_relay(base)()
    relay.data_received(b"startup")  # no other side yet
    relay.relay_write = lambda data: relay.seen.append(("write", data))
    relay.data_received(b"a")  # nothing audits yet
    relay.relay_feed = lambda data: relay.seen.append(("feed", data))
    relay.data_received(b"b")

    def broken(data: bytes) -> None:
        raise ValueError("the audit cannot follow")

    relay.relay_feed = broken
    relay.data_received(b"c")
    relay.data_received(b"d")
    kinds = [(k, v if isinstance(v, bytes) else type(v).__name__) for k, v in relay.seen]
    assert kinds == [("early", b"startup"), ("write", b"a"), ("write", b"b"), ("feed", b"b"), ("write", b"c"),
                     ("fault", "ValueError"), ("write", b"d"), ("fault", "ValueError")]
    fault = relay.seen[5][1]
    assert isinstance(fault, ValueError) and fault.__traceback__ is not None  # where it happened, for the log


@pytest.mark.parametrize("base", RELAYS)
def test_a_relay_feeds_a_framer_the_bytes_it_forwarded(base: type) -> None:
    got: list[tuple[int, bytes]] = []
    framer = w.Framer(lambda t, body, truncated: got.append((t, body)), lambda t: True, lambda t, n: None)
    relay = _recording_relay(base)()
    relay.relay_write = lambda data: relay.seen.append(("write", data))
    relay.relay_feed = framer.feed
    message = b"Q" + struct.pack("!I", 13) + b"SELECT 1\0"
    for part in (message[:3], message[3:] + message[:1], message[1:]):
        relay.data_received(part)
    assert got == [(ord("Q"), b"SELECT 1\0")] * 2
    assert b"".join(v for _, v in relay.seen) == message * 2  # type: ignore[misc]


@pytest.mark.parametrize("base", RELAYS)
def test_a_relay_lets_a_write_error_through(base: type) -> None:
    relay = _recording_relay(base)()

    def closed(data: bytes) -> None:
        raise RuntimeError("transport closed")

    relay.relay_write = closed
    relay.relay_feed = lambda data: relay.seen.append(("feed", data))
    with pytest.raises(RuntimeError, match="transport closed"):
        relay.data_received(b"x")
    assert relay.seen == []  # not audited: it was not forwarded
