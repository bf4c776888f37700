"""`custos demo`: events of a scenario travel through real agent processes and a real collector, and arrive.

The end-to-end tests run `python -m collector demo` as a user would and look at its output, at the store it left
behind (with --workdir) and at the processes it started.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest

from agent import events as ev
from collector.demo import DemoError, build_scenario, print_summary, scenario_events
from collector.demo import run_demo as run_demo_in_process
from tests.helpers.procs import base_env, wait_for

DAY = dt.date(2026, 11, 26)


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "demo", *args], env=base_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def started_pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_demo_without_serving_shows_every_event_arriving_and_exits_zero(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = run_demo("--no-serve", "--seed", "5", "--workdir", str(workdir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "all 6 events arrived in the collector's store" in out
    assert "heartbeats from 2 of 2 agents" in out
    assert "MISSING" not in out
    planned = scenario_events(build_scenario(5), DAY)
    for p in planned:
        assert p.story in out
    # The bulk read and the export are shown as stored, with the seed's row count.
    bulk = next(p.event for p in planned if isinstance(p.event, ev.DbQuery) and p.event.payload.rows > 1)
    assert re.search(rf"^\s+\d+ .* db\.query .*\n.*{bulk.payload.rows:,} rows", out, re.M)
    assert re.search(r"^\s+\d+ .* file\.export .*\n.*removable", out, re.M)

    # What the output claims is in the store it left behind, under the enrolled agents' names.
    with sqlite3.connect(workdir / "custos.db") as db:
        rows = db.execute("SELECT kind, agent, body FROM events").fetchall()
    stored = {(kind, agent) for kind, agent, _ in rows}
    assert {("db.query", "db-proxy-01"), ("db.session", "db-proxy-01"), ("db.session", "ws-loans-17"),
            ("device.mount", "ws-loans-17"), ("file.export", "ws-loans-17"),
            ("agent.heartbeat", "db-proxy-01"), ("agent.heartbeat", "ws-loans-17")} <= stored
    assert sum(1 for kind, _, _ in rows if kind != "agent.heartbeat") == 6
    # Customer identifiers reach the store only as keyed hashes.
    customers = set(build_scenario(5).customers)
    for _, _, body in rows:
        assert not customers & set(re.findall(r"C\d{7}", body))

    pids = started_pids(out)
    assert len(pids) == 3  # the collector and two agents
    assert all(gone(pid) for pid in pids), "the demo left processes running"


def test_demo_keeps_the_collector_serving_until_interrupted(tmp_path: Path) -> None:
    log = tmp_path / "demo.out"
    with open(log, "w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "collector", "demo", "--seed", "2"], env=base_env(),
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Press Ctrl-C" in log.read_text() or demo.poll() is not None, 90, "the demo to serve")
        text = log.read_text()
        assert demo.poll() is None, text
        token, url = re.search(r"Bearer (\S+)' '(http://127\.0\.0\.1:\d+)/", text).groups()  # type: ignore[union-attr]
        answer = httpx.get(f"{url}/api/v1/events", params={"kind": "file.export"},
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200
        assert [e["event"]["kind"] for e in answer.json()["events"]] == ["file.export"]
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    text = log.read_text()
    assert "stopped the agents and the collector" in text
    assert all(gone(pid) for pid in started_pids(text))


def test_scenario_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    def payloads(seed: int) -> list[bytes]:
        return [msgspec.json.encode(p.event.payload) for p in scenario_events(build_scenario(seed), DAY)]

    assert payloads(11) == payloads(11)
    assert payloads(11) != payloads(12)


def test_scenario_events_are_valid_ordered_and_carry_no_clear_customer_ids() -> None:
    scenario = build_scenario(4)
    planned = scenario_events(scenario, DAY)
    assert [p.event.ts for p in planned] == sorted(p.event.ts for p in planned)
    for p in planned:
        encoded = ev.encode(p.event)
        assert ev.decode(encoded) == p.event
        assert not set(scenario.customers) & set(re.findall(r"C\d{7}", encoded.decode()))
    bulk = max((p.event for p in planned if isinstance(p.event, ev.DbQuery)), key=lambda e: e.payload.rows)
    assert "$1" in bulk.payload.statement and "'" not in bulk.payload.statement  # redacted: placeholders only
    assert bulk.payload.customer_keys_total == bulk.payload.rows > len(bulk.payload.customer_keys)
    export = next(p.event for p in planned if isinstance(p.event, ev.FileExport))
    assert export.payload.destination == "removable"
    assert export.payload.counts["id_number"] == bulk.payload.rows


def test_summary_marks_an_event_that_did_not_arrive() -> None:
    planned = scenario_events(build_scenario(1), DAY)
    out = io.StringIO()
    arrived = {p.event.id: {"seq": i + 1, "agent": p.agent, "event": msgspec.json.decode(ev.encode(p.event))}
               for i, p in enumerate(planned[1:])}
    assert print_summary(planned, arrived, out) is False
    assert out.getvalue().count("MISSING") == 1
    assert print_summary(planned[1:], arrived, io.StringIO()) is True


def test_demo_refuses_a_workdir_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "custos.db").write_text("a previous run")
    with pytest.raises(DemoError, match="not empty"):
        run_demo_in_process(seed=1, serve=False, workdir=tmp_path, out=io.StringIO())
    assert (tmp_path / "custos.db").read_text() == "a previous run"
