"""The event store: idempotent, durable batch inserts and filtered reads over SQLAlchemy Core.

An event id is stored once: a batch that arrives again (the agent did not see the acknowledgement) inserts
nothing new and reports its events as duplicates. `insert` returns after the commit, and the engine is opened
with durable commits (collector/db.py), so an acknowledgement built from its answer means "on disk".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import Engine, select

from agent.events import Envelope, encode
from collector.db import events
from collector.ledger import event_digest, micros
from collector.store_write import GroupCommit, Row, Then, pg_copy_insert, sqlite_insert, write_then


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event_id: str
    kind: str
    ts: dt.datetime
    received_at: dt.datetime
    agent: str
    body: str


@dataclass(frozen=True, slots=True)
class InsertResult:
    inserted: list[str]  # event ids new to the store, in batch order
    duplicates: int
    found: list[Any] = field(default_factory=list)  # what `then` returned, run in the write's transaction


class EventStore:
    def __init__(self, engine: Engine, *, digests: bool = True) -> None:
        self.engine = engine
        self.digests = digests  # made for the ledger (collector/ledger.py); not while integrity is off
        # SQLite has one writer at a time: queue the batches and commit the waiting ones together.
        writer = sqlite_insert if engine.dialect.name == "sqlite" else pg_copy_insert
        self._writes = GroupCommit(engine, writer) if engine.dialect.name == "sqlite" else None
        self._writer = writer

    def insert(self, batch: Sequence[Envelope], *, agent: str, received_at: dt.datetime | None = None,
               then: Then | None = None) -> InsertResult:
        """Store `batch` as sent by the credential `agent`; events already stored are left as they are. `then`
        runs in the same transaction once the rows are written, given the ids inserted (the integrity checks:
        their state then commits with the events, in one commit)."""
        if not batch:
            return InsertResult([], 0)
        rows = event_rows(batch, agent=agent, received_at=received_at or dt.datetime.now(dt.timezone.utc),
                          digests=self.digests)
        if self._writes is not None:
            inserted, found = self._writes.write(rows, then)
        else:
            with self.engine.begin() as conn:
                inserted, found = write_then(conn, self._writer, rows, then)
        ordered = [r[0] for r in rows if r[0] in inserted]
        return InsertResult(ordered, len(batch) - len(ordered), found)

    def query(
        self,
        *,
        kind: str | None = None,
        agent: str | None = None,
        staff_id: str | None = None,
        host: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        after_seq: int | None = None,
        limit: int = 100,
    ) -> list[StoredEvent]:
        """Events in ingest order, filtered; `after_seq` pages on from the last `seq` seen."""
        q = select(events.c.seq, events.c.event_id, events.c.kind, events.c.ts, events.c.received_at,
                   events.c.agent, events.c.body)
        if kind is not None:
            q = q.where(events.c.kind == kind) if not kind.endswith("*") else q.where(
                events.c.kind.startswith(kind[:-1], autoescape=True))  # "_" and "%" are not wildcards
        if agent is not None:
            q = q.where(events.c.agent == agent)
        if staff_id is not None:
            q = q.where(events.c.staff_id == staff_id)
        if host is not None:
            q = q.where(events.c.host == host)
        if since is not None:
            q = q.where(events.c.ts >= since)
        if until is not None:
            q = q.where(events.c.ts < until)
        if after_seq is not None:
            q = q.where(events.c.seq > after_seq)
        q = q.order_by(events.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [StoredEvent(*row) for row in conn.execute(q)]

    def count(self) -> int:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(events)) or 0)


def event_rows(batch: Sequence[Envelope], *, agent: str, received_at: dt.datetime, digests: bool = True) -> list[Row]:
    """The `events` rows of `batch` in its order (columns as store_write.COLUMNS), the first of each id only.
    The body is the event as re-encoded, with `agent_id` set from the credential; the digest is the ledger's
    (`event_digest`), made here once so that sealing need not read the event back (None without `digests`:
    such a row is sealed from its columns)."""
    rows: list[Row] = []
    seen: set[str] = set()
    received_us = micros(received_at)
    for ev in batch:
        if ev.id in seen:
            continue
        seen.add(ev.id)
        if ev.agent_id != agent:
            ev = msgspec.structs.replace(ev, agent_id=agent)
        actor = ev.actor
        kind = ev.__struct_config__.tag
        body = encode(ev)
        digest = event_digest((ev.id, kind, micros(ev.ts), received_us, agent, ev.host, ev.source.type,
                               actor.os_user, actor.db_user, actor.staff_id), body) if digests else None
        rows.append((ev.id, kind, ev.ts, received_at, agent, ev.host, ev.source.type, actor.os_user, actor.db_user,
                     actor.staff_id, body.decode(), digest))
    return rows
