"""`custos verify`: every stored record against the block that sealed it, every block against the chain and the
ledger file, naming each record changed, deleted or inserted and each block rewritten or missing.

- A record whose columns no longer give its leaf was **changed** (an event's leaf is recomputed from its columns,
  not taken from its stored digest, so editing both shows too); so was an event whose stored digest no longer
  matches its columns (the digest edited alone); a leaf without its record: **deleted**; a
  record inside a block's range without a leaf: **inserted**.
- A block whose leaves no longer give its Merkle root, or whose root is not the hash of its header, was altered;
  one that does not name the root before it breaks the chain; a gap in block numbers is a block deleted.
- A block whose root differs from the ledger file's line was **rewritten** after it was sealed (records and
  seals made consistent again, which only the copy outside the database can show); a block the file records
  and the database lacks was deleted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from collector.db import alerts, events, ledger_blocks
from collector.ledger import (
    ALERT_COLUMNS,
    EVENT_COLUMNS,
    GENESIS,
    KINDS,
    Block,
    Leaf,
    block_of,
    block_root,
    digest_leaf,
    fetch_rows,
    leaf_of,
    merkle_root,
    read_ledger_file,
    stored_event_digest,
    unpack_leaves,
)


@dataclass(frozen=True, slots=True)
class Problem:
    what: str  # changed | deleted | inserted | block
    kind: str  # event | alert | block
    key: int  # events.seq, alerts.id or the block number
    block: int
    detail: str

    def __str__(self) -> str:
        if self.kind == "block":
            return f"block {self.block}: {self.detail}"
        return f"{self.what}: {self.kind} {self.key} ({self.detail}), sealed range of block {self.block}"


@dataclass
class Report:
    blocks: int = 0
    records: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


def _rows(conn: Connection, b: Block) -> Iterator[tuple[bytes, tuple[object, ...], bytes | None]]:
    """The records of `b`'s ranges: (kind, its columns as EVENT_COLUMNS or ALERT_COLUMNS, its stored digest)."""
    for row in fetch_rows(conn, select(*EVENT_COLUMNS, events.c.digest).where(
            events.c.seq > b.event_after, events.c.seq <= b.event_to).order_by(events.c.seq)):
        yield b"e", tuple(row[:-1]), row[-1]
    for row in fetch_rows(conn, select(*ALERT_COLUMNS).where(alerts.c.id > b.alert_after,
                                                             alerts.c.id <= b.alert_to).order_by(alerts.c.id)):
        yield b"a", tuple(row), None


def _name(kind: bytes, row: tuple[object, ...] | None) -> str:
    if row is None:
        return "no longer stored"
    return f"id {row[1]}"


def _recomputed(row: tuple[object, ...]) -> bytes | None:
    try:
        return stored_event_digest(row)
    except (ValueError, TypeError, OverflowError):  # a time column made into something that is not a time
        return None


def _mismatch(kind: bytes, row: tuple[object, ...], stored: bytes | None, sealed: Leaf) -> str | None:
    """Why the record `row` no longer matches its leaf `sealed`, or None when it does."""
    key = int(row[0])  # type: ignore[call-overload]
    digest = _recomputed(row) if kind == b"e" else None
    if sealed.kind == b"E":
        if digest is None or digest_leaf(key, digest).digest != sealed.digest:
            return "differs from what was sealed"
    elif leaf_of(kind, row).digest != sealed.digest:
        return "differs from what was sealed"
    if stored is not None and bytes(stored) != digest:
        return "its stored digest no longer matches its columns: the digest was edited"
    return None


def check_records(conn: Connection, b: Block, leaves: list[Leaf], report: Report) -> None:
    sealed = {(b"e" if leaf.kind == b"E" else leaf.kind, leaf.key): leaf for leaf in leaves}
    seen: set[tuple[bytes, int]] = set()
    for kind, row, stored in _rows(conn, b):
        report.records += 1
        key = (kind, int(row[0]))  # type: ignore[call-overload]
        seen.add(key)
        want = sealed.get(key)
        if want is None:
            report.problems.append(Problem("inserted", KINDS[kind], key[1], b.block_no,
                                           f"{_name(kind, row)}: stored inside the block's range, never sealed"))
        elif (why := _mismatch(kind, row, stored, want)) is not None:
            report.problems.append(Problem("changed", KINDS[kind], key[1], b.block_no, f"{_name(kind, row)}: {why}"))
    for kind, key in sorted(set(sealed) - seen, key=lambda k: (k[0], k[1])):
        report.problems.append(Problem("deleted", KINDS[kind], key, b.block_no, "sealed, no longer stored"))


