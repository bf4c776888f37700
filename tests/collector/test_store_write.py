"""The event store's write paths on each database (binary COPY through a staging table on PostgreSQL, multi-row
INSERTs on SQLite) and group commit: every id stored once whoever sends it and however often, each caller told
exactly which of its ids were new, and a caller answered only once its rows are committed."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence

import msgspec
import pytest
from sqlalchemy import Connection, Engine, func, select

from agent.events import Envelope, decode
from collector.db import events
from collector.store import EventStore, event_rows
from collector.store_write import GroupCommit, Row, pg_copy_insert, sqlite_insert
from tests.helpers.api import query_event
from tests.helpers.procs import wait_for


def _stored_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(events.c.event_id).order_by(events.c.seq)))


def _writer(engine: Engine):  # type: ignore[no-untyped-def]
    return sqlite_insert if engine.dialect.name == "sqlite" else pg_copy_insert


def test_a_batch_sent_again_inserts_only_its_new_events_in_batch_order(engine: Engine) -> None:
    store = EventStore(engine)
    first = [query_event() for _ in range(300)]
    assert store.insert(first, agent="proxy-1").inserted == [e.id for e in first]
    again = first[100:] + [query_event() for _ in range(50)] + first[:10]
    result = store.insert(again, agent="proxy-1")
    assert result.inserted == [e.id for e in again[200:250]]
    assert result.duplicates == 210
    assert _stored_ids(engine) == [e.id for e in first] + result.inserted


def test_stored_rows_read_back_as_sent_with_the_credentials_agent(engine: Engine) -> None:
    # Times with another offset and with no fraction: stored as UTC, found again by time filters.
    when = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    sent = [msgspec.structs.replace(query_event(), ts=when + dt.timedelta(minutes=i), agent_id="claims-to-be-x")
            for i in range(3)]
    store = EventStore(engine)
    store.insert(sent, agent="proxy-1", received_at=dt.datetime(2026, 3, 2, 9, 30, 0, 5, tzinfo=dt.timezone.utc))
    got = store.query(since=dt.datetime(2026, 3, 2, 9, 1, tzinfo=dt.timezone.utc),
                      until=dt.datetime(2026, 3, 2, 9, 3, tzinfo=dt.timezone.utc))
    assert [s.event_id for s in got] == [sent[1].id, sent[2].id]
    for s, e in zip(got, sent[1:]):
        assert s.ts == e.ts and s.ts.tzinfo is not None and s.agent == "proxy-1" and s.kind == "db.query"
        assert s.received_at == dt.datetime(2026, 3, 2, 9, 30, 0, 5, tzinfo=dt.timezone.utc)
        assert decode(s.body) == msgspec.structs.replace(e, agent_id="proxy-1")


def test_concurrent_batches_sharing_ids_store_each_once_and_credit_it_to_one_caller(engine: Engine) -> None:
    shared = [query_event() for _ in range(400)]
    batches = [shared[k * 50:] + [query_event() for _ in range(100)] for k in range(6)]
    store = EventStore(engine)
    answers: list[list[str]] = []
    lock = threading.Lock()

    def send(batch: Sequence[Envelope]) -> None:
        inserted = store.insert(batch, agent="proxy-1").inserted
        with lock:
            answers.append(inserted)

    threads = [threading.Thread(target=send, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    credited = [i for a in answers for i in a]
    expected = {e.id for b in batches for e in b}
    assert len(answers) == 6
    assert sorted(credited) == sorted(expected)  # each id new to exactly one caller
    assert sorted(_stored_ids(engine)) == sorted(expected)


class _HeldWriter:
    """The real writer for the engine, held inside its transaction until released, so a test can look at the
    store while a group is being written."""

    def __init__(self, engine: Engine) -> None:
        self.write = _writer(engine)
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: Connection, rows: Sequence[Row]) -> set[str]:
        inserted = self.write(conn, rows)
        self.inside.set()
        self.release.wait(60)
        return inserted


def test_group_commit_answers_each_caller_after_the_commit_that_holds_its_rows(engine: Engine) -> None:
    writer = _HeldWriter(engine)
    group = GroupCommit(engine, writer)
    now = dt.datetime.now(dt.timezone.utc)
    batches = [event_rows([query_event() for _ in range(20)], agent="proxy-1", received_at=now) for _ in range(5)]
    answered: dict[int, set[str]] = {}
    seen_on_answer: dict[int, int] = {}

    def send(k: int) -> None:
        answered[k] = group.insert(batches[k])
        ids = [r[0] for r in batches[k]]
        with engine.connect() as conn:  # what another reader sees of this batch the moment its caller is answered
            seen_on_answer[k] = int(conn.scalar(
                select(func.count()).select_from(events).where(events.c.event_id.in_(ids))) or 0)

    first = threading.Thread(target=send, args=(0,))
    first.start()
    assert writer.inside.wait(30)  # the first batch is inside its transaction, not committed
    others = [threading.Thread(target=send, args=(k,)) for k in range(1, 5)]
    for t in others:
        t.start()
    wait_for(lambda: group.pending == 4, 30, "the other four batches to queue behind the first")
    assert not answered and _stored_ids(engine) == []
    writer.release.set()
    for t in [first, *others]:
        t.join(60)
    assert answered == {k: {r[0] for r in batches[k]} for k in range(5)}
    assert seen_on_answer == {k: 20 for k in range(5)}
    assert group.groups == 2 and group.batches == 5  # the four that waited went in one transaction
    assert sorted(_stored_ids(engine)) == sorted(r[0] for b in batches for r in b)


def test_a_batch_that_fails_in_a_group_fails_alone(engine: Engine) -> None:
    writer = _HeldWriter(engine)
    group = GroupCommit(engine, writer)
    now = dt.datetime.now(dt.timezone.utc)
    good = [event_rows([query_event() for _ in range(10)], agent="proxy-1", received_at=now) for _ in range(3)]
    bad = [r[:5] + (None,) + r[6:] for r in event_rows([query_event()], agent="proxy-1", received_at=now)]  # no host
    outcome: dict[int, object] = {}

    def send(k: int, rows: list[Row]) -> None:
        try:
            outcome[k] = group.insert(rows)
        except Exception as e:  # noqa: BLE001 - the test looks at what each caller got
            outcome[k] = e

    holder = threading.Thread(target=send, args=(0, good[0]))
    holder.start()
    assert writer.inside.wait(30)
    rest = [threading.Thread(target=send, args=(k, rows)) for k, rows in ((1, good[1]), (2, bad), (3, good[2]))]
    for t in rest:
        t.start()
    wait_for(lambda: group.pending == 3, 30, "three batches to queue behind the first")
    writer.release.set()
    for t in [holder, *rest]:
        t.join(60)
    assert isinstance(outcome[2], Exception)
    assert {k: outcome[k] for k in (0, 1, 3)} == {k: {r[0] for r in rows} for k, rows in
                                                   ((0, good[0]), (1, good[1]), (3, good[2]))}
    assert sorted(_stored_ids(engine)) == sorted(r[0] for b in good for r in b)
