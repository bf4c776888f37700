"""pgbench through the custos proxy (full auditing on) against direct and pgbouncer, all in one run.

    python -m bench.proxy [--seconds 10] [--rounds 1] [--scale 10] [--clients 1,8,32] [--modes prepared,simple]
                          [--scripts select-only,tpcb-like] [--before TREE]

For every script (select-only `-S`, TPC-B-like), protocol mode and client count, the three targets run one after
another (direct, pgbouncer in session mode, the proxy), so that they share the machine's conditions. With
`--rounds N` each target's `--seconds` are split into N pgbench runs, and the targets take turns N times: a drift
in the machine's speed over the minutes of a configuration then weighs on all of them alike. Reported: TPS (the
mean of a target's runs), each target's ratio to direct and the proxy's to pgbouncer, and CPU time per statement
of the pgbouncer and proxy processes (psutil user+system time during its runs / statements run). The proxy writes
every statement's db.query event to a spool of its own, and the count of spooled events is checked against the
statements run (pgbench adds 2 start-up queries per run).

`--before TREE` (a checkout of an earlier commit, e.g. `git worktree add /tmp/before main`) also runs the proxy
from that tree right after this one in every configuration, so that a change is compared under the same load.

Needs pgbench and pgbouncer (Debian packages `postgresql-client`/`pgbench` and `pgbouncer`) and the local
PostgreSQL at 127.0.0.1:5432 (user postgres, trust).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from agent.spool import unpack_items

ROOT = Path(__file__).resolve().parents[1]
DB = "custos_bench_proxy"
STATEMENTS = {"select-only": 1, "tpcb-like": 7}  # statements per pgbench transaction


@dataclass
class Result:
    script: str
    mode: str
    clients: int
    target: str
    tps: float
    transactions: int
    cpu_us_per_statement: float | None = None
    events: int | None = None
    spool_us_per_statement: float | None = None  # the proxy's spool process's share of cpu_us_per_statement
    runs: int = 1  # pgbench runs (rounds) the figures sum or average


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def psql(sql: str, db: str = "postgres") -> None:
    subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql], check=True)


class PgBouncer:
    """pgbouncer in session mode on a loopback port, with a generated ini (it refuses to run as root)."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("pgbouncer") is None:
            raise SystemExit("pgbouncer is not installed: apt-get install -y pgbouncer")
        self.dir = workdir / "pgbouncer"
        self.dir.mkdir()
        self.port = free_port()
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\n* = host=127.0.0.1 port=5432\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\nunix_socket_dir =\nauth_type = trust\n"
            f"auth_file = {self.dir / 'users.txt'}\npool_mode = session\nmax_client_conn = 200\n"
            f"default_pool_size = 64\nlogfile = {self.dir / 'pgbouncer.log'}\n"
        )
        args = ["pgbouncer", str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            for f in self.dir.iterdir():
                shutil.chown(f, "postgres")
            args = ["runuser", "-u", "postgres", "--", *args]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        self.ps = next(p for p in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children()]
                       if p.name() == "pgbouncer")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Proxy:
    """`custos-agent proxy` with full auditing: every statement becomes a spooled db.query event."""

    def __init__(self, workdir: Path, root: Path = ROOT) -> None:
        self.dir = Path(tempfile.mkdtemp(dir=workdir, prefix="proxy-"))
        self.port = free_port()
        config = self.dir / "agent.toml"
        config.write_text(
            '[heartbeat]\ninterval = "10s"\n\n[sources.bench]\ntype = "proxy"\nlisteners = []\n'
            'customer_keys = ["public.pgbench_accounts.aid"]\ncustomer_key_secret = "bench-secret"\n'
            'sensitive = { "public.pgbench_accounts.abalance" = "balance" }\n'
        )
        env = {**os.environ, "PYTHONPATH": str(root), "CUSTOS_SPOOL_DIR": str(self.dir / "spool")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "proxy", "--config", str(config), "--no-ship", "--listen",
             f"127.0.0.1:{self.port}", "--upstream", "127.0.0.1:5432"],
            env=env, stdout=open(self.dir / "proxy.log", "wb"), stderr=subprocess.STDOUT, cwd=root,
        )
        wait_port(self.port, self.proc)
        self.ps = psutil.Process(self.proc.pid)

    def stop(self) -> int:
        """Stop (the writer drains its queue), then count the db.query events spooled."""
        self.proc.terminate()
        self.proc.wait(60)
        count = 0
        with sqlite3.connect(self.dir / "spool" / "spool.sqlite3") as db:
            packed = "n" in {row[1] for row in db.execute("PRAGMA table_info(outbox)")}  # not in older spools
            for body, n in db.execute(f"SELECT body, {'n' if packed else 1} FROM outbox"):
                bodies = [body] if n == 1 else [b for _, b in unpack_items(body)]  # a packed row (Spool.put_packed)
                count += sum(b.startswith(b'{"kind":"db.query"') for b in bodies)
        shutil.rmtree(self.dir, ignore_errors=True)
        return count


