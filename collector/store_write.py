"""How a batch of event rows reaches the `events` table on each database, fast and exactly once.

Both paths insert with "ON CONFLICT (event_id) DO NOTHING … RETURNING event_id", so an id already stored (a
re-sent batch, or the same id in two concurrent batches) is stored once and reported as a duplicate, and the
answer names exactly the ids this call inserted.

- PostgreSQL: binary COPY into a per-connection temporary staging table, then one INSERT … SELECT in batch
  order. COPY skips the parsing of a 10,000-parameter statement that dominated the multi-row INSERT.
- SQLite: one writer at a time, so concurrent batches are committed together (`GroupCommit`): the thread that
  holds the write turn writes every batch queued so far in one transaction, and each caller returns only after
  the commit that holds its rows. One fsync then serves many acknowledgements.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from collector.db import events

# The columns a row carries, in order; `seq` is left to the database.
COLUMNS: tuple[str, ...] = ("event_id", "kind", "ts", "received_at", "agent", "host", "source_type", "os_user",
                            "db_user", "staff_id", "body", "digest")
Row = tuple[Any, ...]
Writer = Callable[[Connection, Sequence[Row]], set[str]]
# What runs in the transaction that wrote a batch, given the ids it inserted (the ingest's integrity checks,
# collector/integrity_watch.py); what it returns is handed back to the batch's caller once the batch commits.
Then = Callable[[Connection, set[str]], list[Any]]

_STAGE = "custos_events_stage"
_PG_TYPES = ["int4", "text", "text", "timestamptz", "timestamptz", "text", "text", "text", "text", "text", "text",
             "text", "bytea"]
_COLS = ", ".join(COLUMNS)
_PG_CREATE_STAGE = (
    "SET LOCAL client_min_messages = warning; "  # no "already exists, skipping" notice each time
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (ord int4, event_id text, kind text, ts timestamptz, "
    "received_at timestamptz, agent text, host text, source_type text, os_user text, db_user text, staff_id text, "
    "body text, digest bytea) ON COMMIT DELETE ROWS"
)
_PG_COPY = f"COPY {_STAGE} (ord, {_COLS}) FROM STDIN (FORMAT BINARY)"
_PG_MOVE = (
    f"INSERT INTO {events.name} ({_COLS}) SELECT {_COLS} FROM {_STAGE} ORDER BY ord "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


def pg_copy_insert(conn: Connection, rows: Sequence[Row]) -> set[str]:
    """Insert `rows` through a binary COPY into the staging table; the ids that were new to the store."""
    driver = conn.connection.driver_connection
    with driver.cursor() as cur:  # type: ignore[union-attr]
        # Every time, not once per connection: a rolled-back transaction also rolls back the table's creation.
        # One round trip for both (no parameters: the simple protocol takes several statements).
        cur.execute(_PG_CREATE_STAGE)
        with cur.copy(_PG_COPY) as copy:
            copy.set_types(_PG_TYPES)
            for i, row in enumerate(rows):
                copy.write_row((i, *row))
        cur.execute(_PG_MOVE)
        return {r[0] for r in cur.fetchall()}


# SQLite allows 32,766 parameters in one statement (since 3.32); 12 a row.
_SQLITE_CHUNK = 2_000


def sqlite_insert(conn: Connection, rows: Sequence[Row]) -> set[str]:
    """Insert `rows` with multi-row INSERTs on the driver's cursor; the ids that were new to the store."""
    # The exact text SQLAlchemy stores for a time (and compares with in reads); a TypeDecorator always has one.
    to_text: Callable[[Any], str] = (
        events.c.ts.type.dialect_impl(conn.dialect).bind_processor(conn.dialect))  # type: ignore[assignment]
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    inserted: set[str] = set()
    try:
        for start in range(0, len(rows), _SQLITE_CHUNK):
            chunk = rows[start:start + _SQLITE_CHUNK]
            params: list[Any] = []
            received: dict[Any, str] = {}
            for r in chunk:
                at = received.get(r[3])
                if at is None:
                    at = received[r[3]] = to_text(r[3])
                params += (r[0], r[1], to_text(r[2]), at, *r[4:])
            marks = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
            cur.execute(f"INSERT INTO {events.name} ({_COLS}) VALUES {marks} "
                        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id", params)
            inserted.update(r[0] for r in cur.fetchall())
    finally:
        cur.close()
    return inserted


def write_then(conn: Connection, writer: Writer, rows: Sequence[Row], then: Then | None) -> tuple[set[str], list[Any]]:
    """`writer`'s rows, then `then` in the same transaction: the ids inserted, and what `then` returned."""
    inserted = writer(conn, rows)
    return inserted, ([] if then is None else then(conn, inserted))


@dataclass(eq=False, slots=True)
class _Job:
    rows: Sequence[Row]
    then: Then | None = None
    done: bool = False
    inserted: set[str] = field(default_factory=set)
    found: list[Any] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommit:
    """Serialises writers on one database and commits the batches that queued up meanwhile together.

    No thread of its own: a caller that gets the write turn writes for everyone queued (the leader), the
    others find their batch committed when their turn comes. If a group fails, each of its batches is retried
    alone, so one batch's failure is never another's.
    """

    def __init__(self, engine: Engine, writer: Writer, *, max_rows: int = 50_000) -> None:
        self.engine = engine
        self.writer = writer
        self.max_rows = max_rows
        self._queue: list[_Job] = []
        self._queue_lock = threading.Lock()
        self._turn = threading.Lock()
        self.groups = 0  # transactions committed; with `batches`, shows how much was grouped
        self.batches = 0

    @property
    def pending(self) -> int:
        """Batches queued for the next transaction."""
        with self._queue_lock:
            return len(self._queue)

    def insert(self, rows: Sequence[Row]) -> set[str]:
        """Store `rows`; returns after the commit that holds them, with the ids that were new."""
        return self.write(rows)[0]

    def write(self, rows: Sequence[Row], then: Then | None = None) -> tuple[set[str], list[Any]]:
        """`insert`, running `then` in the same transaction after the rows are written; also what it returned."""
        job = _Job(rows, then)
        with self._queue_lock:
            self._queue.append(job)
        while not job.done:
            with self._turn:
                if job.done:
                    break
                self._write(self._take())
        if job.error is not None:
            raise job.error
        return job.inserted, job.found

    def _take(self) -> list[_Job]:
        """The queued jobs, oldest first, up to `max_rows` rows (at least one job)."""
        with self._queue_lock:
            n, size = 0, 0
            for job in self._queue:
                if n and size + len(job.rows) > self.max_rows:
                    break
                n, size = n + 1, size + len(job.rows)
            group, self._queue = self._queue[:n], self._queue[n:]
        return group

    def _write(self, group: list[_Job]) -> None:
        try:
            with self.engine.begin() as conn:
                results = [write_then(conn, self.writer, job.rows, job.then) for job in group]
        except Exception as e:  # noqa: BLE001 - handed to the callers whose rows these were
            if len(group) == 1:
                group[0].error, group[0].done = e, True
            else:
                for job in group:
                    self._write([job])
            return
        except BaseException:
            for job in group:  # a caller whose rows were taken must not wait for ever
                job.error = RuntimeError("the write was interrupted; send the batch again")
                job.done = True
            raise
        for job, (inserted, found) in zip(group, results):
            job.inserted, job.found, job.done = inserted, found, True
        self.groups += 1
        self.batches += len(group)
