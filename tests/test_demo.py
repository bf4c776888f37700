"""`custos demo`: the synthetic bank's fourteen days travel through real agent processes and a real collector, the
rules raise alerts, and the demo says which planted insiders were found.

The end-to-end tests (marked slow: each is a whole demo run) run `python -m collector demo` as a user would and look at its output, at the store it left
behind (with --workdir) and at the processes it started; the rest check the stages on their own.
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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from agent.events import PAYLOAD_TYPES
from collector.db import make_engine
from collector.demo import AGENTS, DemoBank, DemoError, build_bank, run_demo
from collector.demo.bank import DAYS, TITLES, default_start
from collector.demo.extras import business_record, has, rule_kinds
from collector.demo.outcome import SeenAlert, outcome, print_outcome, read_alerts
from rules.identity import read_directory_csv
from rules.parse import load_rules
from rules.scenario import TZ, replay_scenario
from tests.helpers.procs import base_env, wait_for

START = dt.date(2026, 3, 2)  # a fixed fortnight, so that the expected table does not move with the calendar
SEED = 3


def demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "demo", *args], env=base_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def results(output: str) -> dict[str, str]:
    """Planted scenario → FOUND / MISSED / PENDING, as the demo's table says."""
    out = {}
    for name, title in TITLES.items():
        m = re.search(rf"^{re.escape(title)}\s.*?\s(FOUND|MISSED|PENDING)\s", output, re.M)
        if m:
            out[name] = m.group(1)
    return out


def false_alerts(output: str) -> int:
    m = re.search(r"; (\d+) false alerts? in ([\d,]+) staff-days", output)
    assert m is not None, output
    return int(m.group(1))


def started_pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def expected_states() -> dict[str, str]:
    """Every planted scenario found; the loan-fraud link pending until the rule set has a `linkage` kind."""
    linkage = "linkage" in rule_kinds([])
    return {name: "FOUND" if linkage or name != "loan_fraud_link" else "PENDING" for name in TITLES}


@pytest.fixture(scope="module")
def bank() -> DemoBank:
    return build_bank(SEED, START)


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    workdir: Path


