"""What tamper evidence costs ingest at the foundation benchmark's rate: a real `custos serve` taking chained agent
batches the way `bench/ingest.py` sends them (several client processes, each its own agent with its own chain,
gzip'd batches of 1,000 `db.query` events), with the integrity checks off, on without sealing, and on with the
ledger sealing every second.

    PYTHONPATH=. python -m bench.sealing [--database sqlite|postgresql|both] [--clients 4] [--batches 120]
                                         [--rounds 3] [--pg postgresql://…/postgres]

Each round runs the setups one after another on fresh databases, each round starting one setup further on (the rules off, so that only ingest and
the integrity work compete), SQLite then PostgreSQL, and reports per database and setup the median over rounds
of the ingest rate (events/s of wall time), the collector's CPU time per event (psutil, user + system; its sealing process's
included when it has one) and on
PostgreSQL the server's, each against the setup without integrity checks measured in the same run. With sealing, it also reports how long after the last batch the
ledger had sealed every event.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from agent.events import encode
from agent.spool import chain
from bench.ingest import PG_ADMIN, _cpu, drive, drop_pg, fresh_pg, pg_backends
from rules.scenario import generate

SETUPS = {  # name: ([integrity] section, whether it seals)
    "integrity off": ("enabled = false\n", False),
    "chain + heartbeat checks, no sealing": ('seal_every = "1000h"\n', False),
    "checks + sealing every 1s": ('seal_every = "1s"\nseal_settle = "0s"\nseal_worker = "thread"\n', True),
    "checks + sealing every 1s, seal_worker = process": (
        'seal_every = "1s"\nseal_settle = "0s"\nseal_worker = "process"\n', True),
}


@dataclass
class Result:
    database: str
    setup: str
    events: int
    wall: float
    cpu: float  # the collector's CPU seconds while it ingested, its sealing process's included
    child_cpu: float  # of which the sealing process's
    db_cpu: float | None  # PostgreSQL's, for the collector's connections
    caught_up: float | None  # seconds after the last batch until the ledger had sealed every event


def chained_work(clients: int, batches: int, size: int) -> list[list[bytes]]:
    """Per client, its gzip'd batch bodies: `db.query` events of the synthetic bank, each with an id of its own,
    chained as that agent's spool chains them."""
    pool = [e for e in generate(seed=11, days=3).events if e.__struct_config__.tag == "db.query"]
    per = batches // clients
    work = []
    for c in range(clients):
        rows = []
        for i in range(per * size):
            e = pool[(c * 7_919 + i) % len(pool)]
            fresh = e.id[:-12].encode() + b"%04x%08x" % (c, i)
            rows.append((str(i), encode(e).replace(e.id.encode(), fresh, 1)))
        chained, _ = chain(rows, 0, "")
        work.append([gzip.compress(b'{"events":[' + b",".join(b for _, b in chained[k:k + size]) + b"]}", 6)
                     for k in range(0, len(chained), size)])
    return work


@contextmanager
def database(kind: str, work: Path, pg: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{work / 'custos.db'}"
        return
    url, name = fresh_pg(pg)
    try:
        yield url
    finally:
        drop_pg(pg, name)


def sealed_to(url: str) -> int:
    from sqlalchemy import func, select

    from collector.db import ledger_blocks, make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.coalesce(func.max(ledger_blocks.c.event_to), 0))) or 0)
    finally:
        engine.dispose()


