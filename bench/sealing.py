"""What tamper evidence costs ingest: a real `custos serve` taking chained agent batches as fast as one agent
sends them, with the integrity checks off, on without sealing, and on with the ledger sealing every second.

    PYTHONPATH=. python -m bench.sealing [--events 50000] [--batch 1000] [--rounds 3] [--pg postgresql://…/postgres]

Each round runs the three setups one after another on fresh databases (the rules off, so that only ingest and
the integrity work compete), and reports, per setup, the median over rounds of the ingest rate (events/s of wall
time) and of the collector's CPU time per event, each against the setup without integrity checks measured in the
same run. With sealing, it also reports how long after the last batch the ledger had sealed everything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from agent.events import encode
from agent.spool import chain
from rules.scenario import generate

SETUPS = {  # name: ([integrity] section, whether it seals)
    "integrity off": ("enabled = false\n", False),
    "chain + heartbeat checks, no sealing": ('seal_every = "1000h"\n', False),
    "checks + sealing every 1s": ('seal_every = "1s"\nseal_settle = "0s"\n', True),
}


@dataclass
class Run:
    setup: str
    events: int
    wall: float
    cpu: float  # the collector process's CPU seconds while it ingested
    caught_up: float | None  # seconds after the last batch until the ledger had sealed every event


def chained_batches(n: int, size: int) -> list[bytes]:
    """`n` db.query events of the synthetic bank, chained as an agent's spool chains them, in batch bodies."""
    pool = [e for e in generate(seed=11, days=3).events if e.__struct_config__.tag == "db.query"]
    rows = []
    for i in range(n):
        e = pool[i % len(pool)]
        blob = encode(e).replace(e.id.encode(), e.id[:-12].encode() + b"%012x" % i, 1)  # a fresh id per event
        rows.append((str(i), blob))
    bodies, _ = chain(rows, 0, "")
    return [b'{"events":[' + b",".join(b for _, b in bodies[k:k + size]) + b"]}" for k in range(0, n, size)]


@contextmanager
def database(pg: str | None, work: Path) -> Iterator[str]:
    if pg is None:
        yield f"sqlite:///{work / 'custos.db'}"
        return
    import psycopg

    name = f"custos_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(pg, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sealed_to(url: str) -> int:
    from sqlalchemy import func, select

    from collector.db import ledger_blocks, make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.coalesce(func.max(ledger_blocks.c.event_to), 0))) or 0)
    finally:
        engine.dispose()


def run_once(setup: str, bodies: list[bytes], n: int, pg: str | None) -> Run:
    from tests.helpers.procs import Collector

    with tempfile.TemporaryDirectory() as tmp, database(pg, Path(tmp)) as url:
        work = Path(tmp)
        section, seals = SETUPS[setup]
        (work / "collector.toml").write_text("[rules]\nenabled = false\n[integrity]\n" + section)
        collector = Collector(work / "c", url, config=work / "collector.toml")
        try:
            collector.upgrade()
            token = collector.enroll("bench-agent")
            collector.start()
            assert collector.proc is not None
            proc = psutil.Process(collector.proc.pid)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            with httpx.Client(timeout=60) as client:
                cpu0 = sum(proc.cpu_times()[:2])
                began = time.perf_counter()
                for body in bodies:
                    client.post(f"{collector.url}/api/v1/events", content=body, headers=headers).raise_for_status()
                wall = time.perf_counter() - began
                cpu = sum(proc.cpu_times()[:2]) - cpu0
            caught_up = None
            if seals:
                done = time.perf_counter()
                deadline = done + 300
                while sealed_to(url) < n and time.perf_counter() < deadline:
                    time.sleep(0.2)  # polling the ledger's progress, the figure being measured
                caught_up = time.perf_counter() - done
        finally:
            collector.close()
    return Run(setup, n, wall, cpu, caught_up)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pg", metavar="DSN", help="PostgreSQL maintenance database to create run databases from")
    args = ap.parse_args()
    bodies = chained_batches(args.events, args.batch)
    runs: list[Run] = []
    for r in range(args.rounds):
        for setup in SETUPS:
            run = run_once(setup, bodies, args.events, args.pg)
            runs.append(run)
            extra = f", sealed all {run.caught_up:.1f}s after the last batch" if run.caught_up is not None else ""
            print(f"round {r + 1}: {setup}: {run.events / run.wall:,.0f} events/s, "
                  f"{run.cpu / run.events * 1e6:.1f} µs CPU/event{extra}", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}; "
          f"{args.events:,} events in batches of {args.batch}, {'PostgreSQL' if args.pg else 'SQLite'}, "
          f"medians of {args.rounds} rounds")
    base_rate = base_cpu = 0.0
    for setup in SETUPS:
        mine = [x for x in runs if x.setup == setup]
        rate = statistics.median(x.events / x.wall for x in mine)
        cpu = statistics.median(x.cpu / x.events * 1e6 for x in mine)
        if not base_rate:
            base_rate, base_cpu = rate, cpu
        caught = [x.caught_up for x in mine if x.caught_up is not None]
        tail = f" | sealed all {statistics.median(caught):.1f}s after" if caught else ""
        print(f"| {setup} | {rate:,.0f} events/s | {rate / base_rate:.2f}x | {cpu:.1f} µs CPU/event | "
              f"{cpu / base_cpu:.2f}x{tail} |")


if __name__ == "__main__":
    main()