@pytest.fixture(scope="module")
def headless(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("demo")
    proc = demo("--no-serve", "--seed", str(SEED), "--start", START.isoformat(), "--workdir", str(tmp / "site"),
                cwd=tmp)
    return Run(proc, tmp / "site")


@pytest.mark.slow  # a whole demo run: about 30 s on a quiet machine, a minute on a busy one
def test_headless_demo_finds_every_planted_insider_and_exits_zero(headless: Run) -> None:
    out = headless.proc.stdout
    assert headless.proc.returncode == 0, out + headless.proc.stderr
    assert results(out) == expected_states()
    assert false_alerts(out) <= 2
    assert "every planted scenario was found" in out
    assert re.search(r"\[5/6\] replay\s+Sun 15 Mar .* shipped ([\d,]+)/\1 +stored \1 ", out), out  # the last day
    assert re.search(r"^\[6/6\] rules\s+[\d,]+ events evaluated, \d+ alerts", out, re.M), out


@pytest.mark.slow  # a whole demo run: about 30 s on a quiet machine, a minute on a busy one
def test_headless_demo_stores_the_alerts_the_engine_raises_on_the_same_events(headless: Run, bank: DemoBank) -> None:
    """The real path (spools, shippers, HTTP, store, rule worker) changes nothing in the verdict."""
    alerts, engine = replay_scenario(bank.scenario, load_rules([headless.workdir / "rules"]))
    db = make_engine(f"sqlite:///{headless.workdir / 'custos.db'}")
    try:
        stored = read_alerts(db)
    finally:
        db.dispose()
    latest: dict[str, Any] = {}  # a rule that reports a growing case sends revisions of one alert: the store keeps
    for a in alerts:             # the newest
        if a.alert_id not in latest or getattr(a, "revision", 0) >= getattr(latest[a.alert_id], "revision", 0):
            latest[a.alert_id] = a
    assert len({a.alert_id for a in stored}) == len(stored)
    assert Counter((a.rule_id, a.group, a.ts) for a in stored) == Counter(
        (a.rule_id, a.group, a.ts) for a in latest.values())
    assert not engine.errors
    shown = re.search(r"; (\d+) alerts in all;", headless.proc.stdout)
    assert shown is not None and int(shown.group(1)) == len(stored) > 0


@pytest.mark.slow  # a whole demo run: about 30 s on a quiet machine, a minute on a busy one
def test_headless_demo_stored_every_event_hashed_and_left_nothing_running(headless: Run, bank: DemoBank) -> None:
    with sqlite3.connect(headless.workdir / "custos.db") as db:
        rows = db.execute("SELECT event_id, agent, kind, body FROM events").fetchall()
        people = db.execute("SELECT count(*) FROM directory_people").fetchone()[0]
    # Every event of the bank, once. A business-event intake (where the collector has one) names the lending
    # system's records itself, so those are counted by kind.
    ids = {e.id for e in bank.scenario.events if not e.__struct_config__.tag.startswith("business.")}
    by_agent = Counter(agent for event_id, agent, _, _ in rows if event_id in ids)
    assert sum(by_agent.values()) == len(ids)
    business = Counter(e.__struct_config__.tag for e in bank.scenario.events if e.__struct_config__.tag.startswith("b"))
    assert Counter(kind for _, agent, kind, _ in rows if agent == "lending") == business
    assert set(by_agent) | {"lending"} == {a.name for a in AGENTS}
    assert people == len(bank.scenario.people)
    # Customer identifiers (CUST0000001 in the scenario) reach the store only as keyed hashes.
    assert not any(re.search(r"CUST\d{7}", body) for _, _, _, body in rows)
    pids = started_pids(headless.proc.stdout)
    posted = "lending (posting to" in headless.proc.stdout  # a collector with its own business-event intake
    assert len(pids) == 1 + len(AGENTS) - posted
    assert all(gone(pid) for pid in pids), "the demo left processes running"
    assert "Traceback" not in (headless.workdir / "logs" / "collector.log").read_text()


@pytest.mark.slow  # a whole demo run: about 30 s on a quiet machine, a minute on a busy one
def test_demo_without_the_rules_that_catch_the_leaver_misses_her_and_exits_non_zero(tmp_path: Path) -> None:
    proc = demo("--no-serve", "--seed", str(SEED), "--start", START.isoformat(), "--without-rule",
                "custos.access_after_end_date", "--without-rule", "custos.outside_assignment", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    expected = dict(expected_states(), leaver_after_end_date="MISSED")
    assert results(proc.stdout) == expected
    assert "NOT every planted scenario was found" in proc.stdout
    assert "left out: custos.access_after_end_date, custos.outside_assignment" in proc.stdout


@pytest.mark.slow  # a whole demo run: about 30 s on a quiet machine, a minute on a busy one
def test_demo_keeps_the_collector_serving_until_interrupted(tmp_path: Path) -> None:
    log = tmp_path / "demo.out"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "collector", "demo", "--seed", "2"], env=base_env(),
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Press Ctrl-C" in log.read_text() or proc.poll() is not None, 240, "the demo to serve")
        text = log.read_text()
        assert proc.poll() is None, text
        assert results(text) == expected_states()  # the default fortnight: the two weeks that ended last Sunday
        token, url = re.search(r"Bearer (\S+)' '(http://127\.0\.0\.1:\d+)/", text).groups()  # type: ignore[union-attr]
        answer = httpx.get(f"{url}/api/v1/events", params={"kind": "file.export", "limit": 1000},
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200
        assert any(e["event"]["payload"]["destination"] == "removable" for e in answer.json()["events"])
        if has("collector.web") and has("collector.users"):
            logins = dict(re.findall(r"^\s+(analyst|manager-loans) / (\S+)  \(", text, re.M))
            assert set(logins) == {"analyst", "manager-loans"}, text
            assert log_in(url, "analyst", logins["analyst"]) == "/alerts"
            assert log_in(url, "manager-loans", logins["manager-loans"]) == "/summaries"  # a manager's landing
            assert log_in(url, "analyst", "not-the-password") is None
        else:
            assert "the web UI, with log-ins for an analyst and a manager, comes with the UI work" in text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopped the agents and the collector" in text
    assert all(gone(pid) for pid in started_pids(text))


def log_in(url: str, user: str, password: str) -> str | None:
    """Log in through the web UI's form; where it sends the user, or None when refused."""
    with httpx.Client(base_url=url, timeout=10) as client:
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None, page.text
        answer = client.post("/login", data={"csrf": csrf.group(1), "username": user, "password": password,
                                             "next": "/alerts"})
        if answer.status_code != 303:
            return None
        landing = answer.headers["location"]
        assert client.get(landing).status_code == 200
        return landing


# -- the stages on their own ------------------------------------------------------------------------------------


def test_bank_gives_every_event_to_one_agent_on_its_local_day(bank: DemoBank) -> None:
    assert bank.days == DAYS and bank.start == START
    assert sum(len(evs) for day in bank.by_day for evs in day.values()) == bank.total
    teams = {p.staff_id: p.team for p in bank.scenario.people}
    for day, agents in enumerate(bank.by_day):
        for agent, events in agents.items():
            assert [e.ts for e in events] == sorted(e.ts for e in events)
            assert {(e.ts.astimezone(TZ).date() - START).days for e in events} == {day}
            for e in events:
                if e.agent_id.startswith("ws-"):
                    branch = teams[e.agent_id.removeprefix("ws-")] == "collections"
                    assert agent == ("ws-branch-north" if branch else "ws-hq")
                else:
                    assert agent == e.agent_id
    assert {k.split(".")[0] for k in (e.__struct_config__.tag for e in bank.by_day[3]["lending"])} == {"business"}


def test_default_bank_is_the_two_weeks_that_ended_last_sunday() -> None:
    now = dt.datetime(2026, 11, 27, 4, 0, tzinfo=dt.timezone.utc)  # a Friday
    assert default_start(now.date()) == dt.date(2026, 11, 9)
    recent = build_bank(1, dt.date(2026, 11, 12), now=now)  # a Thursday: its week's Monday is taken
    assert recent.start == dt.date(2026, 11, 9)
    assert recent.end == dt.datetime(2026, 11, 22, 22, 0, tzinfo=dt.timezone.utc)  # Monday 00:00 in Vilnius
    assert max(e.ts for e in recent.scenario.events) < recent.end


def test_bank_refuses_a_fortnight_that_has_not_ended() -> None:
    with pytest.raises(DemoError, match="not past yet"):
        build_bank(1, dt.date(2026, 11, 16), now=dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc))


def test_directory_csv_reads_back_as_the_scenarios_people(tmp_path: Path, bank: DemoBank) -> None:
    bank.write_directory(tmp_path / "people.csv")
    assert read_directory_csv(tmp_path / "people.csv") == bank.scenario.people
    assert any(p.end_date for p in bank.scenario.people) and any(p.shift for p in bank.scenario.people)


def test_outcome_says_found_missed_pending_and_lists_false_alerts(bank: DemoBank) -> None:
    planted = {p.name: p for p in bank.scenario.planted}

    def alert(who: str, ts: dt.datetime, rule: str = "custos.x") -> SeenAlert:
        staff = None if who.startswith("db:") else who
        return SeenAlert(f"a{ts.timestamp()}{who}", rule, "high", staff, who, ts, f"{who} did it", {})

    hits = [alert(p.who, p.start) for name, p in planted.items() if name not in ("slow_leaker", "loan_fraud_link")]
    stray = alert("it05", dt.datetime(2026, 3, 3, 9, tzinfo=dt.timezone.utc), "custos.first_seen_origin")
    without_linkage = outcome(bank, hits + [stray], {"threshold", "match"})
    states = {name: state for name, _, state, _ in without_linkage.rows()}
    assert states == {**{n: "FOUND" for n in planted}, "slow_leaker": "MISSED", "loan_fraud_link": "PENDING"}
    assert not without_linkage.all_found
    assert [a.staff_id for a in without_linkage.report.false_alerts] == ["it05"]
    text = io.StringIO()
    print_outcome(text, without_linkage)
    assert results(text.getvalue()) == states
    assert "4 of 5 planted scenarios found (1 pending)" in text.getvalue()
    assert "1 false alert in 840 staff-days" in text.getvalue() and "false: first_seen_origin: it05" in text.getvalue()
    with_linkage = outcome(bank, hits + [alert(planted["slow_leaker"].who, planted["slow_leaker"].end)],
                           {"linkage"})
    assert {n: s for n, _, s, _ in with_linkage.rows()}["loan_fraud_link"] == "MISSED"
    assert with_linkage.report.missed == ["loan_fraud_link"] and not with_linkage.all_found


def test_business_records_carry_each_events_payload_and_its_own_id(bank: DemoBank) -> None:
    events = [e for day in bank.by_day for e in day.get("lending", [])]
    assert {e.__struct_config__.tag for e in events} == {"business.loan_application", "business.contact_change",
                                                        "business.device_login", "business.fraud_confirmed"}
    for e in events[:200] + [e for e in events if e.__struct_config__.tag == "business.fraud_confirmed"]:
        record = business_record(e)
        kind = f"business.{record.pop('type')}"
        assert kind == e.__struct_config__.tag and record.pop("id") == e.id
        assert dt.datetime.fromisoformat(record.pop("ts")) == e.ts
        assert msgspec.convert(record, PAYLOAD_TYPES[kind], strict=False) == e.payload


def test_pg_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    proc = demo("--no-serve", "--pg", "postgresql://postgres:secret@127.0.0.1:1/test", cwd=tmp_path)
    assert proc.returncode == 2
    if has("agent.proxy"):
        assert "cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:1/test" in proc.stderr
    else:
        assert "which this checkout does not have yet; run the demo without --pg" in proc.stderr
    assert "secret" not in proc.stderr + proc.stdout
    assert not list(tmp_path.iterdir())  # refused before anything was made


def test_demo_refuses_a_workdir_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "custos.db").write_text("a previous run")
    with pytest.raises(DemoError, match="not empty"):
        run_demo(seed=1, serve=False, workdir=tmp_path, out=io.StringIO(), start=START)
    assert (tmp_path / "custos.db").read_text() == "a previous run"


def test_demo_refuses_to_leave_out_a_rule_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="custos.no_such_rule: no such rule"):
        run_demo(seed=1, serve=False, workdir=tmp_path, out=io.StringIO(), start=START,
                 without=("custos.no_such_rule",))
    assert not list(tmp_path.iterdir())
