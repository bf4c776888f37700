"""Packed rows: a frame of events the proxy's spool process stores as one row (Spool.put_packed). Its events must
behave as events stored one per row do: same bytes, own seqs, acknowledged, refused and dropped one by one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import spool as spool_module
from agent.spool import Spool, pack_items

pytestmark = pytest.mark.skipif(spool_module._chain is None, reason="the C extension was not built")  # noqa: SLF001


def items(start: int, n: int) -> list[tuple[str, bytes]]:
    return [(f"id-{i:04d}", json.dumps({"kind": "test", "n": i}).encode()) for i in range(start, start + n)]


def rows(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT seq, n FROM outbox ORDER BY seq"))


def consistent(spool: Spool) -> list[tuple[int, str, bytes]]:
    """What peek returns, after checking that the spool's counters agree with it."""
    events = spool.peek(1_000_000)
    stats = spool.stats()
    assert stats.depth == len(events)
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), "seqs are unique and in order"
    return [(e.seq, e.event_id, e.body) for e in events]


def test_a_packed_frame_is_one_row_whose_events_read_as_put_would_store_them(tmp_path: Path) -> None:
    with Spool(tmp_path / "packed.db") as packed, Spool(tmp_path / "plain.db") as plain:
        for spool in (packed, plain):
            spool.put(items(0, 2))
        assert packed.put_packed(pack_items(items(2, 5))) == 5
        plain.put(items(2, 5))
        for spool in (packed, plain):
            spool.put(items(7, 1))
        assert consistent(packed) == consistent(plain)  # same seqs, ids and chained bytes
    assert rows(tmp_path / "packed.db") == [(1, 1), (2, 1), (3, 5), (8, 1)]


def test_acknowledging_part_of_a_packed_row_keeps_the_rest_under_their_seqs(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put_packed(pack_items(items(0, 6)))
        before = consistent(spool)
        assert spool.ack([1, 2, 4]) == 3
        assert consistent(spool) == [e for e in before if e[0] in (3, 5, 6)]
        assert spool.stats().bytes == sum(len(body) for _, _, body in consistent(spool))
        assert spool.ack([3, 5, 6]) == 3
        assert consistent(spool) == [] and spool.stats().bytes == 0 and spool.stats().acked == 6


def test_a_whole_packed_row_acknowledged_leaves_at_once(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put_packed(pack_items(items(0, 4)))
        spool.put_packed(pack_items(items(4, 3)))
        assert spool.ack([e.seq for e in spool.peek(4)]) == 4
        assert [seq for seq, _, _ in consistent(spool)] == [5, 6, 7]
        assert spool.stats().bytes == len(pack_items(spool_module.unpack_items(
            sqlite3.connect(tmp_path / "s.db").execute("SELECT body FROM outbox").fetchone()[0])))
    assert rows(tmp_path / "s.db") == [(5, 3)]


def test_an_event_refused_inside_a_packed_row_is_dead_lettered_alone(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put_packed(pack_items(items(0, 4)))
        before = consistent(spool)
        assert spool.dead_letter([(2, "payload.n: bad")]) == 1
        assert consistent(spool) == [e for e in before if e[0] != 2]
        assert spool.dead_letters() == [("id-0001", "payload.n: bad")]
        assert spool.stats().dead == 1


def test_peek_stops_inside_a_packed_row_at_its_limits(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put_packed(pack_items(items(0, 5)))
        assert [e.seq for e in spool.peek(3)] == [1, 2, 3]
        two = sum(len(e.body) for e in spool.peek(2))
        assert [e.seq for e in spool.peek(10, max_bytes=two)] == [1, 2]


def test_drop_oldest_drops_a_packed_row_whole_and_counts_its_events(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_events=6, overflow="drop_oldest") as spool:
        spool.put_packed(pack_items(items(0, 4)))
        spool.put_packed(pack_items(items(4, 4)))  # 8 > 6: the first row's four events make room
        events = consistent(spool)
        assert [json.loads(body)["n"] for _, _, body in events] == [4, 5, 6, 7]
        assert spool.stats().dropped == 4


def test_seqs_go_on_after_a_packed_row_across_reopening(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put_packed(pack_items(items(0, 3)))
        spool.ack([1, 2, 3])
    with Spool(tmp_path / "s.db") as spool:
        spool.put(items(3, 1))
        assert [e.seq for e in spool.peek(10)] == [4]


def test_a_spool_file_from_before_packed_rows_takes_them(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, body BLOB NOT NULL,"
            " queued_at REAL NOT NULL);"
            "INSERT INTO outbox (event_id, body, queued_at) VALUES ('old-1', CAST('{\"a\":1}' AS BLOB), 1.0);")
    with Spool(path) as spool:
        spool.put_packed(pack_items(items(0, 2)))
        assert [(e.seq, e.event_id) for e in spool.peek(10)] == [(1, "old-1"), (2, "id-0000"), (3, "id-0001")]


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(st.sampled_from(["put", "packed"]), st.integers(1, 6)), min_size=1, max_size=8),
       st.lists(st.integers(0, 40), max_size=25), st.lists(st.integers(0, 40), max_size=5))
def test_any_mix_of_rows_acks_and_refusals_matches_a_spool_of_plain_rows(tmp_path_factory: pytest.TempPathFactory,
                                                                         puts: list[tuple[str, int]],
                                                                         acked: list[int],
                                                                         refused: list[int]) -> None:
    d = tmp_path_factory.mktemp("mix")
    with Spool(d / "packed.db") as packed, Spool(d / "plain.db") as plain:
        n = 0
        for how, k in puts:
            if how == "packed":
                packed.put_packed(pack_items(items(n, k)))
            else:
                packed.put(items(n, k))
            plain.put(items(n, k))
            n += k
        assert packed.dead_letter([(s, "bad") for s in refused]) == plain.dead_letter([(s, "bad") for s in refused])
        assert packed.ack(acked) == plain.ack(acked)
        assert consistent(packed) == consistent(plain)
        assert packed.dead_letters() == plain.dead_letters()
        p, q = packed.stats(), plain.stats()
        assert (p.depth, p.acked, p.dead, p.bytes <= q.bytes + 44 * p.depth) == (q.depth, q.acked, q.dead, True)


def test_frames_put_together_are_a_row_each_in_one_transaction(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        assert spool.put_packed([pack_items(items(0, 3)), pack_items(items(3, 1)), pack_items(items(4, 4))]) == 8
        assert [json.loads(e.body)["n"] for e in spool.peek(100)] == list(range(8))
        assert spool.stats().queued == 8
    assert rows(tmp_path / "s.db") == [(1, 3), (4, 1), (5, 4)]


def test_peek_returns_a_later_packed_row_whole_or_not_at_all(tmp_path: Path) -> None:
    """So that the shipper acknowledges rows whole, and no row has to be taken apart."""
    with Spool(tmp_path / "s.db") as spool:
        spool.put_packed([pack_items(items(0, 3)), pack_items(items(3, 4))])
        assert [e.seq for e in spool.peek(5)] == [1, 2, 3]
        spool.ack([1, 2, 3])
        assert [e.seq for e in spool.peek(5)] == [4, 5, 6, 7]
    assert rows(tmp_path / "s.db") == [(4, 4)]
