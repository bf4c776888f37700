"""`custos demo`: a bank in a box — a scenario, its events, their way through real agents and a real collector on
this machine, and a summary of what arrived.

The stages are separate so that tests and benchmarks can use each on its own:

    scenario = build_scenario(seed)                      # who works here, which customers exist
    planned = scenario_events(scenario, day)             # what they did, as events, each with a story line
    with DemoSite(workdir, AGENTS, progress) as site:    # a collector and agents as real processes
        site.spool(planned)                              # into each agent's on-disk spool
        arrived = site.wait_for([p.event.id for p in planned], timeout=30)   # read back through the API
    print_summary(planned, arrived, out)

Customer identifiers exist in clear only inside the scenario; events carry them as keyed hashes, as real sensors do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import msgspec

from agent import events as ev
from agent.config import load_config as load_agent_config
from agent.errors import CustosError
from agent.runtime import open_spool, spool_events

ORG_TZ = dt.timezone(dt.timedelta(hours=8), "UTC+08")
PROXY, WORKSTATION = "db-proxy-01", "ws-loans-17"
AGENTS = (PROXY, WORKSTATION)
ANALYST = "demo-analyst"
CUSTOMER_KEYS_CAP = 1000  # the proxy keeps at most this many keys per statement, with the true total beside


# ---------------------------------------------------------------------------------------------- the scenario


@dataclass(frozen=True, slots=True)
class Person:
    staff_id: str
    name: str
    team: str
    os_user: str
    db_user: str
    workstation: str
    addr: str


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    people: tuple[Person, ...]
    customers: tuple[str, ...]  # customer ids in clear; they never leave this process
    key: bytes  # the site's HMAC key for customer identifiers

    def person(self, os_user: str) -> Person:
        return next(p for p in self.people if p.os_user == os_user)

    def customer_key(self, customer_id: str) -> str:
        return hmac.new(self.key, customer_id.strip().upper().encode(), hashlib.sha256).hexdigest()


def build_scenario(seed: int, customers: int = 20_000) -> Scenario:
    rng = random.Random(seed)
    people = (
        Person("E1042", "Wang Lei", "loans", "wlei", "wlei", WORKSTATION, "10.20.3.41"),
        Person("E2117", "Zhang Min", "call centre", "zmin", "callcentre_app", "ws-cc-03", "10.20.5.12"),
    )
    ids = tuple(f"C{n:07d}" for n in rng.sample(range(1, 10_000_000), customers))
    return Scenario(seed, people, ids, hashlib.sha256(f"custos-demo-{seed}".encode()).digest())


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    agent: str  # the agent whose spool it goes into
    event: ev.Envelope
    story: str  # one line a person understands


def _fingerprint(statement: str) -> str:
    return hashlib.sha256(" ".join(statement.lower().split()).encode()).hexdigest()[:16]


def scenario_events(scenario: Scenario, day: dt.date) -> list[PlannedEvent]:
    """The night `day` began: a routine lookup the afternoon before, then a bulk read of customers and bank cards
    at 02:14 and a copy of the result onto a USB stick at 02:31. Ordered by time."""
    rng = random.Random(scenario.seed)
    wlei, zmin = scenario.person("wlei"), scenario.person("zmin")
    proxy = ev.Source(type="proxy", name="core-main")

    def at(days: int, hh: int, mm: int, ss: int = 0) -> dt.datetime:
        local = dt.datetime.combine(day + dt.timedelta(days=days), dt.time(hh, mm, ss), ORG_TZ)
        return local.astimezone(dt.timezone.utc)

    def event(agent: str, kind: type[ev.Envelope], payload: Any, when: dt.datetime, source: ev.Source,
              actor: ev.Actor, story: str) -> PlannedEvent:
        return PlannedEvent(agent, ev.new_event(kind, payload, source=source, actor=actor, host=agent, ts=when,
                                                agent_id=agent), story)

    lookup = "SELECT name, phone FROM public.customers WHERE customer_id = $1"
    one = rng.choice(scenario.customers)
    bulk = ("SELECT c.customer_id, c.name, c.id_number, c.phone, k.card_no FROM public.customers c "
            "JOIN public.cards k ON k.customer_id = c.customer_id WHERE c.branch_id = $1")
    rows = rng.randint(4000, 6000)
    read = rng.sample(scenario.customers, rows)
    cards = rows - rng.randint(0, 40)
    session = f"{rng.getrandbits(32):08x}.{rng.getrandbits(16):04x}"
    usb = f"/media/{wlei.os_user}/KINGSTON"
    return [
        event(PROXY, ev.DbQuery, ev.DbQueryPayload(
            session_id=f"{rng.getrandbits(32):08x}.0001", statement_type="SELECT", fingerprint=_fingerprint(lookup),
            statement=lookup, database="core", application_name="crm-web", client_addr="10.20.1.8",
            server="10.20.0.5:5432", duration_ms=1.7, tables_read=["public.customers"],
            columns=["public.customers.name", "public.customers.phone"], sensitive_classes=["name", "phone"],
            rows=1, bytes=64, customer_keys=[scenario.customer_key(one)]),
            at(-1, 15, 20, 4), proxy, ev.Actor(db_user=zmin.db_user, end_user=zmin.os_user),
            f"{zmin.name} ({zmin.team}) looks up one customer from the CRM"),
        event(PROXY, ev.DbSession, ev.DbSessionPayload(
            session_id=session, phase="start", database="core", application_name="DBeaver 24.1",
            client_addr=wlei.addr, client_port=53122, server_addr="10.20.0.5", server_port=6543,
            auth_method="scram-sha-256", tls=True),
            at(0, 2, 10, 31), proxy, ev.Actor(db_user=wlei.db_user), f"{wlei.name} connects to core at night"),
        event(WORKSTATION, ev.DbSession, ev.DbSessionPayload(
            session_id=f"{wlei.addr}:53122-10.20.0.5:6543", phase="observed", client_addr=wlei.addr,
            client_port=53122, server_addr="10.20.0.5", server_port=6543,
            process=ev.ProcessInfo(pid=48213, name="dbeaver", exe="/opt/dbeaver/dbeaver", ppid=1702,
                                   username=wlei.os_user)),
            at(0, 2, 10, 33), ev.Source(type="sessions"), ev.Actor(os_user=wlei.os_user),
            f"{wlei.name}'s workstation: the connection belongs to dbeaver"),
        event(PROXY, ev.DbQuery, ev.DbQueryPayload(
            session_id=session, statement_type="SELECT", fingerprint=_fingerprint(bulk), statement=bulk,
            database="core", application_name="DBeaver 24.1", client_addr=wlei.addr, client_port=53122,
            server="10.20.0.5:5432", started_at=at(0, 2, 14, 5), duration_ms=2311.3,
            tables_read=["public.cards", "public.customers"],
            columns=["public.cards.card_no", "public.customers.customer_id", "public.customers.id_number",
                     "public.customers.name", "public.customers.phone"],
            sensitive_classes=["bank_card", "id_number", "name", "phone"], rows=rows, bytes=rows * 163,
            customer_keys=[scenario.customer_key(c) for c in read[:CUSTOMER_KEYS_CAP]], customer_keys_total=rows),
            at(0, 2, 14, 7), proxy, ev.Actor(db_user=wlei.db_user),
            f"{wlei.name} reads {rows:,} customers with ID and card numbers"),
        event(WORKSTATION, ev.DeviceMount, ev.DeviceMountPayload(
            action="added", mount_point=usb, device="/dev/sdb1", fstype="vfat", label="KINGSTON"),
            at(0, 2, 29, 10), ev.Source(type="files"), ev.Actor(os_user=wlei.os_user),
            "a USB stick is plugged into the workstation"),
        event(WORKSTATION, ev.FileExport, ev.FileExportPayload(
            path=f"{usb}/q4_customers.csv", action="created", size=rows * 171, destination="removable",
            sha256=hashlib.sha256(f"demo-{scenario.seed}".encode()).hexdigest(), mount_point=usb,
            owner=wlei.os_user, process=ev.ProcessInfo(pid=50122, name="cp", exe="/usr/bin/cp", ppid=49980,
                                                       username=wlei.os_user),
            counts={"id_number": rows, "bank_card": cards, "phone": rows, "email": 0}),
            at(0, 2, 31, 44), ev.Source(type="files"), ev.Actor(os_user=wlei.os_user),
            f"{wlei.name} copies a CSV with {rows:,} ID numbers onto it"),
    ]


# ---------------------------------------------------------------------------------------------- the site


class Progress:
    """Numbered steps on one line each; the last step can show a bar that redraws in place on a terminal."""

    def __init__(self, out: IO[str], steps: int) -> None:
        self.out, self.steps, self.n = out, steps, 0
        self.tty = out.isatty()
        self._started = time.monotonic()

    def step(self, name: str, detail: str) -> None:
        self.n += 1
        self.out.write(f"[{self.n}/{self.steps}] {name:<12} {detail}\n")
        self.out.flush()

    def bar(self, name: str, done: int, total: int, final: bool = False) -> None:
        if not (self.tty or final):
            return
        filled = 24 * done // max(total, 1)
        line = f"[{self.n + 1}/{self.steps}] {name:<12} [{'#' * filled}{'-' * (24 - filled)}] {done}/{total}"
        self.out.write(("\r" if self.tty else "") + line + ("\n" if final else ""))
        self.out.flush()
        if final:
            self.n += 1


class _Child:
    """A real process of ours, its output in a log file, stopped by its pid."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

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


