"""Alert triage: status (new → acknowledged → closed as true positive, false positive or benign), assignee,
comments and the full history of who changed what; cases (one person's alerts close in time) and per-person risk
scores (a decaying sum of alert severities) that rank who to look at first.

The status lives in `alerts.status` (the rule engine writes new alerts with `new`); everything else about
triage in the tables of migration 0004. Every change is one transaction: the alert, its history, the audit log.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent.errors import CustosError
from collector import audit
from collector.db import alert_history, alert_triage, alerts

STATUSES = ("new", "acknowledged", "closed_tp", "closed_fp", "closed_benign")
STATUS_WORDS = {"new": "new", "acknowledged": "acknowledged", "closed_tp": "closed: true positive",
                "closed_fp": "closed: false positive", "closed_benign": "closed: benign"}
SEVERITY_WEIGHT = {"info": 0.5, "low": 1.0, "medium": 3.0, "high": 7.0, "critical": 15.0}
SEVERITY_ORDER = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
NOT_COUNTED = ("closed_fp", "closed_benign")  # judged harmless: no longer raise the person's risk
HALF_LIFE_DAYS = 7.0
CASE_GAP = dt.timedelta(hours=24)


class TriageError(CustosError):
    """An alert cannot be changed as asked."""


@dataclass(frozen=True)
class AlertRow:
    alert_id: str
    rule_id: str
    title: str
    severity: str
    tags: list[str]
    who: str  # staff id, or the group the rule alerted on (db:shared_account)
    staff_id: str | None
    person_name: str | None
    team: str | None
    ts: dt.datetime
    first_ts: dt.datetime
    last_ts: dt.datetime
    summary: str
    evidence: list[str]
    measures: dict[str, Any]
    status: str
    assignee: str | None = None
    risk: float = 0.0  # the person's risk score
    case_id: str = ""
    case_size: int = 1

    @property
    def closed(self) -> bool:
        return self.status.startswith("closed")

    @property
    def status_words(self) -> str:
        return STATUS_WORDS.get(self.status, self.status)

    @property
    def display_name(self) -> str:
        return self.person_name or self.who


def _who(staff_id: str | None, group_key: str) -> str:
    return staff_id or group_key.split("|")[0]


def _rows(engine: Engine, where: Sequence[Any]) -> list[AlertRow]:
    q = select(alerts, alert_triage.c.assignee).outerjoin(alert_triage, alert_triage.c.alert_id ==
                                                         alerts.c.alert_id)
    for w in where:
        q = q.where(w)
    with engine.connect() as conn:
        out = []
        for r in conn.execute(q.order_by(alerts.c.ts.desc()).limit(5000)):
            m = r._mapping
            out.append(AlertRow(m["alert_id"], m["rule_id"], m["title"], m["severity"], json.loads(m["tags"]),
                                _who(m["staff_id"], m["group_key"]), m["staff_id"], m["person_name"], m["team"],
                                m["ts"], m["first_ts"], m["last_ts"], m["summary"], json.loads(m["evidence"]),
                                json.loads(m["measures"]), m["status"], m["assignee"]))
        return out


def risk_scores(rows: Iterable[AlertRow], now: dt.datetime, half_life_days: float = HALF_LIFE_DAYS) -> dict[str, float]:
    """Per person: Σ severity weight × 2^(−age / half-life) over alerts not closed as harmless. An alert from
    the future (a skewed clock) counts at full weight."""
    scores: dict[str, float] = defaultdict(float)
    for a in rows:
        if a.status in NOT_COUNTED:
            continue
        age = max((now - a.ts).total_seconds(), 0.0) / 86400
        scores[a.who] += SEVERITY_WEIGHT.get(a.severity, 1.0) * math.pow(2.0, -age / half_life_days)
    return dict(scores)


def group_cases(rows: Iterable[AlertRow], gap: dt.timedelta = CASE_GAP) -> dict[str, list[AlertRow]]:
    """One person's alerts whose time spans lie within `gap` of each other form a case, named by its first
    alert's id."""
    by_person: dict[str, list[AlertRow]] = defaultdict(list)
    for a in rows:
        by_person[a.who].append(a)
    cases: dict[str, list[AlertRow]] = {}
    for items in by_person.values():
        items.sort(key=lambda a: (a.first_ts, a.alert_id))
        current: list[AlertRow] = []
        end: dt.datetime | None = None
        for a in items:
            if current and end is not None and a.first_ts - end > gap:
                cases[current[0].alert_id] = current
                current, end = [], None
            current.append(a)
            end = a.last_ts if end is None else max(end, a.last_ts)
        if current:
            cases[current[0].alert_id] = current
    return cases


@dataclass
class Query:
    status: str | None = None  # a status, or "open" (new + acknowledged), or "closed"
    severity: str | None = None  # this or higher
    team: str | None = None
    rule_id: str | None = None
    who: str | None = None
    sort: str = "risk"  # risk | time | severity
    limit: int = 500
    teams_allowed: frozenset[str] | None = field(default=None)  # None: every team (analysts, admins)


def annotated(engine: Engine, now: dt.datetime, where: Sequence[Any] = ()) -> list[AlertRow]:
    """Alerts with their assignee, their person's risk score and their case."""
    rows = _rows(engine, where)
    scores = risk_scores(rows, now)
    out: list[AlertRow] = []
    for case_id, items in group_cases(rows).items():
        for a in items:
            out.append(replace(a, risk=round(scores.get(a.who, 0.0), 2), case_id=case_id, case_size=len(items)))
    return out


