"""The demo site: a real `custos serve` on a free loopback port and real `custos-agent run` processes, one per
agent of the bank, in a working directory on the embedded SQLite store.

    with Site(workdir, bank, progress) as site:   # database prepared, collector and agents started
        site.put("proxy-core", events)            # into that agent's on-disk spool; the agent ships them
        site.counts(written)                      # shipped / stored / evaluated / alerts, read from the spools,
                                                  # the store and the collector's /metrics
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from sqlalchemy import func, select

from agent.config import load_config as load_agent_config
from agent.events import Envelope
from agent.runtime import open_spool, spool_events
from collector.demo import extras
from collector.demo.bank import AGENTS, ASSIGNMENT_SOURCE, AgentSpec, DemoBank, DemoError
from collector.demo.progress import Counts, Progress

ANALYST_TOKEN = "demo-analyst"
_EVALUATED = re.compile(rb"^custos_rules_evaluated_seq (\S+)$", re.M)


class Child:
    """A process of ours, its output in a log file in the working directory, stopped by its own pid."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / "logs" / f"{name}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """`condition()` once it is truthy; DemoError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def child_env() -> dict[str, str]:
    """The environment of the demo's processes: ours without CUSTOS_* settings, and this same code on the path
    (installed or not)."""
    root = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return env


class SpoolFeed:
    """Events into an agent's on-disk spool, as its sensors would write them; the running agent ships them."""

    def __init__(self, config_path: Path) -> None:
        self.spool = open_spool(load_agent_config(config_path, env={}))
        self.written = 0

    def put(self, events: list[Envelope]) -> int:
        n = spool_events(self.spool, events)
        self.written += n
        return n

    def shipped(self) -> int:
        """Written minus still waiting: what the collector acknowledged (the agent's own heartbeats aside)."""
        return max(0, self.written - self.spool.stats().depth)

    def close(self) -> None:
        self.spool.close()


