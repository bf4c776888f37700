from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import SpoolFull
from agent.spool import Spool


def items(n: int, start: int = 0, size: int = 10) -> list[tuple[str, bytes]]:
    return [(f"e{i}", b"x" * size) for i in range(start, start + n)]


def test_spool_keeps_events_until_acknowledged(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put(items(5))
        batch = spool.peek(3)
        assert [e.event_id for e in batch] == ["e0", "e1", "e2"]
        assert spool.stats().depth == 5  # peeking removes nothing
        spool.ack([e.seq for e in batch])
        assert [e.event_id for e in spool.peek(10)] == ["e3", "e4"]
        st = spool.stats()
        assert (st.depth, st.acked, st.queued) == (2, 3, 5)


def test_spool_survives_reopening(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put(items(3), cursor=("log", "inode=1,offset=300"))
    with Spool(tmp_path / "s.db") as spool:
        assert [e.event_id for e in spool.peek(10)] == ["e0", "e1", "e2"]
        assert spool.cursor("log") == "inode=1,offset=300"


def test_drop_oldest_makes_room_and_counts_every_dropped_event(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_events=4) as spool:
        spool.put(items(3))
        spool.put(items(3, start=3))
        assert [e.event_id for e in spool.peek(10)] == ["e2", "e3", "e4", "e5"]
        st = spool.stats()
        assert (st.depth, st.dropped) == (4, 2)


def test_drop_newest_refuses_what_does_not_fit_and_counts_it(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_events=4, overflow="drop_newest") as spool:
        assert spool.put(items(3)) == 3
        assert spool.put(items(3, start=3)) == 1
        assert [e.event_id for e in spool.peek(10)] == ["e0", "e1", "e2", "e3"]
        assert spool.stats().dropped == 2


def test_block_refuses_whole_batch_and_keeps_the_cursor_where_it_was(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_bytes=50, overflow="block") as spool:
        spool.put(items(4), cursor=("log", "1"))
        with pytest.raises(SpoolFull, match="check the agent's connection"):
            spool.put(items(2, start=4), cursor=("log", "2"))
        assert spool.cursor("log") == "1"
        assert spool.stats().depth == 4
        assert spool.stats().dropped == 0


def test_byte_bound_drops_oldest_until_the_new_events_fit(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_bytes=100) as spool:
        spool.put(items(10, size=10))
        spool.put(items(2, start=10, size=15))
        st = spool.stats()
        assert st.bytes <= 100
        assert st.dropped == 3
        assert [e.event_id for e in spool.peek(100)][-2:] == ["e10", "e11"]


def test_dead_letters_keep_the_collectors_reason(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put(items(3))
        seqs = [e.seq for e in spool.peek(3)]
        spool.dead_letter([(seqs[1], "unknown event kind")])
        assert spool.dead_letters() == [("e1", "unknown event kind")]
        st = spool.stats()
        assert (st.depth, st.dead) == (2, 1)


def test_peek_respects_the_byte_budget_but_always_returns_one(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        spool.put(items(5, size=100))
        assert len(spool.peek(10, max_bytes=250)) == 2
        assert len(spool.peek(10, max_bytes=10)) == 1
