"""Collector ingest benchmark: sustained events/s over HTTP into SQLite and PostgreSQL, and what each costs the
collector in CPU time.

    PYTHONPATH=. python -m bench.ingest                                 # SQLite and PostgreSQL
    PYTHONPATH=. python -m bench.ingest --database sqlite --batches 40  # one database, a shorter run

A real `custos serve` (rules off) on a loopback port; `--clients` client processes, each with its own agent
credential, post gzip'd batches of `--batch` realistic `db.query` events (the synthetic bank's lookups, each
with a fresh UUIDv7 id). Bodies are built and compressed before the clock starts, so the clients spend their
CPU on HTTP only. PostgreSQL gets a fresh database on 127.0.0.1:5432 (`--pg`), dropped afterwards.

Figures: wall events/s (what this shared machine achieved), the collector process's CPU µs per event (psutil,
user + system), events per CPU-second of the collector (what one idle core would do), and on PostgreSQL the CPU
of the server processes serving the collector's connections (the index and WAL work SQLite does in-process). Baselines in the same
run: the same clients asking `/healthz` (the collector's cost of one HTTP request, per batch), and gunzip + a
schema-less msgspec decode of the same bodies in this process (the least any reader of the batch pays).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psutil

from agent.events import encode
from agent.ids import uuid7

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True, slots=True)
class Run:
    what: str
    items: int  # events accepted, or requests answered
    wall: float
    cpu: float  # collector CPU seconds
    db_cpu: float | None = None  # the database server's CPU seconds for this run's connections (PostgreSQL)

    @property
    def rate(self) -> float:
        return self.items / self.wall

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.cpu / self.items

    @property
    def per_cpu_second(self) -> float:
        return self.items / self.cpu if self.cpu else float("inf")

    @property
    def db_cpu_us(self) -> str:
        return "" if self.db_cpu is None else f"{1e6 * self.db_cpu / self.items:,.1f}"


def _cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:  # a backend that ended meanwhile
            continue
        out[pid] = t.user + t.system
    return out


def pg_backends(url: str) -> Callable[[], list[int]]:
    """The server processes serving `url`'s database (the collector's pooled connections), to charge their CPU."""
    import psycopg

    name = url.rsplit("/", 1)[1]

    def pids() -> list[int]:
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))]
    return pids


def templates(count: int) -> list[tuple[bytes, bytes]]:
    """Encoded `db.query` events of the synthetic bank with their ids, re-timed to now."""
    from rules.scenario import generate

    now = dt.datetime.now(dt.timezone.utc)
    out: list[tuple[bytes, bytes]] = []
    for e in generate(seed=11, days=3).events:
        if e.__struct_config__.tag == "db.query":
            out.append((encode(msgspec.structs.replace(e, ts=now)), e.id.encode()))
            if len(out) == count:
                break
    return out


def bodies(blobs: list[tuple[bytes, bytes]], batches: int, size: int, offset: int) -> list[bytes]:
    """`batches` gzip'd bodies of `size` events, every event with an id of its own."""
    out = []
    for b in range(batches):
        part = []
        for k in range(size):
            blob, old = blobs[(offset + b * size + k) % len(blobs)]
            part.append(blob.replace(old, uuid7().encode(), 1))
        out.append(gzip.compress(b'{"events":[' + b",".join(part) + b"]}", compresslevel=6))
    return out


def _client(url: str, token: str, payloads: list[bytes], start: mp.Event, results: mp.Queue) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    accepted = 0
    with httpx.Client(timeout=120) as client:
        start.wait()
        for body in payloads:
            if body:
                r = client.post(f"{url}/api/v1/events", content=body, headers=headers)
                r.raise_for_status()
                ack = r.json()
                if ack["rejected"]:
                    raise SystemExit(f"the collector refused events: {ack['rejected'][:3]}")
                accepted += ack["accepted"]
            else:
                client.get(f"{url}/healthz").raise_for_status()
                accepted += 1
    results.put(accepted)


