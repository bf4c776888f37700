"""The spool's hash chain: every JSON event it queues carries the next number and the hash of the event before
it, assigned in the transaction that stores it, whichever process writes and however the writer dies."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import events as ev
from agent import spool as spool_module
from agent.errors import SpoolFull
from agent.runtime import spool_events
from agent.spool import Spool, pack_items, unpack_items
from tests.helpers.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]


def heartbeat_like(n: int) -> ev.Envelope:
    return ev.new_event(ev.ParseError, ev.ParseErrorPayload(location="/var/log/x", line=n, reason="test"),
                        source=ev.Source(type="test"))


def chained(spool: Spool) -> list[tuple[int, str | None, str, bytes]]:
    """(chain_seq, chain_prev, SHA-256 of the bytes, bytes) of everything queued, oldest first."""
    out = []
    for e in spool.peek(1_000_000):
        decoded = ev.decode(e.body)
        assert decoded.chain_seq is not None, f"event {e.event_id} was queued without a chain number"
        out.append((decoded.chain_seq, decoded.chain_prev, hashlib.sha256(e.body).hexdigest(), e.body))
    return out


def assert_unbroken(links: list[tuple[int, str | None, str, bytes]], first: int = 1) -> None:
    assert [s for s, _, _, _ in links] == list(range(first, first + len(links)))
    for (_, _, digest, _), (_, prev, _, _) in zip(links, links[1:]):
        assert prev == digest


def test_every_queued_event_names_its_number_and_the_hash_of_the_one_before(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool_events(spool, [heartbeat_like(i) for i in range(3)])
        spool_events(spool, [heartbeat_like(i) for i in range(3, 5)])
        links = chained(spool)
    assert_unbroken(links)
    assert links[0][1] is None  # the first event has nothing before it
    assert len(links) == 5


def test_the_chain_goes_on_across_writers_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path) as a, Spool(path) as b:  # two connections, as two processes sharing the spool have
        for i in range(6):
            spool_events(a if i % 2 else b, [heartbeat_like(i)])
    with Spool(path) as spool:
        spool_events(spool, [heartbeat_like(9)])
        assert_unbroken(chained(spool))


def test_acknowledged_events_leave_and_the_numbers_go_on(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool_events(spool, [heartbeat_like(i) for i in range(3)])
        last = chained(spool)[-1]
        spool.ack([e.seq for e in spool.peek(3)])
        spool_events(spool, [heartbeat_like(3)])
        (seq, prev, _, _), = chained(spool)
    assert (seq, prev) == (4, last[2])


def test_a_refused_batch_uses_no_numbers(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_events=3, overflow="block") as spool:
        spool_events(spool, [heartbeat_like(i) for i in range(3)])
        with pytest.raises(SpoolFull):
            spool_events(spool, [heartbeat_like(3)])
        spool.ack([spool.peek(1)[0].seq])
        spool_events(spool, [heartbeat_like(4)])
        assert_unbroken(chained(spool), first=2)


def test_drop_newest_numbers_only_the_events_it_keeps(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_events=4, overflow="drop_newest") as spool:
        spool_events(spool, [heartbeat_like(i) for i in range(3)])
        assert spool_events(spool, [heartbeat_like(i) for i in range(3, 6)]) == 1
        assert_unbroken(chained(spool))
        assert spool.stats().dropped == 2


def test_drop_oldest_leaves_a_gap_the_collector_can_see(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_events=3) as spool:
        spool_events(spool, [heartbeat_like(i) for i in range(3)])
        spool_events(spool, [heartbeat_like(i) for i in range(3, 5)])
        links = chained(spool)
        assert spool.stats().dropped == 2
    assert [s for s, _, _, _ in links] == [3, 4, 5]  # 1 and 2 were dropped: numbers the collector never gets


def test_bodies_that_are_not_json_objects_are_queued_unchained(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put([("bad", b"not json"), ("e1", ev.encode(heartbeat_like(1)))])
        bad, good = spool.peek(2)
    assert bad.body == b"not json"
    assert json.loads(good.body)["chain_seq"] == 1


WRITER = """
import sys
from agent.runtime import spool_events
from agent.spool import Spool, pack_items
from agent import events as ev
spool = Spool(sys.argv[1], synchronous="FULL")
n = 0
while True:
    n += 1
    spool_events(spool, [ev.new_event(ev.ParseError, ev.ParseErrorPayload(location="/x", line=n, reason="w"),
                                      source=ev.Source(type="test")) for _ in range(3)])
"""


def test_a_writer_killed_mid_stream_leaves_an_unbroken_chain(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env)
    try:
        def queued() -> int:
            if not path.exists():
                return 0
            with Spool(path) as s:
                return s.stats().queued
        wait_for(lambda: queued() >= 300, 60, "the writer to queue 300 events")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Spool(path) as spool:
        spool_events(spool, [heartbeat_like(0)])
        links = chained(spool)
    assert len(links) >= 301
    assert_unbroken(links)


bodies = st.one_of(
    st.builds(lambda d: json.dumps(d, separators=(",", ":")).encode(),
              st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20)), max_size=4)),
    st.just(b"{}"), st.binary(max_size=40), st.builds(lambda b: b" \n" + b + b"\t", st.just(b'{"a":1}')),
)


@pytest.mark.skipif(spool_module._chain is None, reason="the C extension was not built")  # noqa: SLF001
@settings(deadline=None)
@given(st.lists(st.tuples(st.uuids().map(str), bodies), max_size=30), st.integers(0, 10**12),
       st.one_of(st.just(""), st.text("0123456789abcdef", min_size=64, max_size=64)))
def test_the_c_chain_writes_what_the_python_chain_writes(items: list[tuple[str, bytes]], seq: int,
                                                         prev: str) -> None:
    packed, count, head = spool_module._chain.chain_packed(pack_items(items), seq, prev)  # noqa: SLF001
    rows, last = spool_module.chain(items, seq, prev)
    assert unpack_items(packed) == rows
    assert (count, head) == (len(rows), last)


def test_a_packed_batch_is_chained_on_from_the_spools_head_and_counted(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool_events(spool, [heartbeat_like(i) for i in range(3)])
        packed = [(e.id, ev.encode(e)) for e in (heartbeat_like(i) for i in range(3, 8))]
        assert spool.put_packed(pack_items(packed)) == 5
        links = chained(spool)
        assert spool.stats().depth == 8
    assert_unbroken(links)
    assert [json.loads(body)["payload"]["line"] for *_, body in links] == list(range(8))


def test_a_packed_batch_past_the_bound_follows_the_overflow_policy(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_events=4, overflow="drop_newest") as spool:
        packed = [(e.id, ev.encode(e)) for e in (heartbeat_like(i) for i in range(6))]
        assert spool.put_packed(pack_items(packed)) == 4
        links = chained(spool)
        assert spool.stats().dropped == 2
    assert_unbroken(links)
    with Spool(tmp_path / "b.db", max_events=4, overflow="block") as spool, pytest.raises(SpoolFull):
        spool.put_packed(pack_items(packed))


def test_the_c_chain_is_built_and_used() -> None:
    """`pip install -e .` builds it (setup.py); if this fails, check that gcc, the Python headers and OpenSSL's
    headers (Debian: libssl-dev) exist."""
    assert spool_module._chain is not None  # noqa: SLF001
