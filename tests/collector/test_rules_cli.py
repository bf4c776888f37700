"""`custos rules test|lint|replay`, `custos directory import` and `custos assignments import`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from collector.alerts import AlertStore
from collector.db import make_engine
from collector.store import EventStore
from rules.testing import build_events
from tests.helpers.procs import base_env, run_cli

BAD_RULE = """\
id: site.bad
title: Bad
kind: threshold
severity: urgent
tags: [T1213]
events: [db.query]
aggregate: count
window: 1h
limit: -1
"""


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], env=base_env(CUSTOS_DATABASE_URL=db),
                          capture_output=True, text=True, timeout=120)


def test_rules_test_prints_a_verdict_per_case_and_exits_zero_when_all_pass(sqlite_url: str) -> None:
    out = cli("rules", "test", db=sqlite_url)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "PASS custos.honeytoken_read: fires on any read of a canary customer, even one row" in lines
    assert lines[-1].endswith(" passed, 0 failed")


def test_rules_test_fails_on_a_site_rule_whose_case_fails(tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "r.yaml").write_text(
        "id: site.any_read\ntitle: Any read\nkind: match\nseverity: low\ntags: [T1213]\nevents: [db.query]\n"
        "tests:\n  - name: wrongly expects silence\n    expect: quiet\n    events: [{who: alice}]\n")
    out = cli("rules", "test", str(tmp_path), "--rule", "site.any_read", db=sqlite_url)
    assert out.returncode == 1
    assert "FAIL site.any_read: wrongly expects silence  (1 alerts, expected 0)" in out.stdout


def test_rules_lint_names_file_line_and_field(tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_RULE)
    out = cli("rules", "lint", str(tmp_path), db=sqlite_url)
    assert out.returncode == 1
    assert f"{tmp_path / 'bad.yaml'}:4: severity: must be one of info, low, medium, high, critical, not 'urgent'" \
        in out.stdout
    assert f"{tmp_path / 'bad.yaml'}:9: limit: must be a positive number" in out.stdout


def test_replay_stores_history_alerts_once(tmp_path: Path, sqlite_url: str) -> None:
    run_cli("collector", "db", "upgrade", env=base_env(CUSTOS_DATABASE_URL=sqlite_url))
    directory = tmp_path / "people.csv"
    directory.write_text("staff_id,name,team,db_users\nalice,Alice Berg,loans,alice;alice2\n")
    assert "1 people imported" in cli("directory", "import", str(directory), db=sqlite_url).stdout
    engine = make_engine(sqlite_url)
    try:
        import datetime as dt
        day = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).replace(hour=10, minute=0)
        EventStore(engine).insert(build_events([
            {"who": "alice2", "rows": 3000, "classes": ["card_number"], "at": day.isoformat()},
            {"who": "alice2", "rows": 3000, "classes": ["card_number"], "at": (day + dt.timedelta(minutes=5))
             .isoformat()}]), agent="proxy-1")
        first = cli("rules", "replay", "--since", "7d", "--rule", "custos.bulk_sensitive_read", db=sqlite_url)
        assert first.returncode == 0, first.stderr
        assert "2 events evaluated" in first.stdout and "1 new stored" in first.stdout
        (alert,) = AlertStore(engine).list()
        assert alert.staff_id == "alice" and alert.origin == "replay"
        second = cli("rules", "replay", "--since", "7d", db=sqlite_url)
        assert "0 new stored" in second.stdout
        assert len(AlertStore(engine).list()) == 1
    finally:
        engine.dispose()
