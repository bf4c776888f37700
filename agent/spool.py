"""The agent's durable outbox: a SQLite (WAL) file that holds events until the collector has acknowledged them.

Delivery is at-least-once: the shipper reads the oldest events, sends them, and deletes them only after the
collector answered that they are durable; the collector stores each event id once, so the result is exactly once.

The spool is bounded (events and bytes). What happens at the bound is the configured overflow policy, and every
event it costs is counted in `dropped` and reported in heartbeats:
- `drop_oldest` (default): make room by deleting the oldest events;
- `drop_newest`: refuse the new events;
- `block`: refuse the new events with SpoolFull, so that the source can wait (a log tailer keeps its place).

Sources that read from something with a position (a log file) save that position with `put(events, cursor=…)`
in the same transaction as the events, so that a crash can neither lose nor repeat what they read.

Several processes may use one spool file (WAL, busy timeout); a writer takes the lock for its whole transaction.

Every JSON event put is chained in that same transaction: the spool appends `chain_seq` (its events counted from 1)
and `chain_prev` (the SHA-256 of the previous event's bytes as queued) to the object, whichever process writes, so
that the collector can tell when events were deleted, edited or replayed between here and there. The chain's head
is committed with the events it covers: a crash can neither skip a number nor use one twice.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.errors import SpoolError, SpoolFull

try:
    from agent import _chain
except ImportError:  # pragma: no cover - the extension is optional (see setup.py)
    _chain = None  # type: ignore[assignment]

OverflowPolicy = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOW_POLICIES: tuple[str, ...] = ("drop_oldest", "drop_newest", "block")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    queued_at REAL NOT NULL,
    n INTEGER NOT NULL DEFAULT 1  -- events in the row: above 1, a packed row (see Spool.put_packed)
);
CREATE TABLE IF NOT EXISTS dead (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chain (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
INSERT OR IGNORE INTO chain (id, seq, hash) VALUES (1, 0, '');
INSERT OR IGNORE INTO counters (name, value) VALUES
    ('depth', 0), ('bytes', 0), ('queued', 0), ('acked', 0), ('dropped', 0), ('dead', 0), ('heartbeats', 0);
"""


_ROWS_PER_INSERT = 333  # 999 parameters: the most that every SQLite build accepts in one statement


@functools.lru_cache(maxsize=8)
def _insert_sql(rows: int) -> str:
    return "INSERT INTO outbox (event_id, body, queued_at) VALUES " + ",".join(["(?, ?, ?)"] * rows)


@dataclass(frozen=True, slots=True)
class SpooledEvent:
    seq: int
    event_id: str
    body: bytes
    queued_at: float


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int  # events waiting for the collector
    bytes: int  # their encoded size
    queued: int  # events ever put
    acked: int  # events the collector acknowledged
    dropped: int  # events the overflow policy discarded
    dead: int  # events the collector refused as malformed (kept in the dead table)
    oldest_queued_at: float | None