def list_alerts(engine: Engine, q: Query, now: dt.datetime | None = None) -> list[AlertRow]:
    now = now or dt.datetime.now(dt.timezone.utc)
    where: list[Any] = []
    if q.teams_allowed is not None:
        where.append(alerts.c.team.in_(sorted(q.teams_allowed)))
    rows = annotated(engine, now, where)
    if q.status == "open":
        rows = [a for a in rows if not a.closed]
    elif q.status == "closed":
        rows = [a for a in rows if a.closed]
    elif q.status:
        rows = [a for a in rows if a.status == q.status]
    if q.severity:
        floor = SEVERITY_ORDER.get(q.severity, 0)
        rows = [a for a in rows if SEVERITY_ORDER.get(a.severity, 0) >= floor]
    if q.team:
        rows = [a for a in rows if a.team == q.team]
    if q.rule_id:
        rows = [a for a in rows if a.rule_id == q.rule_id]
    if q.who:
        rows = [a for a in rows if a.who == q.who]
    if q.sort == "time":
        rows.sort(key=lambda a: a.ts, reverse=True)
    elif q.sort == "severity":
        rows.sort(key=lambda a: (SEVERITY_ORDER.get(a.severity, 0), a.ts), reverse=True)
    else:
        rows.sort(key=lambda a: (a.risk, SEVERITY_ORDER.get(a.severity, 0), a.ts), reverse=True)
    return rows[:q.limit]


def get_alert(engine: Engine, alert_id: str, now: dt.datetime | None = None) -> AlertRow | None:
    with engine.connect() as conn:
        r = conn.execute(select(alerts.c.staff_id, alerts.c.group_key).where(alerts.c.alert_id == alert_id)).first()
    if r is None:
        return None
    who = _who(r[0], r[1])
    mine = [a for a in annotated(engine, now or dt.datetime.now(dt.timezone.utc),
                                 [alerts.c.staff_id == r[0]] if r[0] else [alerts.c.group_key.startswith(who)])
            if a.who == who]
    return next((a for a in mine if a.alert_id == alert_id), None)


def case_alerts(engine: Engine, case_id: str, now: dt.datetime | None = None) -> list[AlertRow]:
    first = get_alert(engine, case_id, now)
    if first is None:
        return []
    where = [alerts.c.staff_id == first.staff_id] if first.staff_id else [alerts.c.group_key.startswith(first.who)]
    return [a for a in annotated(engine, now or dt.datetime.now(dt.timezone.utc), where)
            if a.case_id == first.case_id]


def update_alert(engine: Engine, alert_id: str, actor: str, *, role: str | None = None, status: str | None = None,
                 assignee: str | None = None, comment: str | None = None,
                 now: dt.datetime | None = None) -> list[tuple[str, str | None, str | None]]:
    """Change status and/or assignee and/or add a comment; returns the (field, old, new) changes made.
    `assignee=""` unassigns."""
    if status is not None and status not in STATUSES:
        raise TriageError(f"status must be one of {', '.join(STATUSES)}")
    if comment is not None and len(comment) > 4000:
        raise TriageError("a comment is at most 4000 characters")
    now = now or dt.datetime.now(dt.timezone.utc)
    changes: list[tuple[str, str | None, str | None]] = []
    with engine.begin() as conn:
        row = conn.execute(select(alerts.c.status, alerts.c.staff_id).where(alerts.c.alert_id == alert_id)
                           .with_for_update()).first()
        if row is None:
            raise TriageError(f"no alert {alert_id}")
        old_status, staff_id = row[0], row[1]
        tri = conn.execute(select(alert_triage.c.assignee).where(alert_triage.c.alert_id == alert_id)).first()
        old_assignee = tri[0] if tri is not None else None
        if status is not None and status != old_status:
            conn.execute(update(alerts).where(alerts.c.alert_id == alert_id).values(status=status))
            changes.append(("status", old_status, status))
        new_assignee = (assignee or None) if assignee is not None else old_assignee
        if assignee is not None and new_assignee != old_assignee:
            changes.append(("assignee", old_assignee, new_assignee))
        if comment:
            changes.append(("comment", None, comment.strip()))
        if not changes:
            return []
        closed = now if (status or old_status).startswith("closed") else None
        ins = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
        stmt = ins(alert_triage).values(alert_id=alert_id, assignee=new_assignee, closed_at=closed, updated_at=now,
                                        updated_by=actor)
        conn.execute(stmt.on_conflict_do_update(index_elements=["alert_id"], set_={
            "assignee": new_assignee, "closed_at": closed, "updated_at": now, "updated_by": actor}))
        conn.execute(alert_history.insert(), [{"alert_id": alert_id, "at": now, "actor": actor, "field": f,
                                               "old": o, "new": n} for f, o, n in changes])
        audit.record(conn, actor, "change", "alert", alert_id, role=role, staff_id=staff_id,
                     detail={f: n for f, _, n in changes}, now=now)
    return changes


def history(engine: Engine, alert_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(alert_history).where(alert_history.c.alert_id == alert_id).order_by(alert_history.c.id))]