class Site:
    def __init__(self, workdir: Path, bank: DemoBank, progress: Progress, *, without: tuple[str, ...] = ()) -> None:
        self.workdir, self.bank, self.progress, self.without = workdir, bank, progress, without
        self.database_url = f"sqlite:///{workdir / 'custos.db'}"
        self.config_path = workdir / "collector.toml"
        self.rules_dir = workdir / "rules"
        self.tokens: dict[str, str] = {}
        self.logins: list[extras.Login] = []
        self.children: list[Child] = []
        self.feeds: dict[str, SpoolFeed | extras.RecordFeed] = {}
        self.url = ""
        self.business_records = False
        self.http: httpx.Client | None = None
        self.db: Any = None
        self.env = child_env()

    def __enter__(self) -> Site:
        try:
            self.prepare()
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- setting up ----------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The site's files, the database at the newest schema, the agents' credentials, an analyst's API token,
        the staff directory and work assignments — what a bank does once when it installs custos."""
        from collector import credentials
        from collector.db import make_engine
        from collector.migrate import current, upgrade
        from collector.rules_state import import_assignments, import_directory
        from rules.identity import read_directory_csv

        self.bank.write_site_rules(self.rules_dir, self.without)
        self.config_path.write_text(f"[rules]\ndir = {msgspec.json.encode(str(self.rules_dir)).decode()}\n")
        people = self.workdir / "people.csv"
        self.bank.write_directory(people)
        self.db = engine = make_engine(self.database_url)
        upgrade(engine)
        for spec in AGENTS:
            self.tokens[spec.name] = credentials.create(engine, spec.name, spec.credential)
        self.tokens[ANALYST_TOKEN] = credentials.create(engine, ANALYST_TOKEN, "api", "analyst")
        n_people = import_directory(engine, read_directory_csv(people), replace=True)
        n_assigned = import_assignments(engine, self.bank.assignments(), ASSIGNMENT_SOURCE)
        self.logins = extras.create_demo_users(engine)
        self.progress.step("database", f"{self.database_url} at schema {current(engine)}; {n_people} people from "
                                       f"people.csv, {n_assigned:,} portfolio assignments, {len(AGENTS)} agent "
                                       f"credentials" + (f", {len(self.logins)} UI users" if self.logins else ""))

    def start(self) -> None:
        port_file = self.workdir / "collector.port"
        env = dict(self.env, CUSTOS_DATABASE_URL=self.database_url, CUSTOS_LISTEN="127.0.0.1:0",
                   CUSTOS_CONFIG=str(self.config_path))
        collector = self._spawn("collector", [sys.executable, "-m", "collector", "serve", "--port-file",
                                              str(port_file)], env)
        self._poll_child(collector, port_file.exists, "the collector's port")
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"
        self.http = httpx.Client(base_url=self.url, timeout=10.0)
        self._poll_child(collector, self._healthy, "the collector's /healthz")
        self.business_records = extras.serves_business_records(self.http.get("/openapi.json").json())
        self.progress.step("collector", f"custos serve listening on {self.url} (pid {collector.proc.pid}), "
                                        f"rules from the built-in set and {self.rules_dir.name}/")
        started = []
        for spec in AGENTS:
            if spec.credential == "source" and self.business_records:
                self.feeds[spec.name] = extras.RecordFeed(self.http, self.tokens[spec.name])
                started.append(f"{spec.name} (posting to {extras.BUSINESS_PATH})")
                continue
            config = self._write_agent_config(spec)
            child = self._spawn(spec.name, [sys.executable, "-m", "agent", "-v", "run", "--config", str(config)],
                                dict(self.env, CUSTOS_AGENT_TOKEN=self.tokens[spec.name]))
            self.feeds[spec.name] = SpoolFeed(config)
            started.append(f"{spec.name} (pid {child.proc.pid})")
        self.progress.step("agents", ", ".join(started))

    def _write_agent_config(self, spec: AgentSpec) -> Path:
        def q(v: str) -> str:
            return msgspec.json.encode(v).decode()  # a JSON string is a TOML basic string

        # A business source may send only business events: its agent sends no heartbeats of its own.
        beat = '"0"' if spec.credential == "source" else '"10s"'
        path = self.workdir / f"{spec.name}.toml"
        path.write_text(
            f"# {spec.what}\nagent_id = {q(spec.name)}\n[collector]\nurl = {q(self.url)}\n"
            f"[spool]\ndir = {q(str(self.workdir / 'spools' / spec.name))}\n"
            f'[ship]\nbatch_max_age = "50ms"\nbackoff_max = "2s"\n[heartbeat]\ninterval = {beat}\n')
        return path

    # -- running -------------------------------------------------------------------------------------------------

    def put(self, agent: str, events: list[Envelope]) -> int:
        return self.feeds[agent].put(events) if events else 0

    def check_children(self) -> None:
        for child in self.children:
            if not child.alive():
                raise DemoError(f"{child.name} exited {child.proc.returncode}; the end of {child.log_path}:\n"
                                f"{child.tail()}")

    def counts(self, written: int) -> Counts:
        """Where the bank's events are now. Stored and evaluated count only the bank's (its events all lie
        before its end; the agents' own heartbeats of today do not)."""
        from collector.db import alerts, events

        end = self.bank.end
        with self.db.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(events).where(events.c.ts < end)) or 0
            seq = self.evaluated_seq()
            evaluated = (conn.scalar(select(func.count()).select_from(events).where(
                events.c.ts < end, events.c.seq <= seq)) or 0) if seq else 0
            n_alerts = conn.scalar(select(func.count()).select_from(alerts)) or 0
        shipped = sum(f.shipped() for f in self.feeds.values())
        return Counts(written, min(shipped, written), stored, evaluated, n_alerts)

    def evaluated_seq(self) -> int:
        """The highest stored seq the collector's rule worker has evaluated (its /metrics)."""
        if self.http is None:
            raise DemoError("the collector is not running; start the site first")
        m = _EVALUATED.search(self.http.get("/metrics").content)
        if m is None:
            raise DemoError("the collector's /metrics has no custos_rules_evaluated_seq: its rules are disabled "
                            "or run in a worker process; the demo needs [rules] enabled with worker = \"thread\"")
        return int(float(m.group(1)))

    def stop(self) -> None:
        """Our spool handles, then the agents (they drain to the collector), then the collector."""
        for feed in self.feeds.values():
            feed.close()
        self.feeds.clear()
        if self.http is not None:
            self.http.close()
            self.http = None
        agents = [c for c in self.children if c.name != "collector"]
        for child in agents:  # all at once: each drains its own spool
            child.terminate()
        for child in agents + [c for c in self.children if c.name == "collector"]:
            child.stop()
        self.children.clear()
        if self.db is not None:
            self.db.dispose()
            self.db = None

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        child = Child(name, args, env, self.workdir)
        self.children.append(child)
        return child

    def _poll_child(self, child: Child, condition: Callable[[], Any], what: str) -> None:
        poll(lambda: condition() or not child.alive(), 90, what)
        if not child.alive():
            raise DemoError(f"{child.name} exited {child.proc.returncode} before {what}:\n{child.tail()}")

    def _healthy(self) -> bool:
        try:
            return self.http is not None and self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False