class Spool:
    """A bounded, crash-safe outbox of encoded events. Thread-safe; several processes may share the file."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_events: int = 5_000_000,
        max_bytes: int = 1 << 30,
        overflow: OverflowPolicy = "drop_oldest",
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise SpoolError(f"spool -> overflow: must be one of {', '.join(OVERFLOW_POLICIES)}, not {overflow!r}")
        if max_events <= 0 or max_bytes <= 0:
            raise SpoolError("spool -> max_events and max_bytes: must be positive")
        self.path = Path(path)
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.overflow = overflow
        self._clock = clock
        self._lock = threading.Lock()
        self.new_data = threading.Event()  # set on every put, for an in-process shipper to wake on
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=60000")
            # 16 KiB pages: a few hundred ~1 KB events per commit rewrite fewer page headers and b-tree pages
            # (about 1 µs of system time less per event). Only a new file takes it; WAL fixes a file's page size.
            self._db.execute("PRAGMA page_size=16384")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)  # idempotent: every statement is IF NOT EXISTS / OR IGNORE
            self._add_packed_rows()
        except sqlite3.DatabaseError as e:
            raise SpoolError(
                f"spool {self.path}: cannot open ({e}); move the file aside to start a new spool, "
                "and keep it for investigation"
            ) from e

    # -- writing --------------------------------------------------------------------------------------------

    def put(self, items: Iterable[tuple[str, bytes]], *, cursor: tuple[str, str] | None = None) -> int:
        """Queue encoded events `(event_id, body)`, and optionally save a source cursor, in one transaction.

        Returns how many were queued; fewer than given only under `drop_newest`. Raises SpoolFull under `block`
        when they do not fit (nothing is written then, not even the cursor).
        """
        given = list(items)
        now = self._clock()
        with self._lock, self._transaction():
            n = self._put(given, now)
            if cursor is not None:
                self._db.execute(
                    "INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (cursor[0], cursor[1], now),
                )
        if n:
            self.new_data.set()
        return n

    def put_packed(self, payloads: bytes | Sequence[bytes]) -> int:
        """`put` for frames of events packed by `pack_items` (the proxy's spool process receives them so), all in
        one transaction.

        With the C chain (agent/_chain.c), each frame of several events is chained in C and stored as one packed
        row: its events keep seqs of their own (the row's seq and the n - 1 after it, which no other row takes),
        and `peek`, `ack` and `dead_letter` see them as events like any other. One row instead of one per event
        costs SQLite about a third of the CPU. Frames that would pass the spool's bound go through `put`'s path,
        row by row, where the overflow policy decides.
        """
        frames = [payloads] if isinstance(payloads, (bytes, bytearray, memoryview)) else list(payloads)
        if _chain is None:
            return self.put([item for frame in frames for item in unpack_items(frame)])
        now = self._clock()
        with self._lock, self._transaction():
            seq, prev = self._db.execute("SELECT seq, hash FROM chain WHERE id = 1").fetchone()
            seq, prev = int(seq), str(prev)
            chained, head = [], None
            for frame in frames:
                packed, count, last = _chain.chain_packed(frame, seq, prev)
                chained.append((packed, count))
                if last is not None:
                    head = seq, prev = last
            depth, nbytes = self._depth()
            total = sum(count for _, count in chained)
            if depth + total > self.max_events or nbytes + sum(len(p) for p, _ in chained) > self.max_bytes:
                n = self._put([item for frame in frames for item in unpack_items(frame)], now)
            else:
                added = 0
                for packed, count in chained:
                    if count == 1:
                        [(event_id, body)] = unpack_items(packed)
                        self._db.execute("INSERT INTO outbox (event_id, body, queued_at) VALUES (?, ?, ?)",
                                         (event_id, body, now))
                        added += len(body)
                    elif count > 1:
                        first = self._next_seq()
                        (id_length,) = _LEN.unpack_from(packed, 0)
                        self._db.execute(
                            "INSERT INTO outbox (seq, event_id, body, queued_at, n) VALUES (?, ?, ?, ?, ?)",
                            (first, packed[4:4 + id_length].decode(), packed, now, count))
                        # The row's events take seqs first .. first + count - 1: no later row may.
                        self._db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'",
                                         (first + count - 1,))
                        added += len(packed)
                if total:
                    self._bump(depth=total, bytes=added, queued=total)
                if head is not None:
                    self._db.execute("UPDATE chain SET seq = ?, hash = ? WHERE id = 1", head)
                n = total
        if n:
            self.new_data.set()
        return n

    def _next_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return (int(row[0]) if row is not None else 0) + 1

    def _insert(self, values: list[object], count: int, added: int, last: tuple[int, str] | None) -> None:
        """Rows whose values are flat (id, body, queued_at, id, …), in statements of `_ROWS_PER_INSERT` rows."""
        step = _ROWS_PER_INSERT * 3
        for start in range(0, len(values), step):  # a statement per slice: less CPU than a row each
            part = values[start:start + step]
            self._db.execute(_insert_sql(len(part) // 3), part)
        if count:
            self._bump(depth=count, bytes=added, queued=count)
        if last is not None:
            self._db.execute("UPDATE chain SET seq = ?, hash = ? WHERE id = 1", last)

    def _put(self, given: list[tuple[str, bytes]], now: float) -> int:
        """The rows of `put`, in the caller's transaction; how many were queued."""
        head = self._db.execute("SELECT seq, hash FROM chain WHERE id = 1").fetchone()
        rows, last = chain(given, int(head[0]), str(head[1]))
        depth, nbytes = self._depth()
        over_events = depth + len(rows) - self.max_events
        over_bytes = nbytes + sum(len(b) for _, b in rows) - self.max_bytes
        if over_events > 0 or over_bytes > 0:
            origin = {id(body): i for i, (_, body) in enumerate(rows)}
            kept = self._overflow(rows, over_events, over_bytes)
            if len(kept) != len(rows):  # number again what is kept, so that refused events leave no gap
                rows, last = chain([given[origin[id(body)]] for _, body in kept], int(head[0]), str(head[1]))
        if rows:
            self._insert([v for eid, body in rows for v in (eid, body, now)], len(rows),
                         sum(len(b) for _, b in rows), last)
        return len(rows)

    def _overflow(self, rows: list[tuple[str, bytes]], over_events: int, over_bytes: int) -> list[tuple[str, bytes]]:
        if self.overflow == "block":
            raise SpoolFull(
                f"spool {self.path} is full ({self.max_events} events / {self.max_bytes} bytes); "
                "the collector has not taken events for a while: check the agent's connection to it"
            )
        if self.overflow == "drop_newest":
            kept: list[tuple[str, bytes]] = []
            depth, nbytes = self._depth()
            for eid, body in rows:
                if depth + 1 > self.max_events or nbytes + len(body) > self.max_bytes:
                    continue
                kept.append((eid, body))
                depth += 1
                nbytes += len(body)
            self._bump(dropped=len(rows) - len(kept))
            return kept
        # drop_oldest: new events that alone exceed the bound lose their own oldest first.
        if len(rows) > self.max_events:
            self._bump(dropped=len(rows) - self.max_events)
            rows = rows[-self.max_events :]
            depth, nbytes = self._depth()
            over_events = depth + len(rows) - self.max_events
            over_bytes = nbytes + sum(len(b) for _, b in rows) - self.max_bytes
        n_rows, n_drop, freed = 0, 0, 0
        cur = self._db.execute("SELECT n, length(body) FROM outbox ORDER BY seq")
        for n, length in cur:  # a packed row's events go together
            if n_drop >= over_events and freed >= over_bytes:
                break
            n_rows += 1
            n_drop += n
            freed += length
        cur.close()
        if n_rows:
            self._db.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (n_rows,)
            )
            self._bump(depth=-n_drop, bytes=-freed, dropped=n_drop)
        if freed < over_bytes:  # the spool is empty and the batch alone is too large
            keep: list[tuple[str, bytes]] = []
            room = self.max_bytes
            for eid, body in reversed(rows):
                if len(body) <= room:
                    keep.append((eid, body))
                    room -= len(body)
            self._bump(dropped=len(rows) - len(keep))
            rows = keep[::-1]
        return rows

    # -- reading and acknowledging --------------------------------------------------------------------------

    def peek(self, limit: int, max_bytes: int | None = None) -> list[SpooledEvent]:
        """The oldest events, at most `limit` of them and (beyond the first) at most `max_bytes` in total."""
        with self._lock:
            cur = self._db.execute(
                "SELECT seq, event_id, body, queued_at, n FROM outbox ORDER BY seq LIMIT ?", (limit,)
            )
            out: list[SpooledEvent] = []
            total = 0
            for seq, eid, body, queued_at, n in cur:
                events = [(eid, bytes(body))] if n == 1 else unpack_items(bytes(body))
                if out and n > 1 and (len(out) + n > limit or (
                        max_bytes is not None and total + sum(len(e) for _, e in events) > max_bytes)):
                    break  # a packed row is returned whole (acknowledged whole, it leaves whole), or first
                for i, (event_id, event) in enumerate(events):
                    if len(out) >= limit or (max_bytes is not None and out and total + len(event) > max_bytes):
                        cur.close()
                        return out
                    out.append(SpooledEvent(seq + i, event_id, event, queued_at))
                    total += len(event)
            cur.close()
            return out

    def ack(self, seqs: Sequence[int]) -> int:
        """Delete events the collector acknowledged; returns how many were still there."""
        if not seqs:
            return 0
        with self._lock, self._transaction():
            n, freed = self._delete(seqs)
            self._bump(depth=-n, bytes=-freed, acked=n)
        return n

    def dead_letter(self, refused: Sequence[tuple[int, str]]) -> int:
        """Move events the collector refused as malformed aside, with its reason; they are never resent."""
        if not refused:
            return 0
        now = self._clock()
        with self._lock, self._transaction():
            reasons = dict(refused)
            self._unpack_rows(list(reasons), whole_too=True)
            marks = ",".join("?" * len(reasons))
            self._db.execute(
                f"INSERT OR IGNORE INTO dead (seq, event_id, body, reason, dead_at) "
                f"SELECT seq, event_id, body, '', ? FROM outbox WHERE seq IN ({marks})",
                (now, *reasons),
            )
            self._db.executemany("UPDATE dead SET reason = ? WHERE seq = ?", [(r, s) for s, r in reasons.items()])
            n, freed = self._delete(list(reasons))
            self._bump(depth=-n, bytes=-freed, dead=n)
        return n

    def dead_letters(self, limit: int = 100) -> list[tuple[str, str]]:
        """The most recent refused events as `(event_id, reason)`."""
        with self._lock:
            return list(self._db.execute("SELECT event_id, reason FROM dead ORDER BY seq DESC LIMIT ?", (limit,)))

    # -- cursors and counters -------------------------------------------------------------------------------

    def cursor(self, name: str) -> str | None:
        """The position a source saved with its last `put`."""
        with self._lock:
            row = self._db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def next_heartbeat_number(self) -> int:
        """A counter that only goes up for the life of the spool file (heartbeats carry it)."""
        with self._lock, self._transaction():
            self._bump(heartbeats=1)
            return int(self._db.execute("SELECT value FROM counters WHERE name = 'heartbeats'").fetchone()[0])

    def stats(self) -> SpoolStats:
        with self._lock:
            # One read transaction, so that the counters and the oldest event come from the same moment even
            # while another process writes.
            self._db.execute("BEGIN")
            try:
                c = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
                oldest = self._db.execute("SELECT queued_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
            finally:
                self._db.execute("COMMIT")
        return SpoolStats(
            depth=c["depth"],
            bytes=c["bytes"],
            queued=c["queued"],
            acked=c["acked"],
            dropped=c["dropped"],
            dead=c["dead"],
            oldest_queued_at=None if oldest is None else float(oldest[0]),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _depth(self) -> tuple[int, int]:
        rows = dict(self._db.execute("SELECT name, value FROM counters WHERE name IN ('depth', 'bytes')").fetchall())
        return int(rows["depth"]), int(rows["bytes"])

    def _delete(self, seqs: Sequence[int]) -> tuple[int, int]:
        """Delete events by seq: (events deleted, bytes freed). A packed row goes when all its events do; one
        that keeps some is unpacked into rows of its own first."""
        if not seqs:
            return 0, 0
        self._unpack_rows(seqs, whole_too=False)
        n = freed = 0
        for start in range(0, len(seqs), 500):
            chunk = list(seqs[start : start + 500])
            marks = ",".join("?" * len(chunk))
            row = self._db.execute(
                f"SELECT coalesce(sum(n), 0), coalesce(sum(length(body)), 0) FROM outbox WHERE seq IN ({marks})",
                chunk,
            ).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)
            n += int(row[0])
            freed += int(row[1])
        return n, freed

    def _unpack_rows(self, seqs: Sequence[int], *, whole_too: bool) -> None:
        """Packed rows holding any of `seqs` become one row per event, under the same seqs (`whole_too`: also
        those holding only events in `seqs`)."""
        wanted = set(seqs)
        if not wanted:
            return
        rows = self._db.execute(
            "SELECT seq, event_id, body, queued_at, n FROM outbox WHERE n > 1 AND seq <= ? AND seq + n > ?",
            (max(wanted), min(wanted)),
        ).fetchall()
        for seq, _eid, body, queued_at, n in rows:
            members = set(range(seq, seq + n))
            if not members & wanted or (members <= wanted and not whole_too):
                continue
            events = unpack_items(bytes(body))
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._db.executemany("INSERT INTO outbox (seq, event_id, body, queued_at) VALUES (?, ?, ?, ?)",
                                 [(seq + i, eid, event, queued_at) for i, (eid, event) in enumerate(events)])
            self._bump(bytes=sum(len(event) for _, event in events) - len(body))

    def _add_packed_rows(self) -> None:
        """A spool file made before packed rows gets their column (every row of it holds one event)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "n" not in columns:
            try:
                self._db.execute("ALTER TABLE outbox ADD COLUMN n INTEGER NOT NULL DEFAULT 1")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):  # another process sharing the file added it meanwhile
                    raise

    def _bump(self, **deltas: int) -> None:
        self._db.executemany(
            "UPDATE counters SET value = value + ? WHERE name = ?",
            [(v, k) for k, v in deltas.items() if v],
        )


_LEN = struct.Struct("!I")


def pack_items(items: list[tuple[str, bytes]]) -> bytes:
    """`(4-byte id length, id, 4-byte body length, body)*`: events as `put_packed` takes them."""
    head = _LEN.pack
    parts = []
    for event_id, body in items:
        raw = event_id.encode()
        parts += (head(len(raw)) + raw + head(len(body)), body)
    return b"".join(parts)


def unpack_items(payload: bytes) -> list[tuple[str, bytes]]:
    items = []
    pos = 0
    unpack = _LEN.unpack_from
    while pos < len(payload):
        (n,) = unpack(payload, pos)
        event_id = payload[pos + 4:pos + 4 + n].decode()
        pos += 4 + n
        (m,) = unpack(payload, pos)
        items.append((event_id, payload[pos + 4:pos + 4 + m]))
        pos += 4 + m
    return items


def chain(rows: list[tuple[str, bytes]], seq: int, prev: str) -> tuple[list[tuple[str, bytes]], tuple[int, str] | None]:
    """`rows` with `chain_seq` and `chain_prev` appended to each JSON object, numbered on from `seq` after the
    event whose hash is `prev`; and the new head (number, hash), or None when nothing was chained. A body that
    is not a JSON object (only a faulty source writes one; the collector refuses it) is left as it is."""
    out: list[tuple[str, bytes]] = []
    link = prev.encode()
    chained_any = False
    sha256 = hashlib.sha256
    for eid, body in rows:
        if body[:1] != b"{" or body[-1:] != b"}":
            trimmed = body.strip()
            if trimmed[:1] != b"{" or trimmed[-1:] != b"}":
                out.append((eid, body))
                continue
            body = trimmed
        seq += 1
        sep = b"" if body == b"{}" else b","
        if link:
            chained = b'%b%b"chain_seq":%d,"chain_prev":"%b"}' % (body[:-1], sep, seq, link)
        else:
            chained = b'%b%b"chain_seq":%d}' % (body[:-1], sep, seq)
        link = sha256(chained).hexdigest().encode()
        chained_any = True
        out.append((eid, chained))
    return out, (seq, link.decode()) if chained_any else None


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
