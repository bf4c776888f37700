"""The event store: idempotent, durable batch inserts and filtered reads over SQLAlchemy Core.

An event id is stored once: a batch that arrives again (the agent did not see the acknowledgement) inserts
nothing new and reports its events as duplicates. `insert` returns after the commit, and the engine is opened
with durable commits (collector/db.py), so an acknowledgement built from its answer means "on disk".
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent.events import Envelope, encode
from collector.db import events


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


class EventStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._insert = sqlite_insert if self._sqlite else pg_insert
        # SQLite has one writer at a time; queueing here beats retrying on SQLITE_BUSY.
        self._write_lock = threading.Lock() if self._sqlite else None

    def insert(self, batch: Sequence[Envelope], *, agent: str, received_at: dt.datetime | None = None) -> InsertResult:
        """Store `batch` as sent by the credential `agent`; events already stored are left as they are."""
        if not batch:
            return InsertResult([], 0)
        now = received_at or dt.datetime.now(dt.timezone.utc)
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for ev in batch:
            if ev.id in seen:
                continue
            seen.add(ev.id)
            if ev.agent_id != agent:
                ev = msgspec.structs.replace(ev, agent_id=agent)
            rows.append(
                {
                    "event_id": ev.id,
                    "kind": ev.__struct_config__.tag,
                    "ts": ev.ts,
                    "received_at": now,
                    "agent": agent,
                    "host": ev.host,
                    "source_type": ev.source.type,
                    "os_user": ev.actor.os_user,
                    "db_user": ev.actor.db_user,
                    "staff_id": ev.actor.staff_id,
                    "body": encode(ev).decode(),
                }
            )
        stmt = (
            self._insert(events)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(events.c.event_id)
        )
        if self._write_lock is not None:
            with self._write_lock, self.engine.begin() as conn:
                inserted = set(conn.scalars(stmt, rows).all())
        else:
            with self.engine.begin() as conn:
                inserted = set(conn.scalars(stmt, rows).all())
        ordered = [r["event_id"] for r in rows if r["event_id"] in inserted]
        return InsertResult(ordered, len(batch) - len(ordered))

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