class DemoError(CustosError):
    """A part of the demo did not come up; the message says which, with the end of its log."""


def _poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class DemoSite:
    """A collector and agents as real processes in `workdir`, on the embedded SQLite store."""

    def __init__(self, workdir: Path, agents: Sequence[str], progress: Progress) -> None:
        self.workdir, self.agents, self.progress = workdir, tuple(agents), progress
        self.database_url = f"sqlite:///{workdir / 'custos.db'}"
        self.tokens: dict[str, str] = {}
        self.children: list[_Child] = []
        self.url = ""
        self._http: httpx.Client | None = None
        root = str(Path(__file__).resolve().parents[1])  # so children import this same code, installed or not
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_")}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)

    def __enter__(self) -> DemoSite:
        try:
            self.prepare()
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def prepare(self) -> None:
        """Create the database at the newest schema; enroll the agents; make an analyst's API token."""
        from collector import credentials
        from collector.db import make_engine
        from collector.migrate import current, upgrade

        engine = make_engine(self.database_url)
        try:
            upgrade(engine)
            self.progress.step("database", f"{self.database_url} at schema {current(engine)}")
            for name in self.agents:
                self.tokens[name] = credentials.create(engine, name, "agent")
            self.tokens[ANALYST] = credentials.create(engine, ANALYST, "api", "analyst")
        finally:
            engine.dispose()
        self.progress.step("credentials", f"agents {', '.join(self.agents)} enrolled; an analyst API token made")

    def start(self) -> None:
        port_file = self.workdir / "collector.port"
        env = dict(self.env, CUSTOS_DATABASE_URL=self.database_url, CUSTOS_LISTEN="127.0.0.1:0")
        collector = self._spawn("collector", [sys.executable, "-m", "collector", "serve", "--port-file",
                                              str(port_file)], env)
        self._poll_child(collector, port_file.exists, "the collector's port")
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"
        self._http = httpx.Client(base_url=self.url, timeout=5.0,
                                  headers={"Authorization": f"Bearer {self.tokens[ANALYST]}"})
        self._poll_child(collector, self._healthy, "the collector's /healthz")
        self.progress.step("collector", f"listening on {self.url} (pid {collector.proc.pid})")
        started = []
        for name in self.agents:
            config = self._write_agent_config(name)
            env = dict(self.env, CUSTOS_AGENT_TOKEN=self.tokens[name])
            child = self._spawn(name, [sys.executable, "-m", "agent", "-v", "run", "--config", str(config)], env)
            started.append(f"{name} (pid {child.proc.pid})")
        self.progress.step("agents", f"{', '.join(started)} shipping to the collector")

    def agent_config(self, name: str) -> Path:
        return self.workdir / f"{name}.toml"

    def _write_agent_config(self, name: str) -> Path:
        quoted = {k: msgspec.json.encode(v).decode() for k, v in  # a JSON string is a TOML basic string
                  (("id", name), ("url", self.url), ("dir", str(self.workdir / name / "spool")))}
        path = self.agent_config(name)
        path.write_text(
            f"agent_id = {quoted['id']}\n[collector]\nurl = {quoted['url']}\n[spool]\ndir = {quoted['dir']}\n"
            '[ship]\nbatch_max_age = "100ms"\nbackoff_max = "2s"\n[heartbeat]\ninterval = "10s"\n'
        )
        return path

    def spool(self, planned: Sequence[PlannedEvent]) -> int:
        """Write the events into their agents' spools, as the sensors would; the running agents ship them."""
        written = 0
        for name in self.agents:
            events = [p.event for p in planned if p.agent == name]
            with open_spool(load_agent_config(self.agent_config(name), env={})) as spool:
                written += spool_events(spool, events)
        return written

    def stored(self, kind: str | None = None, after: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored events after seq `after` (optionally of one kind), read through the API as an analyst."""
        if self._http is None:
            raise DemoError("the collector is not running; start the site first")
        rows: list[dict[str, Any]] = []
        for _ in range(10_000):  # pages of `limit`; bounded
            params: dict[str, Any] = {"limit": limit}
            if kind:
                params["kind"] = kind
            if after is not None:
                params["after"] = after
            page = self._http.get("/api/v1/events", params=params).raise_for_status().json()
            rows += page["events"]
            if page["next_after"] is None or len(page["events"]) < limit:
                break
            after = page["next_after"]
        return rows

    def wait_for(self, ids: Sequence[str], timeout: float) -> dict[str, dict[str, Any]]:
        """The stored rows of `ids`, as they arrive, until all have or `timeout` passes."""
        wanted, found = set(ids), {}
        last_seq: int | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in self.children:
                if not child.alive():
                    raise DemoError(f"{child.name} exited {child.proc.returncode}:\n{child.tail()}")
            for row in self.stored(after=last_seq):
                last_seq = row["seq"]
                if row["event"]["id"] in wanted:
                    found[row["event"]["id"]] = row
            self.progress.bar("arriving", len(found), len(wanted))
            if len(found) == len(wanted):
                break
            time.sleep(0.1)
        self.progress.bar("arriving", len(found), len(wanted), final=True)
        return found

    def wait_for_heartbeats(self, timeout: float) -> set[str]:
        """The agents whose heartbeat is stored, once every agent's is or `timeout` passes."""
        beating: set[str] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            beating = {r["agent"] for r in self.stored(kind="agent.heartbeat")}
            if beating >= set(self.agents):
                break
            time.sleep(0.1)
        return beating

    def stop(self) -> None:
        """Agents first (they drain their shippers), then the collector."""
        if self._http is not None:
            self._http.close()
            self._http = None
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> _Child:
        child = _Child(name, args, env, self.workdir)
        self.children.append(child)
        return child

    def _poll_child(self, child: _Child, condition: Callable[[], Any], what: str) -> None:
        _poll(lambda: condition() or not child.alive(), 60, what)
        if not child.alive():
            raise DemoError(f"{child.name} exited {child.proc.returncode} before {what}:\n{child.tail()}")

    def _healthy(self) -> bool:
        try:
            return self._http is not None and self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False


# ---------------------------------------------------------------------------------------------- the summary


def describe(event: dict[str, Any]) -> str:
    p, kind = event["payload"], event["kind"]
    if kind == "db.query":
        classes = ", ".join(p.get("sensitive_classes", []))
        rows = p.get("rows", 0)
        return f"{', '.join(p.get('tables_read', []))}: {rows:,} row{'' if rows == 1 else 's'} ({classes})"
    if kind == "db.session":
        proc = p.get("process", {}).get("name")
        where = f"{p['phase']} {p.get('client_addr', '?')}:{p.get('client_port', '?')}"
        return where + (f" by {proc}" if proc else "")
    if kind == "file.export":
        counts = ", ".join(f"{k} {v:,}" for k, v in p.get("counts", {}).items() if v)
        return f"{p['size']:,} bytes, {p['destination']}, {p['path']}: {counts}"
    if kind == "device.mount":
        return f"{p['action']} {p.get('fstype', '')} {p['mount_point']}"
    return ""


def print_summary(planned: Sequence[PlannedEvent], arrived: dict[str, dict[str, Any]], out: IO[str]) -> bool:
    """The table of what arrived, in the order it happened; True when every planned event arrived."""
    out.write(f"\n{'seq':>4}  {'time (UTC+8)':<14}  {'agent':<11}  {'kind':<12}  {'who':<5}  what happened\n")
    for p in planned:
        row = arrived.get(p.event.id)
        actor = p.event.actor
        who = actor.end_user or actor.os_user or actor.db_user or ""
        when = p.event.ts.astimezone(ORG_TZ).strftime("%m-%d %H:%M:%S")
        kind = p.event.__struct_config__.tag
        seq = str(row["seq"]) if row else "-"
        out.write(f"{seq:>4}  {when:<14}  {p.agent:<11}  {kind:<12}  {who:<5}  {p.story}\n")
        detail = describe(row["event"]) if row else "MISSING: not in the collector's store"
        out.write(f"{'':>4}  {'':<14}  {'':<11}  {'':<12}  {'':<5}  └ {detail}\n")
    return len(arrived) == len(planned)


@contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise DemoError(f"--workdir {path} is not empty; give a new or empty directory")
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="custos-demo-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_demo(*, seed: int = 1, serve: bool = True, workdir: Path | None = None, out: IO[str] = sys.stdout,
             timeout: float = 30.0) -> int:
    """The whole demo; the exit status: 0 when every event arrived."""
    started = time.monotonic()
    scenario = build_scenario(seed)
    planned = scenario_events(scenario, dt.datetime.now(ORG_TZ).date() - dt.timedelta(days=1))
    progress = Progress(out, 6)
    with _workdir(workdir) as where:
        out.write(f"custos demo (seed {seed}): a collector and {len(AGENTS)} agents on this machine, in {where}\n")
        with DemoSite(where, AGENTS, progress) as site:
            progress.step("events", f"{site.spool(planned)} events written to the agents' spools")
            arrived = site.wait_for([p.event.id for p in planned], timeout)
            complete = print_summary(planned, arrived, out)
            beating = site.wait_for_heartbeats(timeout) if complete else set()
            if complete:
                out.write(f"\nall {len(planned)} events arrived in the collector's store, and heartbeats from "
                          f"{len(beating)} of {len(AGENTS)} agents; {time.monotonic() - started:.1f} s in all\n")
            else:
                out.write(f"\nonly {len(arrived)} of {len(planned)} events arrived within {timeout:.0f} s; "
                          f"logs are in {where}\n")
            if serve and complete:
                _serve_until_interrupted(site, out)
        out.write("stopped the agents and the collector\n")
    return 0 if complete else 1


def _serve_until_interrupted(site: DemoSite, out: IO[str]) -> None:
    out.write(f"\nThe collector keeps running at {site.url}. Read what it stored with:\n"
              f"  curl -H 'Authorization: Bearer {site.tokens[ANALYST]}' '{site.url}/api/v1/events?limit=20'\n"
              "Press Ctrl-C to stop.\n")
    out.flush()
    # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored, and Ctrl-C must still work.
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while all(child.alive() for child in site.children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
