"""Each agent's hash chain, judged on ingest: events deleted from a spool, an edited or forged spool, a chain that
goes backwards or starts again are alerts naming the agent; a clean chain, resent batches included, is not."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlalchemy import Engine, select

from agent.events import encode
from agent.runtime import spool_events
from agent.spool import Spool
from agent.spool import chain as spool_chain
from collector import chain
from collector.alerts import AlertStore
from collector.chain import Head, Link, follow
from collector.db import agent_chains
from collector.ingest import ParsedBatch, parse_batch
from tests.helpers.api import Served, batch, query_event, served

T0 = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.timezone.utc)


def link(seq: int, prev: str | None = None, digest: str | None = None, *, new: bool = True) -> Link:
    return Link(f"id{seq}-{digest}", seq, prev, digest or f"h{seq}", new, T0)


def walk(*links: Link, head: Head | None = None, refused: int = 0) -> list[str]:
    return [f.what for f in follow(head, links, refused)[1]]


def test_a_chain_that_goes_on_is_quiet() -> None:
    assert walk(link(1), link(2, "h1"), link(3, "h2")) == []
    assert walk(link(8, "h7"), head=Head(7, "h7", "x")) == []


def test_a_skipped_number_is_a_gap() -> None:
    assert walk(link(1), link(2, "h1"), link(5, "h4")) == ["gap"]


def test_a_first_event_beyond_one_is_a_gap_unless_sent_again() -> None:
    assert walk(link(3, "h2")) == ["gap"]
    assert walk(link(3, "h2", new=False)) == []


def test_a_number_naming_another_hash_is_a_fork() -> None:
    assert walk(link(1), link(2, "forged")) == ["fork"]


def test_a_number_already_accepted_arriving_as_a_new_event_is_a_fork() -> None:
    assert walk(link(4, "h3", "other"), head=Head(4, "h4", "x")) == ["fork"]


def test_lower_numbers_are_backwards_and_one_is_a_restart() -> None:
    assert walk(link(2, "h1"), head=Head(9, "h9", "x")) == ["backwards"]
    assert walk(link(1), link(2, "h1"), head=Head(9, "h9", "x")) == ["restart"]


def test_events_sent_again_pass_unjudged() -> None:
    assert walk(link(2, "h1", new=False), link(3, "h2", new=False), link(4, "h3"), head=Head(3, "h3", "x")) == []


def test_the_newest_event_judged_again_through_an_overtaking_resend_is_not_a_fork() -> None:
    assert walk(link(4, "h3", "h4"), head=Head(4, "h4", "x")) == []


def test_numbers_of_refused_events_are_not_a_gap() -> None:
    assert walk(link(1), link(3, "h2"), refused=1) == []
    assert walk(link(1), link(4, "h3"), refused=1) == ["gap"]


# -- against a real collector, with a real agent spool ---------------------------------------------------------


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "collector", db_url) as s:
        yield s


def queue(spool: Spool, n: int) -> None:
    spool_events(spool, [query_event() for _ in range(n)])


def ship(api: Served, spool: Spool, limit: int = 1000) -> None:
    """What the shipper does: send the spooled bytes as they are, then drop what was acknowledged."""
    sent = spool.peek(limit)
    r = api.post(batch(*(e.body for e in sent)))
    assert r.status_code == 200, r.text
    assert not r.json()["rejected"]
    spool.ack([e.seq for e in sent])


def chain_alerts(api: Served) -> list[tuple[str, str, int]]:
    return [(a.rule_id, a.group_key, a.measures["seq"]) for a in AlertStore(api.engine).list()
            if a.rule_id.startswith("custos.chain_")]


def test_a_clean_chain_and_a_resent_batch_raise_nothing(api: Served, tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        queue(spool, 5)
        sent = spool.peek(5)
        for _ in range(2):  # the first acknowledgement was lost: the same batch again
            assert api.post(batch(*(e.body for e in sent))).status_code == 200
        spool.ack([e.seq for e in sent])
        queue(spool, 3)
        ship(api, spool)
    assert chain_alerts(api) == []
    assert len(api.stored()) == 8


def test_events_deleted_from_the_spool_are_a_gap(api: Served, tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        queue(spool, 3)
        ship(api, spool)
        queue(spool, 5)
        with sqlite3.connect(path) as db:  # the insider removes two events before they are shipped
            db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT 2)")
        ship(api, spool)
    assert chain_alerts(api) == [("custos.chain_gap", "agent-1", 6)]


def test_an_edited_spool_is_a_fork(api: Served, tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        queue(spool, 4)
        with sqlite3.connect(path) as db:  # the insider rewrites whose query it was
            db.execute("UPDATE outbox SET body = CAST(replace(body, 'alice', 'bob__') AS BLOB) WHERE seq = 2")
        ship(api, spool)
    assert chain_alerts(api) == [("custos.chain_fork", "agent-1", 3)]


def test_a_copy_of_the_spool_replayed_with_new_events_goes_backwards(api: Served, tmp_path: Path) -> None:
    path, copy = tmp_path / "spool.db", tmp_path / "copy.db"
    with Spool(path) as spool:
        queue(spool, 2)
        ship(api, spool)
    shutil.copy(path, copy)  # an old copy of the spool, kept aside
    with Spool(path) as spool:
        queue(spool, 4)
        ship(api, spool)
    with Spool(copy) as old:  # later, forged events written into the copy and sent in the agent's name
        queue(old, 3)
        ship(api, old)
    assert chain_alerts(api) == [("custos.chain_backwards", "agent-1", n) for n in (3, 4, 5)]


def test_a_new_spool_under_an_old_credential_restarts_the_chain(api: Served, tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        queue(spool, 3)
        ship(api, spool)
    with Spool(tmp_path / "reinstalled.db") as spool:  # the agent re-installed with its old credential
        queue(spool, 2)
        ship(api, spool)
    assert chain_alerts(api) == [("custos.chain_restart", "agent-1", 1)]


def test_events_without_a_chain_are_stored_and_not_judged(api: Served) -> None:
    assert api.post_events(query_event(), query_event()).status_code == 200
    assert chain_alerts(api) == []
    assert len(api.stored()) == 2


# -- one pass, one statement --------------------------------------------------------------------------------------


def spooled(n: int, head: tuple[int, str] | None = None) -> tuple[ParsedBatch, tuple[int, str]]:
    """A batch of `n` events chained as a spool chains them, on from `head`; and the head after it."""
    rows = [(str(i), encode(query_event())) for i in range(n)]
    out, new_head = spool_chain(rows, *(head or (0, "")))
    assert new_head is not None
    return parse_batch(b'{"events":[' + b",".join(body for _, body in out) + b"]}", 1000), new_head


def stored_head(engine: Engine, agent: str) -> tuple[int, str]:
    with engine.connect() as conn:
        row = conn.execute(select(agent_chains.c.last_seq, agent_chains.c.last_hash)
                           .where(agent_chains.c.agent == agent)).one()
    return int(row[0]), row[1]


def test_a_chain_that_goes_on_is_followed_in_one_pass_as_follow_would() -> None:
    parsed, (seq, digest) = spooled(5)
    batch = chain.chained(parsed.pieces, parsed.events)
    head = chain.advance(None, batch)
    assert head is not None and (head.seq, head.hash) == (seq, digest)
    assert head == chain.follow(None, chain.links(batch, [e.id for _, e in parsed.events]))[0]
    gap = chain.chained(parsed.pieces, parsed.events[:2] + parsed.events[3:])
    assert chain.advance(None, gap) is None  # left to `follow`, which names the gap
    assert walk(*chain.links(gap, [e.id for _, e in parsed.events])) == ["gap"]


def test_a_head_another_collector_moved_on_is_not_overwritten(engine: Engine) -> None:
    first, head1 = spooled(3)
    ids = [e.id for _, e in first.events]
    with engine.begin() as conn:
        mine, found = chain.judge(conn, "agent-1", chain.chained(first.pieces, first.events), ids)
    assert found == [] and mine is not None and stored_head(engine, "agent-1") == head1
    second, head2 = spooled(2, head1)  # stored by another collector, which this one's head does not know of
    with engine.begin() as conn:
        chain.judge(conn, "agent-1", chain.chained(second.pieces, second.events), [e.id for _, e in second.events])
    third, _ = spooled(2, head2)
    with engine.begin() as conn:  # going on from the stale head would not follow: nothing is written
        stale = chain.go_on(conn, "agent-1", mine, chain.chained(third.pieces, third.events),
                            [e.id for _, e in third.events])
    assert stale is None and stored_head(engine, "agent-1") == head2
    with engine.begin() as conn:  # from the head as stored, the same batch goes on in one statement
        current, _ = chain.judge(conn, "agent-1", chain.Chained([], []), [])
        assert current is not None
        moved = chain.go_on(conn, "agent-1", current, chain.chained(third.pieces, third.events),
                            [e.id for _, e in third.events])
    assert moved is not None and moved.seq == head2[0] + 2
    assert stored_head(engine, "agent-1") == (moved.seq, moved.hash)