def pgbench(port: int, script: str, mode: str, clients: int, seconds: int) -> tuple[float, int]:
    args = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-M", mode, "-c", str(clients),
            "-j", str(min(clients, 2)), "-T", str(seconds)]
    if script == "select-only":
        args.append("-S")
    out = subprocess.run(args + [DB], capture_output=True, text=True, timeout=seconds * 4 + 60)
    if out.returncode != 0:
        raise SystemExit(f"pgbench failed on port {port}: {out.stderr}")
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", out.stdout).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    return tps, done


def cpu_seconds(ps: psutil.Process) -> float:
    """User + system time of the process and its children (the proxy's spool writer is a child process)."""
    return sum(split_cpu_seconds(ps))


def split_cpu_seconds(ps: psutil.Process) -> tuple[float, float]:
    """(the process's user + system time, its children's)."""
    own = children = 0.0
    for p in [ps, *ps.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        if p.pid == ps.pid:
            own += t.user + t.system
        else:
            children += t.user + t.system
    return own, children


def run(args: argparse.Namespace) -> list[Result]:
    work = Path(tempfile.mkdtemp(prefix="custos-bench-proxy-"))
    work.chmod(0o755)  # pgbouncer runs as postgres and reads its ini below
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {DB}")
    subprocess.run(["pgbench", "-i", "-q", "-s", str(args.scale), "-h", "127.0.0.1", "-U", "postgres", DB],
                   check=True, capture_output=True)
    bouncer = PgBouncer(work)
    results: list[Result] = []
    part = max(1, round(args.seconds / args.rounds))
    try:
        for script in args.scripts:
            for mode in args.modes:
                for clients in args.clients:
                    per_tx = STATEMENTS[script]
                    trees = [("proxy", ROOT)] + ([("proxy-before", args.before)] if args.before else [])
                    proxies = {target: Proxy(work, root) for target, root in trees}
                    tps: dict[str, list[float]] = {}
                    done: dict[str, int] = {}
                    used: dict[str, float] = {}
                    spool: dict[str, float] = {}
                    # Rounds: every target runs once per round, in the same order, so that the machine's drift
                    # over the configuration's minutes falls on all of them alike.
                    for _ in range(args.rounds):
                        for target in ["direct", "pgbouncer", *proxies]:
                            port = {"direct": 5432, "pgbouncer": bouncer.port}.get(target) or proxies[target].port
                            ps = bouncer.ps if target == "pgbouncer" else proxies[target].ps if target in proxies \
                                else None
                            before = split_cpu_seconds(ps) if ps is not None else (0.0, 0.0)
                            t, n = pgbench(port, script, mode, clients, part)
                            after = split_cpu_seconds(ps) if ps is not None else (0.0, 0.0)
                            tps.setdefault(target, []).append(t)
                            done[target] = done.get(target, 0) + n
                            used[target] = used.get(target, 0.0) + sum(after) - sum(before)
                            spool[target] = spool.get(target, 0.0) + after[1] - before[1]
                    for target in ["direct", "pgbouncer", *proxies]:
                        stmts = max(done[target] * per_tx, 1)
                        proxy = proxies.get(target)
                        results.append(Result(
                            script, mode, clients, target, sum(tps[target]) / len(tps[target]), done[target],
                            None if target == "direct" else round(used[target] * 1e6 / stmts, 1),
                            events=proxy.stop() if proxy is not None else None,
                            spool_us_per_statement=round(spool[target] * 1e6 / stmts, 1) if proxy else None,
                            runs=args.rounds))
                    print(table(results[-2 - len(trees):], header=len(results) == 2 + len(trees)), flush=True)
    finally:
        bouncer.stop()
        psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)
    return results


