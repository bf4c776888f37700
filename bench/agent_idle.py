"""Staff-machine agent footprint: RSS and CPU of a real `custos-agent run`, idle and under a steady file load.

Two agents run side by side against one real collector (SQLite): the *baseline* (spool, shipper, heartbeat, no
sources) and the *staff* agent (file watcher on a synthetic home tree, mount sensor, database-connection sensor).
The idle window measures both; the load window writes `--rate` small customer CSV files per second into the
watched tree (each file is one `file.export`, several inotify events) and measures the staff agent, then checks
that every file arrived at the collector as an event.

    PYTHONPATH=. /work/venv/bin/python bench/agent_idle.py                       # short (CI): 20 s idle, 15 s load
    PYTHONPATH=. /work/venv/bin/python bench/agent_idle.py --idle 600 --load 60  # the figures in docs/benchmarks.md

Targets (issue 3): RSS <= 60 MB, idle CPU <= 0.5 % of one core.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.files.samples import bank_card, email, mobile, resident_id  # noqa: E402
from tests.helpers.procs import AgentProcess, Collector, wait_for  # noqa: E402

RSS_TARGET_MB = 60.0
IDLE_CPU_TARGET = 0.5


@dataclass
class Window:
    seconds: float
    cpu_percent: float  # of one core
    rss_max_mb: float
    rss_end_mb: float


def measure(pids: dict[str, int], seconds: float, work=None) -> dict[str, Window]:  # type: ignore[no-untyped-def]
    """CPU (time used / wall time) and RSS of each process over `seconds`, running `work(t_end)` meanwhile."""
    procs = {k: psutil.Process(p) for k, p in pids.items()}
    cpu0 = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
    rss_max = {k: 0 for k in procs}
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        now = time.monotonic()
        for k, p in procs.items():
            rss_max[k] = max(rss_max[k], p.memory_info().rss)
        if now >= end:
            break
        if work is not None:
            work(min(end, now + 1.0))
        else:
            time.sleep(min(1.0, end - now))  # pacing the measurement, not waiting for an outcome
    wall = time.monotonic() - t0
    out = {}
    for k, p in procs.items():
        used = sum(p.cpu_times()[:2]) - cpu0[k]
        rss = p.memory_info().rss
        out[k] = Window(round(wall, 1), round(100 * used / wall, 3), round(max(rss_max[k], rss) / 2**20, 1),
                        round(rss / 2**20, 1))
    return out


def home_tree(base: Path, users: int, dirs_per_folder: int, files_per_dir: int) -> list[Path]:
    """Downloads/Desktop/Documents of a few users, with folders and old files like a real home."""
    rng = random.Random(1)
    roots = []
    for u in range(users):
        for folder in ("Downloads", "Desktop", "Documents"):
            root = base / f"user{u}" / folder
            roots.append(root)
            for d in range(dirs_per_folder):
                sub = root / f"project{d}" / "2025"
                sub.mkdir(parents=True, exist_ok=True)
                for f in range(files_per_dir):
                    (sub / f"note{f}.txt").write_text(f"note {rng.random()}\n")
    return roots


def csv_body(rng: random.Random, rows: int = 20) -> str:
    lines = ["id_number,card_number,mobile,email"]
    lines += [f"{resident_id(rng)},{bank_card(rng)},{mobile(rng)},{email(rng, i)}" for i in range(rows)]
    return "\n".join(lines) + "\n"


def config(work: Path, sources: str) -> Path:
    path = work / "agent.toml"
    path.write_text(f'[heartbeat]\ninterval = "60s"\n[limits]\ncpu_percent = 80\nmemory = "150MiB"\n{sources}')
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=float, default=20.0, help="idle window, seconds (600 for the documented run)")
    ap.add_argument("--load", type=float, default=15.0, help="load window, seconds")
    ap.add_argument("--rate", type=float, default=200.0, help="files written per second under load")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds after start-up before measuring")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="custos-bench-") as tmp:
        base = Path(tmp)
        roots = home_tree(base / "home", users=3, dirs_per_folder=40, files_per_dir=10)
        watch_paths = ":".join(str(r) for r in roots)
        collector = Collector(base / "collector", f"sqlite:///{base / 'collector' / 'custos.db'}")
        collector.upgrade()
        collector.start()
        agents: dict[str, AgentProcess] = {}
        try:
            staff_sources = (
                '[sources.files]\ntype = "file_watch"\nquiet = "2s"\n'
                '[sources.media]\ntype = "mounts"\n'
                '[sources.db]\ntype = "db_connections"\nendpoints = ["127.0.0.1:5432"]\ninterval = "5s"\n'
            )
            for name, sources in (("baseline", ""), ("staff", staff_sources)):
                work = base / name
                work.mkdir()
                agents[name] = AgentProcess(work, collector.url, collector.enroll(f"bench-{name}"),
                                            config=config(work, sources),
                                            extra_env={"CUSTOS_WATCH_PATHS": watch_paths})
                agents[name].start()
            log = base / "staff" / "agent.log"
            wait_for(lambda: b"file watcher files:" in log.read_bytes(), 60, "the staff agent's watches")
            pids = {k: a.proc.pid for k, a in agents.items()}  # type: ignore[union-attr]
            watches = sum(1 for _ in (base / "home").rglob("*") if _.is_dir())

            measure(pids, args.warmup)  # start-up work (imports, first look at mounts and connections) settles
            idle = measure(pids, args.idle)

            rng = random.Random(2)
            body = [csv_body(rng) for _ in range(50)]
            out_dir = roots[2] / "exports"
            out_dir.mkdir()
            written = 0
            t_start = time.monotonic()

            def write_until(t_end: float) -> None:
                nonlocal written
                while time.monotonic() < t_end:
                    due = int((time.monotonic() - t_start) * args.rate)
                    while written < due:
                        (out_dir / f"export_{written:06d}.csv").write_text(body[written % len(body)])
                        written += 1
                    time.sleep(0.005)  # pacing the writer at --rate

            load = measure({"staff": pids["staff"]}, args.load, work=write_until)["staff"]
            db = base / "collector" / "custos.db"

            def arrived() -> int:
                with sqlite3.connect(db) as c:
                    return int(c.execute("SELECT count(*) FROM events WHERE kind = 'file.export'").fetchone()[0])

            t_written = time.monotonic()
            wait_for(lambda: arrived() >= written, 300, f"{written} file.export events at the collector", 0.5)
            drained_s = time.monotonic() - t_written
            exported = arrived()
            with sqlite3.connect(db) as c:
                unclassified = c.execute(
                    "SELECT count(*) FROM events WHERE kind = 'file.export' AND body LIKE '%\"classified\":false%'"
                ).fetchone()[0]
        finally:
            for a in agents.values():
                a.close()
            collector.close()

    result = {
        "idle": {k: asdict(v) for k, v in idle.items()},
        "load": asdict(load),
        "files_written": written,
        "files_per_second": round(written / load.seconds, 1),
        "file_exports_at_collector": exported,
        "unclassified_under_load": unclassified,
        "seconds_to_drain_after_load": round(drained_s, 1),
        "watched_directories": watches,
        "targets": {"rss_mb": RSS_TARGET_MB, "idle_cpu_percent": IDLE_CPU_TARGET},
    }
    s, b = idle["staff"], idle["baseline"]
    print(f"idle {s.seconds:.0f}s   staff agent: CPU {s.cpu_percent:.3f}% of one core, RSS max {s.rss_max_mb} MB"
          f"   | baseline agent: CPU {b.cpu_percent:.3f}%, RSS max {b.rss_max_mb} MB")
    print(f"load {load.seconds:.0f}s at {result['files_per_second']} files/s: CPU {load.cpu_percent:.1f}% of one core, "
          f"RSS max {load.rss_max_mb} MB; all {written} file.export events at the collector "
          f"{result['seconds_to_drain_after_load']}s after the last write ({unclassified} shed unclassified)")
    ok = s.rss_max_mb <= RSS_TARGET_MB and load.rss_max_mb <= RSS_TARGET_MB and s.cpu_percent <= IDLE_CPU_TARGET
    print(f"targets (RSS <= {RSS_TARGET_MB} MB, idle CPU <= {IDLE_CPU_TARGET}%): {'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
