"""Spool throughput: events/s into and out of the agent's outbox, in batches of 1000, against a baseline.

The baseline is the least any SQLite outbox can do for the same rows: one plain `executemany` INSERT per batch
in its own transaction, same file system, same journal mode and synchronous setting, measured in the same run.
The ratio spool / baseline is what to compare between machines; the absolute figure is what the agent's
sources can rely on (target: at least 50,000 events/s with synchronous=FULL).

    PYTHONPATH=. python bench/spool_put.py [--batches 100] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.events import Actor, DbQuery, DbQueryPayload, Source, encode, new_event
from agent.spool import Spool, pack_items

BATCH = 1000


def sample_batch() -> list[tuple[str, bytes]]:
    events = [
        new_event(
            DbQuery,
            DbQueryPayload(session_id=f"s{i % 7}", statement_type="SELECT", fingerprint="9f2c41d07a3b8e65",
                           statement="SELECT name, phone FROM customers WHERE id = $1", database="core",
                           tables_read=["customers"], columns=["name", "phone"], rows=1, duration_ms=0.4),
            source=Source(type="proxy", name="pg-main"),
            actor=Actor(db_user="app", os_user="alice"),
        )
        for i in range(BATCH)
    ]
    return [(e.id, encode(e)) for e in events]


def baseline(path: Path, batches: list[list[tuple[str, bytes]]], synchronous: str) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, "
               "body BLOB NOT NULL, queued_at REAL NOT NULL)")
    start = time.perf_counter()
    for rows in batches:
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO outbox (event_id, body, queued_at) VALUES (?, ?, ?)",
                       [(eid, body, now) for eid, body in rows])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return len(batches) * BATCH / elapsed


def spool_put(path: Path, batches: list[list[tuple[str, bytes]]], synchronous: str, **bounds: int) -> float:
    with Spool(path, synchronous=synchronous, **bounds) as spool:  # type: ignore[arg-type]
        if bounds:  # start at the bound, so that every put pays for the overflow policy
            for rows in batches:
                spool.put(rows)
        start = time.perf_counter()
        for rows in batches:
            spool.put(rows)
        elapsed = time.perf_counter() - start
    return len(batches) * BATCH / elapsed


FRAME = 250  # events per frame of the proxy's event loop (its batch_loop), four frames per transaction


def frames(rows: list[tuple[str, bytes]]) -> list[bytes]:
    return [pack_items(rows[i:i + FRAME]) for i in range(0, len(rows), FRAME)]


def spool_put_packed(path: Path, batches: list[list[tuple[str, bytes]]], synchronous: str) -> float:
    """What the proxy's spool process does: frames of packed events, a packed row each (Spool.put_packed)."""
    packed = [frames(rows) for rows in batches]
    with Spool(path, synchronous=synchronous) as spool:  # type: ignore[arg-type]
        start = time.perf_counter()
        for parts in packed:
            spool.put_packed(parts)
        elapsed = time.perf_counter() - start
    return len(batches) * BATCH / elapsed


def spool_peek_ack(path: Path, batches: list[list[tuple[str, bytes]]], synchronous: str,
                   packed: bool = False) -> float:
    with Spool(path, synchronous=synchronous) as spool:  # type: ignore[arg-type]
        for rows in batches:
            if packed:
                spool.put_packed(frames(rows))
            else:
                spool.put(rows)
        start = time.perf_counter()
        n = 0
        while batch := spool.peek(BATCH):
            spool.ack([e.seq for e in batch])
            n += len(batch)
        elapsed = time.perf_counter() - start
    return n / elapsed


def best_of(repeat: int, run: Callable[[Path], float]) -> float:
    results = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="custos-bench-spool-") as d:
            results.append(run(Path(d) / "spool.sqlite3"))
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100, help="batches of 1000 events per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per figure (the median is shown)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    template = sample_batch()
    # Distinct ids per batch, as a real source produces; the bodies are the same size as the template's.
    batches = [[(f"{i:08d}{eid[8:]}", body) for eid, body in template] for i in range(args.batches)]

    results: dict[str, dict[str, float]] = {}
    for sync in ("FULL", "NORMAL"):
        base = best_of(args.repeat, lambda p: baseline(p, batches, sync))
        put = best_of(args.repeat, lambda p: spool_put(p, batches, sync))
        bound = best_of(args.repeat, lambda p: spool_put(p, batches, sync, max_events=args.batches * BATCH))
        ship = best_of(args.repeat, lambda p: spool_peek_ack(p, batches, sync))
        packed = best_of(args.repeat, lambda p: spool_put_packed(p, batches, sync))
        ship_packed = best_of(args.repeat, lambda p: spool_peek_ack(p, batches, sync, packed=True))
        results[sync] = {"baseline_insert": base, "put": put, "put_at_bound_drop_oldest": bound,
                         "peek_and_ack": ship, "put_packed": packed, "peek_and_ack_packed": ship_packed}
    size = sum(len(b) for _, b in template) / BATCH
    print(f"spool throughput, batches of {BATCH} events of {size:.0f} bytes, {args.batches} batches, "
          f"median of {args.repeat}")
    print(f"{'synchronous':<12}{'figure':<28}{'events/s':>12}{'vs baseline':>13}")
    for sync, figures in results.items():
        for name, value in figures.items():
            print(f"{sync:<12}{name:<28}{value:>12,.0f}{value / figures['baseline_insert']:>12.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"event_bytes": size, "batch": BATCH, "results": results}, indent=2))


if __name__ == "__main__":
    main()
