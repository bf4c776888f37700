"""The collector's ledger: stored events and alerts sealed into blocks, each block chained to the one before, in
the manner of CloudTrail's digest files.

A block covers the events with `seq` in (event_after, event_to] and the alerts with `id` in (alert_after,
alert_to]. The block keeps every record's leaf with its record's key, their Merkle root, the previous block's root,
and its own root over all of that. An event's digest is made once, at ingest, from the row as it is stored
(`event_digest`) and stored with it (`events.digest`); its leaf (kind "E") is the SHA-256 of the entry (kind, seq,
digest), so sealing reads only `seq` and `digest` and never the event itself. An alert's leaf, and that of an event
stored without a digest (before migration 0007; kind "e"), is the SHA-256 of its canonical bytes (`record_bytes`:
its columns, in a fixed order, as JSON). `custos verify` recomputes every leaf from the record's columns, so a
record edited after ingest shows whether or not its digest was edited with it. The roots are also appended to a
file outside the database and may be sent to syslog, so that rewriting the database's blocks as well as its records
still shows (`custos verify`, collector/verify.py).

What is sealed is what cannot change: an alert's triage status is left out (it changes by design; its history
is in `alert_history`). Records younger than `settle` seconds wait for the next block: on PostgreSQL a lower `seq`
can still be committing while a higher one is visible, and sealing past it would later look like an insertion.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import logging.handlers
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Column, Connection, Engine, Select, Text, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.exc import IntegrityError

from collector.db import UtcDateTime, alerts, events, ledger_blocks

log = logging.getLogger("custos.ledger")



class _SealedTime(ColumnElement[str]):
    """A time column as sealed: SQLite's stored text as it is; on PostgreSQL the same text made in the server
    (`to_char` in UTC, whatever the session's zone) rather than a datetime the driver builds and sealing then
    makes UTC, for every record. Other databases give the driver's datetime (made UTC in `record_bytes`)."""

    inherit_cache = True

    def __init__(self, column: Column[Any]) -> None:
        self.column = column
        self.type = Text()


@compiles(_SealedTime)
def _sealed_time_default(element: _SealedTime, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_SealedTime, "postgresql")
def _sealed_time_pg(element: _SealedTime, compiler: Any, **kw: Any) -> str:
    return f"to_char({compiler.process(element.column, **kw)} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"


def _raw(column: Column[Any]) -> Any:
    """A column as sealing reads it: time columns as text (`_SealedTime`), skipping the parse into a datetime."""
    return _SealedTime(column).label(column.name) if isinstance(column.type, UtcDateTime) else column


EVENT_COLUMNS: tuple[Any, ...] = tuple(_raw(c) for c in (
    events.c.seq, events.c.event_id, events.c.kind, events.c.ts, events.c.received_at, events.c.agent,
    events.c.host, events.c.source_type, events.c.os_user, events.c.db_user, events.c.staff_id, events.c.body))
ALERT_COLUMNS: tuple[Any, ...] = tuple(_raw(c) for c in (
    alerts.c.id, alerts.c.alert_id, alerts.c.rule_id, alerts.c.title, alerts.c.severity, alerts.c.tags,
    alerts.c.group_key, alerts.c.staff_id, alerts.c.person_name, alerts.c.team, alerts.c.ts, alerts.c.first_ts,
    alerts.c.last_ts, alerts.c.summary, alerts.c.evidence, alerts.c.measures, alerts.c.trigger_event_id,
    alerts.c.origin, alerts.c.created_at))
KINDS = {b"e": "event", b"E": "event", b"a": "alert"}
GENESIS = "0" * 64
_LEAF = struct.Struct("!cQ32s")  # kind, key, SHA-256
_encode = msgspec.json.Encoder().encode
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Leaf:
    kind: bytes  # b"e" event, b"a" alert
    key: int  # events.seq or alerts.id
    digest: bytes


@dataclass(frozen=True, slots=True)
class Block:
    block_no: int
    sealed_at: dt.datetime
    event_after: int
    event_to: int
    alert_after: int
    alert_to: int
    merkle_root: str
    prev_root: str
    root: str
    records: int

    def line(self) -> dict[str, Any]:
        """The block as one line of the ledger file."""
        return {"block": self.block_no, "sealed_at": self.sealed_at.isoformat(), "events": [self.event_after,
                self.event_to], "alerts": [self.alert_after, self.alert_to], "records": self.records,
                "merkle_root": self.merkle_root, "prev_root": self.prev_root, "root": self.root}


_TIMES = {b"e": (3, 4), b"a": (10, 11, 12, 18)}  # the time columns of EVENT_COLUMNS and ALERT_COLUMNS


def record_bytes(kind: bytes, row: Sequence[Any]) -> bytes:
    """A stored record's canonical bytes: its sealed columns as a JSON array, datetimes in UTC."""
    times = _TIMES[kind]
    if isinstance(row[times[0]], dt.datetime):  # a driver's datetime, in the session's zone
        values = list(row)
        for i in times:
            if values[i] is not None:
                values[i] = values[i].astimezone(dt.timezone.utc)
        return kind + _encode(values)
    return kind + _encode(tuple(row))


def leaf_of(kind: bytes, row: Sequence[Any]) -> Leaf:
    return Leaf(kind, int(row[0]), hashlib.sha256(b"\x00" + record_bytes(kind, row)).digest())


def leaves_of(kind: bytes, rows: Sequence[Sequence[Any]]) -> list[Leaf]:
    """`leaf_of` each row, in one loop: sealing hashes every stored record, so the per-record overhead counts."""
    if not rows or isinstance(rows[0][_TIMES[kind][0]], dt.datetime):
        return [leaf_of(kind, r) for r in rows]
    sha256, prefix = hashlib.sha256, b"\x00" + kind
    return [Leaf(kind, int(r[0]), sha256(prefix + _encode(r)).digest()) for r in rows]


def micros(at: dt.datetime) -> int:
    """A zone-aware time as microseconds since 1970 UTC: exact, and the same whatever zone it is given in."""
    return (at - EPOCH) // _MICROSECOND


def event_digest(columns: Sequence[Any], body: bytes) -> bytes:
    """An event's digest, made at ingest and recomputed by `custos verify`: the SHA-256 of its stored columns
    but `seq` (event_id, kind, ts, received_at, agent, host, source_type, os_user, db_user, staff_id; times as
    `micros`) as a JSON array, followed by its stored body's UTF-8 bytes."""
    return hashlib.sha256(b"\x00E" + _encode(columns) + body).digest()


def _utc(value: Any) -> dt.datetime:
    """A time column as sealing reads it (UTC text, or a driver's datetime) as a zone-aware datetime."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc)


def stored_event_digest(row: Sequence[Any]) -> bytes:
    """`event_digest` of a stored event, read as EVENT_COLUMNS; ValueError when a time column is not a time."""
    return event_digest((row[1], row[2], micros(_utc(row[3])), micros(_utc(row[4])), *row[5:11]),
                        str(row[11]).encode("utf-8", "surrogatepass"))


def digest_leaf(seq: int, digest: bytes) -> Leaf:
    """The leaf of an event sealed from its stored digest: the SHA-256 of its entry, so that it names the event's
    place (`seq`) as well as its content."""
    return Leaf(b"E", seq, hashlib.sha256(b"\x00" + _LEAF.pack(b"E", seq, digest)).digest())


def merkle_root(digests: Sequence[bytes]) -> str:
    """The Merkle root over leaf digests (an odd node goes up a level as it is); SHA-256 of nothing when empty."""
    level = list(digests)
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def block_root(block_no: int, sealed_at: dt.datetime, event_after: int, event_to: int, alert_after: int,
               alert_to: int, records: int, merkle: str, prev_root: str) -> str:
    header = _encode([block_no, sealed_at.astimezone(dt.timezone.utc), event_after, event_to, alert_after, alert_to,
                      records, merkle, prev_root])
    return hashlib.sha256(header).hexdigest()


def pack_leaves(leaves: Iterable[Leaf]) -> bytes:
    return b"".join(_LEAF.pack(leaf.kind, leaf.key, leaf.digest) for leaf in leaves)


def unpack_leaves(blob: bytes) -> list[Leaf]:
    """The leaves a block stored; ValueError when the blob is not a whole number of leaves."""
    if len(blob) % _LEAF.size:
        raise ValueError(f"{len(blob)} bytes is not a whole number of {_LEAF.size}-byte leaves")
    return [Leaf(k, key, d) for k, key, d in _LEAF.iter_unpack(blob)]


def block_of(row: Any) -> Block:
    return Block(int(row.block_no), row.sealed_at, int(row.event_after), int(row.event_to), int(row.alert_after),
                 int(row.alert_to), row.merkle_root, row.prev_root, row.root, len(row.leaves) // _LEAF.size)


def fetch_rows(conn: Connection, stmt: Select[Any]) -> list[tuple[Any, ...]]:
    """The rows of `stmt` as the driver gives them: sealing reads every record once, and SQLAlchemy's row objects
    would cost more than hashing them. Parameters are still bound through their types (a time on SQLite)."""
    result = conn.execute(stmt)
    try:
        return list(result.cursor.fetchall())  # type: ignore[attr-defined]
    finally:
        result.close()


def _settled_to(conn: Connection, key: Column[Any], at: Column[Any], after: int, cutoff: dt.datetime,
                limit: int) -> int:
    """The highest key of the next `limit` records after `after` up to the last one stored before `cutoff`:
    later ones wait for the next block, and no record is ever passed over."""
    newest = conn.scalar(select(func.max(key)).where(key > after, at <= cutoff))
    if newest is None or limit <= 0:
        return after
    nth = conn.scalar(select(key).where(key > after).order_by(key).offset(limit - 1).limit(1))
    return int(newest) if nth is None else min(int(newest), int(nth))


def _settled_events(conn: Connection, after: int, cutoff: dt.datetime, limit: int) -> tuple[list[tuple[Any, ...]], int]:
    """(seq, digest) of the next `limit` events after `after`, up to the last one stored before `cutoff`, and
    that last `seq` (`after` when none): later ones wait for the next block, and none is ever passed over. One
    range read of the primary key; `_settled_to` does the same for alerts in two small queries."""
    if limit <= 0:
        return [], after
    rows = fetch_rows(conn, select(events.c.seq, events.c.digest, events.c.received_at <= cutoff)
                      .where(events.c.seq > after).order_by(events.c.seq).limit(limit))
    last = next((i for i in range(len(rows) - 1, -1, -1) if rows[i][2]), -1)
    if last < 0:
        return [], after
    return [(seq, digest) for seq, digest, _ in rows[:last + 1]], int(rows[last][0])


def seal_once(engine: Engine, *, settle: float = 10.0, max_records: int = 100_000,
              now: dt.datetime | None = None) -> Block | None:
    """Seal the records stored since the last block into a new one; None when there is nothing settled to seal,
    or another process sealed this block first."""
    now = now or dt.datetime.now(dt.timezone.utc)
    cutoff = now - dt.timedelta(seconds=settle)
    # Read and hash outside any write transaction: on SQLite a read that later wants to write fails when another
    # writer (ingest) committed in between, and holding the write lock while hashing would stall ingest.
    with engine.connect() as conn:
        last = conn.execute(select(ledger_blocks.c.block_no, ledger_blocks.c.event_to, ledger_blocks.c.alert_to,
                                   ledger_blocks.c.root).order_by(ledger_blocks.c.block_no.desc()).limit(1)).first()
        block_no, event_after, alert_after, prev = (1, 0, 0, GENESIS) if last is None else (
            int(last[0]) + 1, int(last[1]), int(last[2]), str(last[3]))
        # One read of the next events, each with whether it has settled: sealing's work per event on the server
        ev_rows, event_to = _settled_events(conn, event_after, cutoff, max_records)
        in_range = (events.c.seq > event_after, events.c.seq <= event_to)
        undigested: dict[int, Leaf] = {}
        if any(d is None for _, d in ev_rows):  # stored before migration 0007: sealed from their columns
            undigested = {leaf.key: leaf for leaf in leaves_of(b"e", fetch_rows(conn, select(*EVENT_COLUMNS).where(
                *in_range, events.c.digest.is_(None)).order_by(events.c.seq)))}
        alert_to = _settled_to(conn, alerts.c.id, alerts.c.created_at, alert_after, cutoff, max_records - len(ev_rows))
        al_rows = fetch_rows(conn, select(*ALERT_COLUMNS).where(alerts.c.id > alert_after, alerts.c.id <= alert_to)
                             .order_by(alerts.c.id))
    if not ev_rows and not al_rows:
        return None
    entries, digests = _event_entries(ev_rows, undigested)
    for leaf in leaves_of(b"a", al_rows):
        entries.append(_LEAF.pack(leaf.kind, leaf.key, leaf.digest))
        digests.append(leaf.digest)
    merkle = merkle_root(digests)
    root = block_root(block_no, now, event_after, event_to, alert_after, alert_to, len(digests), merkle, prev)
    try:  # the block number is the key: of two processes sealing at once, one inserts and the other stops here
        with engine.begin() as conn:
            conn.execute(ledger_blocks.insert().values(
                block_no=block_no, sealed_at=now, event_after=event_after, event_to=event_to, alert_after=alert_after,
                alert_to=alert_to, leaves=b"".join(entries), merkle_root=merkle, prev_root=prev, root=root))
    except IntegrityError:
        log.info("ledger block %d was sealed by another process", block_no)
        return None
    return Block(block_no, now, event_after, event_to, alert_after, alert_to, merkle, prev, root, len(digests))


def _event_entries(rows: Sequence[Sequence[Any]], undigested: dict[int, Leaf]) -> tuple[list[bytes], list[bytes]]:
    """The packed leaves and their digests of events read as (seq, digest), in `seq` order: `digest_leaf` in one
    loop without a Leaf each, since this is sealing's work per event; the leaf of `undigested` for a row
    without a digest (one deleted between the two reads is left out, as if it had gone before)."""
    pack, sha256, kind = _LEAF.pack, hashlib.sha256, b"E"
    entries: list[bytes] = []
    digests: list[bytes] = []
    for seq, digest in rows:
        if digest is None:
            leaf = undigested.get(seq)
            if leaf is not None:
                entries.append(pack(leaf.kind, leaf.key, leaf.digest))
                digests.append(leaf.digest)
            continue
        leaf = sha256(b"\x00" + pack(kind, seq, digest)).digest()
        entries.append(pack(kind, seq, leaf))
        digests.append(leaf)
    return entries, digests


def blocks_after(conn: Connection, block_no: int) -> Iterator[Block]:
    q = select(ledger_blocks).where(ledger_blocks.c.block_no > block_no).order_by(ledger_blocks.c.block_no)
    for row in conn.execute(q):
        yield block_of(row)


def last_block_no(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.coalesce(func.max(ledger_blocks.c.block_no), 0))) or 0)


# -- outside the database ------------------------------------------------------------------------------------


def read_ledger_file(path: Path) -> dict[int, dict[str, Any]]:
    """The blocks a ledger file records, by number (a torn last line, from a crash mid-write, is skipped)."""
    out: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                doc = json.loads(line)
                out[int(doc["block"])] = doc
            except (ValueError, KeyError, TypeError):
                continue
    return out


def _last_in_file(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4096))
        tail = f.read().splitlines()
    for line in reversed(tail):
        try:
            return int(json.loads(line)["block"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


class Publisher:
    """Appends every sealed block's root to the ledger file (fsynced) and sends it to syslog, catching up on
    blocks a crash sealed without writing them out."""

    def __init__(self, ledger_file: str = "", syslog: str = "") -> None:
        self.path = Path(ledger_file) if ledger_file else None
        self.syslog: logging.Logger | None = None
        if syslog:
            if syslog.startswith("/"):
                address: Any = syslog
            else:
                host, _, port = syslog.rpartition(":")
                address = (host.strip("[]"), int(port))
            handler = logging.handlers.SysLogHandler(address, facility=logging.handlers.SysLogHandler.LOG_AUTH,
                                                     socktype=socket.SOCK_DGRAM)
            handler.append_nul = False
            handler.setFormatter(logging.Formatter("custos-ledger: %(message)s"))
            self.syslog = logging.getLogger(f"custos.ledger.syslog.{id(self)}")
            self.syslog.propagate = False
            self.syslog.setLevel(logging.INFO)
            self.syslog.addHandler(handler)

    def publish(self, engine: Engine, fresh: Sequence[Block]) -> None:
        if self.path is not None:
            have = _last_in_file(self.path)
            with engine.connect() as conn:
                missing = list(blocks_after(conn, have))
            if missing:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write("".join(json.dumps(b.line(), separators=(",", ":")) + "\n" for b in missing))
                    f.flush()
                    os.fsync(f.fileno())
        if self.syslog is not None:
            for b in fresh:
                self.syslog.info(json.dumps(b.line(), separators=(",", ":")))

    def close(self) -> None:
        if self.syslog is not None:
            for h in list(self.syslog.handlers):
                h.close()
                self.syslog.removeHandler(h)


def seal(engine: Engine, publisher: Publisher, *, settle: float, max_records: int) -> list[Block]:
    """Seal everything settled (in as many blocks as it takes) and publish the new roots."""
    fresh: list[Block] = []
    while (block := seal_once(engine, settle=settle, max_records=max_records)) is not None:
        fresh.append(block)
        if block.records < max_records:
            break
    publisher.publish(engine, fresh)
    return fresh
