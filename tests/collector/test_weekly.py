"""The weekly access summary: its figures from stored events and alerts, the things worth attention, attestations
with reminders and escalation, the on-demand command, and the scheduled job's once-only claim and catch-up."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from collector.alerts import AlertStore
from collector.config import CollectorConfig, RulesSection
from collector.db import audit_log, make_engine, notify_outbox
from collector.migrate import upgrade
from collector.rules_state import import_directory
from collector.scheduler import Jobs, claim, release
from collector.store import EventStore
from collector.ui_config import NotifySection, Receiver, WeeklySection
from collector.weekly import build_week, last_week, parse_week, week_of
from collector.weekly_jobs import answer, list_attestations, make_summary, remind
from rules.alerts import Alert
from rules.identity import Person
from rules.testing import build_events
from tests.helpers.procs import base_env, run_cli

WEEK = "2026-W47"  # Monday 16 – Sunday 22 November 2026
UTC = dt.timezone.utc
PEOPLE = [Person("alice", "Alice Berg", "loans", manager="mia", db_users=("alice",), os_users=("alice",)),
          Person("bob", "Bob Kalns", "loans", manager="mia", db_users=("bob",), os_users=("bob",)),
          Person("mia", "Mia Ozola", "loans", db_users=("mia",), email="mia@bank.example"),
          Person("frank", "Frank Ozols", "risk", db_users=("frank",))]


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    e = make_engine(sqlite_url)
    upgrade(e)
    import_directory(e, PEOPLE)
    events = build_events([
        *[{"who": "alice", "customers": 10, "customers_from": 1 + 10 * i, "rows": 100, "classes": ["card_number"],
           "at": f"2026-11-17T{9 + i:02d}:00:00Z"} for i in range(3)],
        {"who": "alice", "customers": 10, "customers_from": 31, "rows": 100, "classes": ["card_number"],
         "at": "2026-11-18T02:00:00Z"},  # at night
        {"kind": "file.export", "who": "alice", "classes": {"card_number": 50}, "at": "2026-11-18T02:20:00Z",
         "payload": {"destination": "removable", "path": "/media/usb/cards.csv"}},
        *[{"who": "bob", "customers": 2, "customers_from": 5, "at": f"2026-11-19T1{i}:00:00Z"} for i in range(2)],
        {"who": "alice", "customers": 5, "rows": 5, "classes": ["name"], "at": "2026-11-10T10:00:00Z"},  # W46
        {"who": "frank", "customers": 3, "at": "2026-11-17T10:00:00Z"},  # another team
    ])
    EventStore(e).insert(events, agent="proxy-1")
    ts = dt.datetime(2026, 11, 18, 2, 20, tzinfo=UTC)
    AlertStore(e).save([Alert("a" * 32, "custos.export_after_bulk_read", "Export after bulk read", "critical", (),
                              "alice", ts, ts, ts, "Alice Berg copied card data to USB", (events[4].id,),
                              staff_id="alice", person_name="Alice Berg", team="loans")])
    yield e
    e.dispose()


def _config(**weekly: object) -> CollectorConfig:
    mail = Receiver(name="mail", type="email", kinds=["weekly", "reminder"], to=["sec@bank.example"])
    soc = Receiver(name="soc", type="webhook", url="http://127.0.0.1:9/", kinds=["escalation"])
    return CollectorConfig(rules=RulesSection(enabled=False), weekly=WeeklySection(**weekly),  # type: ignore[arg-type]
                           notify=NotifySection(receivers=[mail, soc]))


def test_iso_weeks_round_trip_and_last_week_is_the_one_before_today() -> None:
    assert parse_week(WEEK) == dt.date(2026, 11, 16) and week_of(dt.date(2026, 11, 22)) == WEEK
    assert last_week(dt.datetime(2026, 11, 23, 7, 0, tzinfo=UTC), UTC) == WEEK
    with pytest.raises(ValueError, match="2026-W47"):
        parse_week("November")


def test_figures_per_person_team_totals_and_week_over_week(engine: Engine) -> None:
    tw = build_week(engine, "loans", WEEK, UTC)
    alice = next(p for p in tw.people if p.staff_id == "alice")
    assert (alice.queries, alice.sensitive_rows, alice.customers, alice.exports, alice.removable) == (4, 400, 40, 1, 1)
    assert alice.off_hours == 1 and alice.off_hours_share == 0.25
    assert (alice.alerts, alice.open_alerts, alice.alert_severity) == (1, 1, "critical")
    bob = next(p for p in tw.people if p.staff_id == "bob")
    assert (bob.queries, bob.sensitive_rows, bob.customers) == (2, 0, 2)
    assert "frank" not in {p.staff_id for p in tw.people}
    assert tw.totals["queries"] == 6 and tw.totals["customers"] == 40  # bob's two are among alice's
    assert tw.previous["queries"] == 1 and tw.change("queries") == "+500%"
    assert any("removable media" in line for line in tw.attention)
    assert any("Export after bulk read (critical)" in line for line in tw.attention)
    assert set(tw.flagged) == {"alice"}
    assert tw.people[0].staff_id == "alice"  # people with alerts first


def test_attestation_answers_go_to_the_audit_trail_and_only_the_team_may_answer(engine: Engine) -> None:
    make_summary(engine, _config(), "loans", WEEK)
    (att,) = list_attestations(engine, "loans", WEEK)
    assert att.staff_id == "alice" and att.answer is None
    with pytest.raises(ValueError):
        answer(engine, att.id, "mona", "manager", "risk", "confirm")
    done = answer(engine, att.id, "lars", "manager", "loans", "question", "why at night?")
    assert done.answer == "question" and list_attestations(engine, "loans", WEEK)[0].note == "why at night?"
    with engine.connect() as conn:
        entry = conn.execute(select(audit_log).where(audit_log.c.action == "attest")).one()._mapping
    assert (entry["actor"], entry["staff_id"], json.loads(entry["detail"])["answer"]) == ("lars", "alice", "question")


def test_unanswered_attestations_are_reminded_then_escalated(engine: Engine) -> None:
    cfg = _config(remind_after_days=2, escalate_after_days=5)
    t0 = dt.datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    make_summary(engine, cfg, "loans", WEEK, now=t0)
    assert remind(engine, cfg, t0 + dt.timedelta(days=1)) == {"reminded": 0, "escalated": 0}
    assert remind(engine, cfg, t0 + dt.timedelta(days=2)) == {"reminded": 1, "escalated": 0}
    assert remind(engine, cfg, t0 + dt.timedelta(days=2, hours=5)) == {"reminded": 0, "escalated": 0}  # daily
    assert remind(engine, cfg, t0 + dt.timedelta(days=3)) == {"reminded": 1, "escalated": 0}
    assert remind(engine, cfg, t0 + dt.timedelta(days=5)) == {"reminded": 0, "escalated": 1}
    assert remind(engine, cfg, t0 + dt.timedelta(days=6)) == {"reminded": 0, "escalated": 0}  # once
    with engine.connect() as conn:
        queued = conn.execute(select(notify_outbox.c.receiver, notify_outbox.c.kind, notify_outbox.c.payload)).all()
    assert [(r, k) for r, k, _ in queued] == [("mail", "reminder"), ("mail", "reminder"), ("soc", "escalation")]
    assert json.loads(queued[0][2])["to"] == ["mia@bank.example"]


def test_report_weekly_command_writes_the_summary_as_html(engine: Engine, sqlite_url: str, tmp_path: Path) -> None:
    out = tmp_path / "summary.html"
    text = run_cli("collector", "report", "weekly", "--team", "loans", "--week", WEEK, "--out", str(out),
                   env=base_env(CUSTOS_DATABASE_URL=sqlite_url))
    assert f"weekly summary of loans for {WEEK} written" in text and "removable media" in text
    html = out.read_text()
    assert "<svg" in html and "Alice Berg" in html and "Please confirm" in html


def test_a_weekly_run_is_claimed_once_and_a_dead_holder_is_taken_over(engine: Engine) -> None:
    t0 = dt.datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert claim(engine, "weekly", "weekly:W", "p1", now=t0)
    assert not claim(engine, "weekly", "weekly:W", "p2", now=t0)
    assert claim(engine, "weekly", "weekly:W", "p2", now=t0 + dt.timedelta(hours=2))  # p1's lease ran out
    release(engine, "weekly", "weekly:W", "p2", True)
    assert not claim(engine, "weekly", "weekly:W", "p3", now=t0 + dt.timedelta(days=1))


def test_a_monday_run_missed_while_down_is_caught_up_within_the_grace_period(engine: Engine) -> None:
    cfg = _config(timezone="Europe/Vilnius", misfire_grace_minutes=720)
    monday_8 = dt.datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # 08:00 in Vilnius
    jobs = Jobs(engine, cfg, clock=lambda: monday_8 + dt.timedelta(hours=3))
    assert jobs.last_due(monday_8 + dt.timedelta(hours=3)) == monday_8
    assert jobs.weekly_key(monday_8) == WEEK
    assert jobs.last_due(monday_8 + dt.timedelta(hours=13)) is None  # past the grace: not run late
    assert jobs.run_weekly(monday_8)
    assert not jobs.run_weekly(monday_8)  # the same week again: refused
    with engine.connect() as conn:
        kinds = [k for (k,) in conn.execute(select(notify_outbox.c.kind))]
    assert kinds == ["weekly", "weekly"]  # one per team