def run_once(kind: str, setup: str, work: list[list[bytes]], pg: str) -> Result:
    from tests.helpers.procs import Collector

    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp), pg) as url:
        root = Path(tmp)
        section, seals = SETUPS[setup]
        (root / "collector.toml").write_text("[rules]\nenabled = false\n[integrity]\n" + section)
        collector = Collector(root / "c", url, config=root / "collector.toml")
        try:
            collector.upgrade()
            tokens = [collector.enroll(f"bench{i}") for i in range(len(work))]
            collector.start()
            assert collector.proc is not None
            backends = pg_backends(url) if kind == "postgresql" else None
            # each agent's first batch warms the collector up; with sealing, the clock starts once that is sealed
            warm = drive(collector.url, tokens, [w[:1] for w in work], collector.proc.pid, "warm-up")
            deadline = time.perf_counter() + 120
            while seals and sealed_to(url) < warm.items and time.perf_counter() < deadline:
                time.sleep(0.2)  # polling for the ledger to have sealed the warm-up
            children = psutil.Process(collector.proc.pid).children()
            before = _cpu([c.pid for c in children])
            run = drive(collector.url, tokens, [w[1:] for w in work], collector.proc.pid, setup, backends)
            child_cpu = sum(t - before.get(p, 0.0) for p, t in _cpu([c.pid for c in children]).items())
            n = warm.items + run.items
            caught_up = None
            if seals:
                done = time.perf_counter()
                deadline = done + 300
                while sealed_to(url) < n and time.perf_counter() < deadline:
                    time.sleep(0.2)  # polling the ledger's progress, the figure being measured
                caught_up = time.perf_counter() - done
        finally:
            collector.close()
    return Result(kind, setup, run.items, run.wall, run.cpu + child_cpu, child_cpu, run.db_cpu, caught_up)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--batch", type=int, default=1000, help="events per batch")
    ap.add_argument("--batches", type=int, default=120, help="measured batches per run, over all clients")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg", default=PG_ADMIN, help="a PostgreSQL URL allowed to create and drop databases")
    args = ap.parse_args()
    load0 = os.getloadavg()
    work = chained_work(args.clients, args.batches + args.clients, args.batch)  # one batch each to warm up
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results: list[Result] = []
    names = list(SETUPS)
    for r in range(args.rounds):
        # each round starts one setup further on, so that no setup always follows the same one (each run drops a
        # database, and PostgreSQL's checkpoint of that lands in the next run)
        order = names[r % len(names):] + names[:r % len(names)]
        for kind in kinds:
            for setup in order:
                res = run_once(kind, setup, work, args.pg)
                results.append(res)
                extra = f", sealed all {res.caught_up:.1f}s after the last batch" if res.caught_up is not None else ""
                server = f", server {res.db_cpu / res.events * 1e6:.1f} µs" if res.db_cpu is not None else ""
                if res.child_cpu:
                    server += f", of which sealing process {res.child_cpu / res.events * 1e6:.1f} µs"
                print(f"round {r + 1}: {kind}: {setup}: {res.events / res.wall:,.0f} events/s, "
                      f"{res.cpu / res.events * 1e6:.1f} µs CPU/event{server}{extra}", flush=True)
    load1 = os.getloadavg()
    print(f"\nload average {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f} at the start, "
          f"{load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f} at the end; {args.clients} clients, "
          f"{args.batches} gzip'd batches of {args.batch} per run, medians of {args.rounds} rounds")
    for kind in kinds:
        print(f"\n{kind}\n| setup | ingest (wall) | vs off | collector CPU per event | vs off | server CPU per event |"
              " sealed all | of which sealing process |")
        base_rate = base_cpu = 0.0
        for setup in SETUPS:
            mine = [x for x in results if x.database == kind and x.setup == setup]
            rate = statistics.median(x.events / x.wall for x in mine)
            cpu = statistics.median(x.cpu / x.events * 1e6 for x in mine)
            if not base_rate:
                base_rate, base_cpu = rate, cpu
            server = [x.db_cpu / x.events * 1e6 for x in mine if x.db_cpu is not None]
            caught = [x.caught_up for x in mine if x.caught_up is not None]
            child = statistics.median(x.child_cpu / x.events * 1e6 for x in mine)
            print(f"| {setup} | {rate:,.0f} events/s | {rate / base_rate:.2f}x | {cpu:.1f} µs | {cpu / base_cpu:.2f}x "
                  f"| {f'{statistics.median(server):.1f} µs' if server else ''} "
                  f"| {f'{statistics.median(caught):.1f} s after' if caught else ''} "
                  f"| {f'{child:.1f} µs' if child else ''} |")


if __name__ == "__main__":
    main()
