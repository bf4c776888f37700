"""Rule engine benchmarks: throughput of the whole built-in set, detection on the synthetic bank, and
ingest-to-alert latency through a real collector.

    PYTHONPATH=. python -m bench.rules                  # all three
    PYTHONPATH=. python -m bench.rules --only engine    # engine | replay | latency

Throughput is CPU time of this one process (one core), so other work on the machine does not flatter or
punish it; the baseline measured in the same run is decoding the same events from JSON (msgspec), which any
consumer of the store pays anyway.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec

from agent.events import Event, encode
from agent.ids import uuid7
from rules.parse import load_rules
from rules.scenario import generate, replay_scenario, score


def bench_engine(days: int, repeats: int) -> None:
    scn = generate(seed=7, days=days)
    rs = load_rules()
    blobs = [encode(e) for e in scn.events]
    decoder = msgspec.json.Decoder(Event)
    queries = sum(1 for e in scn.events if e.__struct_config__.tag == "db.query")
    best_decode, best_engine = 0.0, 0.0
    for _ in range(repeats):
        t = time.process_time()
        for b in blobs:
            decoder.decode(b)
        best_decode = max(best_decode, len(blobs) / (time.process_time() - t))
        t = time.process_time()
        replay_scenario(scn, rs)
        best_engine = max(best_engine, len(blobs) / (time.process_time() - t))
    print(f"engine: {len(scn.events):,} events ({queries:,} db.query) of {days} days, {len(rs.rules)} built-in rules")
    print(f"engine: {best_engine:,.0f} events/s (CPU time, one core, best of {repeats}); "
          f"JSON decode baseline {best_decode:,.0f} events/s; engine/decode = {best_engine / best_decode:.2f}")


def bench_replay(days: int, seeds: list[int]) -> None:
    rs = load_rules()
    total_false = total_days = 0
    for seed in seeds:
        scn = generate(seed=seed, days=days)
        alerts, engine = replay_scenario(scn, rs)
        report = score(scn, alerts)
        total_false += len(report.false_alerts)
        total_days += report.staff_days
        found = ", ".join(f"{k} ({len(v)})" for k, v in report.found.items())
        print(f"replay seed {seed}: {len(scn.events):,} events, {len(alerts)} alerts; found {len(report.found)}/"
              f"{len(scn.planted)}: {found}; missed {report.missed or 'none'}; false alerts "
              f"{len(report.false_alerts)} = {report.false_per_1000_staff_days:.2f} per 1,000 staff-days; "
              f"rule errors {sum(engine.errors.values())}")
        for a in report.false_alerts:
            print(f"    false: {a.rule_id}: {a.summary}")
    print(f"replay: {total_false} false alerts in {total_days:,} staff-days = "
          f"{1000 * total_false / total_days:.2f} per 1,000 staff-days over {len(seeds)} seeds")


def bench_latency(seconds: float, rate: int, database: str) -> None:
    import httpx

    from collector.db import make_engine
    from rules.testing import build_events, test_key
    from tests.helpers.procs import Collector

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'custos.db'}" if database == "sqlite" else database
        site = work / "site"
        site.mkdir()
        canary = test_key("canary")
        (site / "context.yaml").write_text(f"context:\n  lists:\n    honeytokens: [{canary}]\n")
        (work / "collector.toml").write_text(f"[rules]\ndir = \"{site}\"\nenabled = {os.environ.get('BENCH_RULES', 'true')}\n"
                                              f"worker = \"{os.environ.get('BENCH_WORKER', 'thread')}\"\n")
        collector = Collector(work / "c", url, config=work / "collector.toml")
        try:
            collector.upgrade()
            token = collector.enroll("bench")
            collector.start()
            background = [e for e in generate(seed=11, days=3).events if e.__struct_config__.tag == "db.query"]
            batch_size = max(2, rate // 20)  # 20 batches a second
            now = dt.datetime.now(dt.timezone.utc)
            # background load encoded once, re-timed to now: ordinary lookups the rules must chew through
            blobs = [(encode(msgspec.structs.replace(e, ts=now)), e.id.encode()) for e in background[:20_000]]
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            sent = triggers = 0
            client = httpx.Client(timeout=30)
            began = time.monotonic()
            stop, next_at, i = began + seconds, began, 0
            while time.monotonic() < stop:
                now = dt.datetime.now(dt.timezone.utc)
                # every fourth batch carries one event that completes a rule: a honeytoken read by a fresh account
                extra = []
                if i // batch_size % 4 == 0:
                    extra = [encode(build_events([{"who": f"bench{triggers}", "rows": 1, "customers": [canary],
                                                   "at": now.isoformat()}])[0])]
                    triggers += 1
                part = []
                for k in range(batch_size - len(extra)):  # every event new to the store: a fresh id in the same bytes
                    blob, old = blobs[(i + k) % len(blobs)]
                    part.append(blob.replace(old, uuid7().encode(), 1))
                body = b'{"events":[' + b",".join(part + extra) + b"]}"
                i += batch_size
                r = client.post(f"{collector.url}/api/v1/events", content=body, headers=headers)
                r.raise_for_status()
                sent += len(part) + len(extra)
                next_at += 1 / 20
                time.sleep(max(0.0, next_at - time.monotonic()))  # pacing the load generator, not synchronising
            elapsed = time.monotonic() - began
            print(f"latency: posted {sent:,} events in {elapsed:.1f}s = {sent / elapsed:,.0f}/s "
                  f"(target {rate:,}/s; rules {'on' if os.environ.get('BENCH_RULES', 'true') == 'true' else 'off'})")
            client.close()
            engine = make_engine(url)
            from sqlalchemy import text
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    n = conn.scalar(text("SELECT count(*) FROM alerts WHERE rule_id = 'custos.honeytoken_read'"))
                if n >= triggers:
                    break
                time.sleep(0.2)
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT a.created_at, e.received_at FROM alerts a JOIN events e ON e.event_id = a.trigger_event_id "
                    "WHERE a.rule_id = 'custos.honeytoken_read'")).all()
            engine.dispose()
            cpu = _cpu_seconds(collector.proc.pid) if collector.proc is not None else None
        finally:
            collector.close()
            for line in (work / "c" / "collector.log").read_text(errors="replace").splitlines():
                if "rule-state checkpoint" in line:
                    print("collector:", line.split(": ", 1)[-1])

    def as_dt(v: object) -> dt.datetime:
        return v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))
    lat = sorted((as_dt(c) - as_dt(r)).total_seconds() for c, r in rows)
    if not lat:
        print("latency: no alerts arrived", file=sys.stderr)
        return
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"latency ({database.split(':')[0]}): {sent:,} events posted in {elapsed:.0f}s "
          f"({sent / elapsed:,.0f}/s), {len(lat)}/{triggers} alerts; ingest-to-alert p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
          + (f"; collector CPU {cpu:.1f} s = {cpu / sent * 1e6:.0f} µs per event" if cpu is not None else ""))


def _cpu_seconds(pid: int) -> float | None:
    """A running process's CPU time (user + system), from /proc; None where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["engine", "replay", "latency"])
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", default="7,8,9,10,11")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--database", default="sqlite", help="sqlite, or a postgresql:// URL of an empty database")
    args = ap.parse_args()
    if args.only in (None, "engine"):
        bench_engine(args.days, args.repeats)
    if args.only in (None, "replay"):
        bench_replay(args.days, [int(s) for s in args.seeds.split(",")])
    if args.only in (None, "latency"):
        bench_latency(args.seconds, args.rate, args.database)


if __name__ == "__main__":
    main()