def check_block(b: Block, leaves: list[Leaf] | None, prev: Block | None, report: Report) -> None:
    def bad(detail: str) -> None:
        report.problems.append(Problem("block", "block", b.block_no, b.block_no, detail))

    if prev is not None and b.block_no != prev.block_no + 1:
        bad(f"blocks {prev.block_no + 1}–{b.block_no - 1} are missing from the database")
    if prev is None and b.block_no == 1 and b.prev_root != GENESIS:
        bad("the first block does not start the chain")
    if prev is not None and b.prev_root != prev.root:
        bad(f"does not follow block {prev.block_no}: the chain was broken")
    if prev is not None and (b.event_after, b.alert_after) != (prev.event_to, prev.alert_to):
        bad(f"does not start where block {prev.block_no} ended")
    if leaves is None:
        bad("its seals cannot be read")
    elif merkle_root([leaf.digest for leaf in leaves]) != b.merkle_root:
        bad("its seals no longer give its Merkle root: they were altered")
    if block_root(b.block_no, b.sealed_at, b.event_after, b.event_to, b.alert_after, b.alert_to, b.records,
                  b.merkle_root, b.prev_root) != b.root:
        bad("its root is not the hash of its contents: the block was altered")


def verify(engine: Engine, *, since: dt.datetime | None = None, ledger_file: str | Path | None = None) -> Report:
    """Check the ledger (blocks sealed at or after `since`, and the chain link into the first of them)."""
    report = Report()
    outside = read_ledger_file(Path(ledger_file)) if ledger_file else None
    with engine.connect() as conn:
        q = select(ledger_blocks.c.block_no).order_by(ledger_blocks.c.block_no)
        if since is not None:
            q = q.where(ledger_blocks.c.sealed_at >= since)
        numbers = [int(n) for n in conn.scalars(q)]
        prev: Block | None = None
        if numbers and numbers[0] > 1:
            row = conn.execute(select(ledger_blocks).where(ledger_blocks.c.block_no < numbers[0])
                               .order_by(ledger_blocks.c.block_no.desc()).limit(1)).first()
            prev = block_of(row) if row is not None else None
        if since is None and numbers and numbers[0] > 1 and prev is None:
            report.problems.append(Problem("block", "block", 1, 1, f"blocks 1–{numbers[0] - 1} are missing from "
                                                                   "the database"))
        for n in numbers:
            row = conn.execute(select(ledger_blocks).where(ledger_blocks.c.block_no == n)).first()
            if row is None:  # deleted while we read
                continue
            b = block_of(row)
            try:
                leaves: list[Leaf] | None = unpack_leaves(row.leaves)
            except ValueError:
                leaves = None
            report.blocks += 1
            check_block(b, leaves, prev, report)
            if outside is not None:
                line = outside.get(b.block_no)
                if line is None:
                    report.problems.append(Problem("block", "block", n, n, "is not in the ledger file"))
                elif line.get("root") != b.root:
                    report.problems.append(Problem(
                        "block", "block", n, n,
                        f"its root differs from the ledger file's (events {b.event_after + 1}–{b.event_to}, alerts "
                        f"{b.alert_after + 1}–{b.alert_to}): the block was rewritten in the database after it "
                        "was sealed"))
            if leaves is not None:
                check_records(conn, b, leaves, report)
            prev = b
        if outside is not None:
            stored = set(numbers)
            for n in sorted(set(outside) - stored):
                if since is None or dt.datetime.fromisoformat(outside[n]["sealed_at"]) >= since:
                    report.problems.append(Problem("block", "block", n, n, "is in the ledger file but missing "
                                                                           "from the database"))
    return report