def table(results: list[Result], header: bool = True) -> str:
    rows = []
    by = {(r.script, r.mode, r.clients, r.target): r for r in results}
    compared = any(r.target == "proxy-before" for r in results)
    if header:
        rows += ["| script | mode | clients | direct TPS | pgbouncer TPS | proxy TPS | pgbouncer/direct | "
                 "proxy/direct | proxy/pgbouncer | pgbouncer CPU µs/stmt | proxy CPU µs/stmt | of which spool process | "
                 "proxy events/stmts |"
                 + (" before: proxy TPS | before: proxy/pgbouncer | before: CPU µs/stmt | before: events/stmts |"
                    if compared else ""),
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" * 4 if compared else "")]
    for script, mode, clients in dict.fromkeys((r.script, r.mode, r.clients) for r in results):
        d, b, p = (by.get((script, mode, clients, t)) for t in ("direct", "pgbouncer", "proxy"))
        if not (d and b and p):
            continue
        stmts = p.transactions * STATEMENTS[script]
        rows.append(f"| {script} | {mode} | {clients} | {d.tps:.0f} | {b.tps:.0f} | {p.tps:.0f} | "
                    f"{b.tps / d.tps:.2f} | {p.tps / d.tps:.2f} | **{p.tps / b.tps:.2f}** | "
                    f"{b.cpu_us_per_statement} | {p.cpu_us_per_statement} | {p.spool_us_per_statement} | "
                    f"{p.events}/{stmts} |")
        q = by.get((script, mode, clients, "proxy-before"))
        if compared and q is not None:
            rows[-1] += (f" {q.tps:.0f} | **{q.tps / b.tps:.2f}** | {q.cpu_us_per_statement} | "
                         f"{q.events}/{q.transactions * STATEMENTS[script]} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="pgbench time per target and configuration")
    parser.add_argument("--rounds", type=int, default=1,
                        help="split each target's time into this many pgbench runs, taken in turn with the others'")
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale factor")
    parser.add_argument("--clients", default="1,8,32", help="client counts, comma-separated")
    parser.add_argument("--modes", default="prepared,simple", help="pgbench -M modes, comma-separated")
    parser.add_argument("--scripts", default="select-only,tpcb-like", help="pgbench scripts, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--before", type=Path, help="also run the proxy from this source tree (an earlier commit)")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.modes = args.modes.split(",")
    args.scripts = args.scripts.split(",")
    unknown = set(args.scripts) - set(STATEMENTS)
    if unknown:
        raise SystemExit(f"--scripts: {', '.join(sorted(unknown))} unknown; choose from {', '.join(STATEMENTS)}")
    load = os.getloadavg()
    print(f"# proxy benchmark: {os.cpu_count()} CPUs, load average before {load[0]:.2f}, "
          f"{args.seconds}s per target in {args.rounds} round(s), scale {args.scale}\n", flush=True)
    results = run(args)
    print("\n" + table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