def drive(url: str, tokens: list[str], work: list[list[bytes]], pid: int, what: str,
          backends: Callable[[], list[int]] | None = None) -> Run:
    """Run one client process per token over its share of `work`; the collector's CPU (and its database
    server's, given `backends`) and the wall time."""
    ctx = mp.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_client, args=(url, t, w, start, results)) for t, w in zip(tokens, work)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let the clients import httpx and connect; the clock starts at the signal, not before
    collector = psutil.Process(pid)
    db0 = _cpu(backends()) if backends else {}
    cpu0 = collector.cpu_times()
    t0 = time.perf_counter()
    start.set()
    items = sum(results.get(timeout=900) for _ in procs)
    wall = time.perf_counter() - t0
    cpu1 = collector.cpu_times()
    db1 = _cpu(backends()) if backends else {}
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a client exited {p.exitcode}")
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    db_cpu = sum(t - db0.get(p, 0.0) for p, t in db1.items()) if backends else None
    return Run(what, items, wall, cpu, db_cpu)


def decode_baseline(payloads: list[bytes], size: int) -> Run:
    """gunzip + a schema-less msgspec decode of the bodies, in this process: the floor of reading a batch."""
    decoder = msgspec.json.Decoder()
    t0, c0 = time.perf_counter(), time.process_time()
    for body in payloads:
        decoder.decode(gzip.decompress(body))
    return Run("baseline: gunzip + decode (no schema), this process", len(payloads) * size,
               time.perf_counter() - t0, time.process_time() - c0)


def fresh_pg(admin: str) -> tuple[str, str]:
    import psycopg

    name = f"custos_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + "/" + name, name


def drop_pg(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_database(database: str, args: argparse.Namespace, blobs: list[tuple[bytes, bytes]]) -> list[Run]:
    from tests.helpers.procs import Collector

    label = "PostgreSQL" if database == "postgresql" else "SQLite"
    runs: list[Run] = []
    pg_name = None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if database == "postgresql":
            url, pg_name = fresh_pg(args.pg)
        else:
            url = f"sqlite:///{work / 'custos.db'}"
        (work / "collector.toml").write_text("[rules]\nenabled = false\n")
        collector = Collector(work / "c", url, config=work / "collector.toml")
        try:
            collector.upgrade()
            tokens = [collector.enroll(f"bench{i}") for i in range(args.clients)]
            collector.start()
            assert collector.proc is not None
            pid = collector.proc.pid
            per = args.batches // args.clients
            warm = [bodies(blobs, 2, args.batch, 7_000 * i) for i in range(args.clients)]
            drive(collector.url, tokens, warm, pid, "warm-up")
            health = [[b""] * (per * 4) for _ in tokens]
            backends = pg_backends(url) if pg_name is not None else None
            runs.append(drive(collector.url, tokens, health, pid, f"{label}: baseline GET /healthz (per request)",
                              backends))
            work_ = [bodies(blobs, per, args.batch, 50_000 * i + 1) for i in range(args.clients)]
            runs.append(decode_baseline([b for w in work_ for b in w], args.batch))
            for r in range(args.repeat):
                if r:
                    work_ = [bodies(blobs, per, args.batch, 50_000 * i + 1) for i in range(args.clients)]
                runs.append(drive(collector.url, tokens, work_, pid,
                                  f"{label}: POST {args.batch}-event gzip batches, {args.clients} clients", backends))
        finally:
            collector.close()
            if pg_name is not None:
                drop_pg(args.pg, pg_name)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--batch", type=int, default=1000, help="events per batch")
    ap.add_argument("--batches", type=int, default=120, help="batches per measured run, over all clients")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="measured runs per database")
    ap.add_argument("--pg", default=PG_ADMIN, help="a PostgreSQL URL allowed to create and drop databases")
    args = ap.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores; "
          f"{args.batches} batches of {args.batch} events per run, {args.clients} clients")
    blobs = templates(20_000)
    print(f"event size: {sum(len(b) for b, _ in blobs) / len(blobs):.0f} bytes of JSON on average")
    dbs = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    print(f"{'run':<62} {'items':>8} {'wall/s':>10} {'CPU µs/item':>12} {'items/CPU-s':>12} {'server CPU µs':>14}")
    for db in dbs:
        for run in bench_database(db, args, blobs):
            print(f"{run.what:<62} {run.items:>8,} {run.rate:>10,.0f} {run.cpu_us:>12,.1f} "
                  f"{run.per_cpu_second:>12,.0f} {run.db_cpu_us:>14}", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
