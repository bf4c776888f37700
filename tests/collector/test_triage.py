"""Triage: status changes with their history and audit entry, cases of one person's alerts close in time, and
risk scores that decay with age and ignore alerts closed as harmless."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select

from collector import triage
from collector.alerts import AlertStore
from collector.db import audit_log
from rules.alerts import Alert

T0 = dt.datetime(2026, 11, 16, 10, 0, tzinfo=dt.timezone.utc)


def alert(n: int, who: str, hours: float, severity: str = "high", team: str = "loans") -> Alert:
    ts = T0 + dt.timedelta(hours=hours)
    return Alert(f"{n:032x}", "custos.bulk_sensitive_read", "Bulk read", severity, ("T1213",), who, ts, ts, ts,
                 f"{who} read a lot", (f"ev-{n}",), staff_id=who, person_name=who.title(), team=team)


def test_status_assignee_and_comment_changes_are_kept_with_who_did_them(engine: Engine) -> None:
    AlertStore(engine).save([alert(1, "alice", 0)])
    aid = f"{1:032x}"
    changes = triage.update_alert(engine, aid, "ana", role="analyst", status="acknowledged", assignee="ana",
                                  comment="looking", now=T0)
    assert changes == [("status", "new", "acknowledged"), ("assignee", None, "ana"), ("comment", None, "looking")]
    assert triage.update_alert(engine, aid, "ana", status="acknowledged", now=T0) == []  # nothing changed
    triage.update_alert(engine, aid, "bo", status="closed_tp", now=T0 + dt.timedelta(hours=1))
    row = triage.get_alert(engine, aid, T0)
    assert row is not None and row.status == "closed_tp" and row.assignee == "ana" and row.closed
    hist = [(h["actor"], h["field"], h["old"], h["new"]) for h in triage.history(engine, aid)]
    assert hist == [("ana", "status", "new", "acknowledged"), ("ana", "assignee", None, "ana"),
                    ("ana", "comment", None, "looking"), ("bo", "status", "acknowledged", "closed_tp")]
    with engine.connect() as conn:
        audited = conn.execute(select(audit_log.c.actor, audit_log.c.staff_id)
                               .where(audit_log.c.action == "change")).all()
    assert [tuple(a) for a in audited] == [("ana", "alice"), ("bo", "alice")]
    with pytest.raises(triage.TriageError):
        triage.update_alert(engine, aid, "ana", status="resolved")


def test_alerts_of_one_person_close_in_time_form_one_case(engine: Engine) -> None:
    AlertStore(engine).save([alert(1, "alice", 0), alert(2, "alice", 5), alert(3, "alice", 28),
                             alert(4, "alice", 80), alert(5, "bob", 1)])
    rows = triage.list_alerts(engine, triage.Query(), T0)
    case_of = {int(a.alert_id, 16): a.case_id for a in rows}
    assert case_of[1] == case_of[2] == case_of[3]  # each within a day of the one before
    assert case_of[4] != case_of[1] and case_of[5] != case_of[1]
    assert {a.alert_id for a in triage.case_alerts(engine, case_of[2], T0)} == {f"{i:032x}" for i in (1, 2, 3)}


def test_risk_decays_with_age_ignores_harmless_closures_and_orders_the_queue(engine: Engine) -> None:
    AlertStore(engine).save([alert(1, "alice", 0, "critical"), alert(2, "bob", 0, "medium"),
                             alert(3, "bob", 1, "medium"), alert(4, "carol", 0, "high")])
    now = T0 + dt.timedelta(days=7)  # one half-life later
    rows = triage.list_alerts(engine, triage.Query(), now)
    risk = {a.who: a.risk for a in rows}
    assert risk["alice"] == pytest.approx(15 / 2, abs=0.01)
    assert risk["carol"] == pytest.approx(7 / 2, abs=0.01)
    assert [a.who for a in rows][0] == "alice"
    triage.update_alert(engine, f"{1:032x}", "ana", status="closed_fp", now=now)
    rows = triage.list_alerts(engine, triage.Query(status="open"), now)
    assert [a.who for a in rows][0] == "carol" and "alice" not in {a.who for a in rows}


def test_a_manager_query_sees_only_their_team(engine: Engine) -> None:
    AlertStore(engine).save([alert(1, "alice", 0), alert(2, "frank", 0, team="risk")])
    rows = triage.list_alerts(engine, triage.Query(teams_allowed=frozenset({"risk"})), T0)
    assert [a.who for a in rows] == ["frank"]
