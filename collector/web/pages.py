"""The UI's pages: alert queue, alert and case detail, person, agents, weekly summaries, audit trail.

Managers see only their own team: any other team's alert, person or summary answers 404, as if it did not
exist. Every view of an alert, a case, a person or a summary is written to the audit log (who looked at whom).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.

import datetime as dt
import zoneinfo

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from collector import activity, audit, charts, triage, weekly_jobs
from collector.agent_status import agent_statuses
from collector.triage import AlertRow
from collector.users import Session
from collector.web.common import Refused, WebState, check_csrf, form, need, render, state_of
from collector.weekly import TeamWeek, render_context

router = APIRouter(include_in_schema=False)
AROUND = dt.timedelta(hours=2)


def _scope(s: Session) -> frozenset[str] | None:
    return None if s.user.sees_all else frozenset([s.user.team or ""])


def visible_alert(web: WebState, s: Session, alert_id: str) -> AlertRow:
    a = triage.get_alert(web.engine, alert_id, web.now())
    if a is None or not s.user.may_see_team(a.team):
        raise Refused(404, "There is no such alert in your view.")
    return a


def visible_person(web: WebState, s: Session, staff_id: str) -> activity.PersonInfo | None:
    p = activity.person(web.engine, staff_id)
    if not s.user.sees_all and (p is None or p.team != s.user.team):
        raise Refused(404, "There is no such person in your team.")
    return p


def _viewed(web: WebState, s: Session, subject: str, subject_id: str, staff_id: str | None) -> None:
    audit.record(web.engine, s.user.name, "view", subject, subject_id, role=s.user.role, staff_id=staff_id)


def _timeline(web: WebState, rows: list[AlertRow]) -> list[activity.Fact]:
    since = min(a.first_ts for a in rows) - AROUND
    until = max(a.last_ts for a in rows) + AROUND
    who = rows[0]
    if who.staff_id:
        return list(activity.facts_of(web.engine, [who.staff_id], since, until, limit=300))
    if who.who.startswith("db:"):
        return activity.facts_of_account(web.engine, who.who[3:], since, until)
    return []


@router.get("/")
def home(request: Request) -> Response:
    s = need(request)
    return RedirectResponse("/summaries" if s.user.role == "manager" else "/alerts", status_code=303)


@router.get("/alerts")
def alert_queue(request: Request, status: str = "open", severity: str = "", team: str = "", rule: str = "",
                sort: str = "risk") -> Response:
    s = need(request)
    web = state_of(request)
    q = triage.Query(status=status or None, severity=severity or None, team=team or None, rule_id=rule or None,
                     sort=sort if sort in ("risk", "time", "severity") else "risk", teams_allowed=_scope(s))
    rows = triage.list_alerts(web.engine, q, web.now())
    audit.record(web.engine, s.user.name, "view", "alerts", str(request.url.query)[:256] or "queue",
                 role=s.user.role, detail={"shown": len(rows)})
    every = triage.list_alerts(web.engine, triage.Query(status=None, teams_allowed=_scope(s)), web.now())
    return render(request, "alerts.html", alerts=rows, q=q, teams=sorted({a.team for a in every if a.team}),
                  rules=sorted({a.rule_id for a in every}))


@router.get("/alerts/{alert_id}")
def alert_page(request: Request, alert_id: str) -> Response:
    s = need(request)
    web = state_of(request)
    a = visible_alert(web, s, alert_id)
    _viewed(web, s, "alert", a.alert_id, a.staff_id)
    case = triage.case_alerts(web.engine, a.case_id, web.now())
    evidence = activity.facts_by_id(web.engine, a.evidence)
    return render(request, "alert.html", a=a, case=case, evidence=evidence, timeline=_timeline(web, [a]),
                  evidence_ids=set(a.evidence), history=triage.history(web.engine, a.alert_id),
                  may_triage=s.user.role in ("admin", "analyst"))


@router.post("/alerts/{alert_id}/triage")
async def alert_triage(request: Request, alert_id: str) -> Response:
    s = need(request)
    fields = await form(request)
    check_csrf(s, fields)
    web = state_of(request)
    visible_alert(web, s, alert_id)
    analyst = s.user.role in ("admin", "analyst")
    try:
        await run_in_threadpool(
            triage.update_alert, web.engine, alert_id, s.user.name, role=s.user.role,
            status=(fields.get("status") or None) if analyst else None,
            assignee=fields.get("assignee") if analyst and "assignee" in fields else None,
            comment=fields.get("comment") or None)
    except triage.TriageError as e:
        raise Refused(400, str(e)) from e
    return RedirectResponse(f"/alerts/{alert_id}", status_code=303)


@router.get("/cases/{case_id}")
def case_page(request: Request, case_id: str) -> Response:
    s = need(request)
    web = state_of(request)
    first = visible_alert(web, s, case_id)
    rows = triage.case_alerts(web.engine, first.case_id, web.now())
    _viewed(web, s, "case", first.case_id, first.staff_id)
    ids = {e for a in rows for e in a.evidence}
    return render(request, "case.html", first=first, case=rows, timeline=_timeline(web, rows), evidence_ids=ids)


@router.get("/people/{staff_id}")
def person_page(request: Request, staff_id: str, days: int = 30) -> Response:
    s = need(request)
    web = state_of(request)
    p = visible_person(web, s, staff_id)
    _viewed(web, s, "person", staff_id, staff_id)
    zone = zoneinfo.ZoneInfo(web.config.weekly.timezone)
    mine = triage.list_alerts(web.engine, triage.Query(status=None, who=staff_id, teams_allowed=_scope(s)),
                              web.now())
    last_seen = max([a.last_ts for a in mine], default=web.now())
    end = min(web.now(), max(last_seen, web.now() - dt.timedelta(days=days))).astimezone(zone).date()
    start = end - dt.timedelta(days=max(7, min(days, 120)) - 1)
    series = activity.daily(web.engine, staff_id, start, end, zone)
    alert_days = {a.ts.astimezone(zone).date() for a in mine}
    chart = charts.series([d.date.strftime("%d %b") for d in series], [d.customers for d in series],
                          baseline=[d.baseline for d in series], marks=[d.date in alert_days for d in series],
                          title="Distinct customers touched per day", width=760)
    viewers = audit.entries(web.engine, staff_id=staff_id, limit=30) if s.user.sees_all else []
    risk = max([a.risk for a in mine], default=0.0)
    return render(request, "person.html", staff_id=staff_id, p=p, alerts=mine, chart=chart, series=series,
                  viewers=viewers, risk=risk)


@router.get("/agents")
def agents_page(request: Request) -> Response:
    need(request, "admin", "analyst")
    web = state_of(request)
    rows = agent_statuses(web.engine, dt.timedelta(minutes=web.config.web.silent_agent_minutes), web.now())
    return render(request, "agents.html", agents=rows, silent_minutes=web.config.web.silent_agent_minutes)


@router.get("/summaries")
def summaries_page(request: Request) -> Response:
    s = need(request)
    web = state_of(request)
    rows = weekly_jobs.stored_summaries(web.engine, None if s.user.sees_all else s.user.team or "")
    return render(request, "summaries.html", summaries=rows)


def _summary(web: WebState, s: Session, team: str, week: str) -> TeamWeek:
    if not s.user.may_see_team(team):
        raise Refused(404, "There is no such summary for your team.")
    stored = weekly_jobs.stored_summary(web.engine, team, week)
    if stored is None:
        raise Refused(404, f"No summary of {team} for {week} has been made yet.")
    return TeamWeek.from_dict(stored["data"])


@router.get("/summaries/{team}/{week}")
def summary_page(request: Request, team: str, week: str) -> Response:
    s = need(request)
    web = state_of(request)
    tw = _summary(web, s, team, week)
    _viewed(web, s, "summary", f"{team}/{week}", None)
    return render(request, "summary.html", **render_context(tw), attestations=weekly_jobs.list_attestations(
        web.engine, team, week), may_answer=s.user.role == "admin" or (s.user.role == "manager" and
                                                                       s.user.team == team))


@router.post("/summaries/{team}/{week}/attest/{attestation_id}")
async def attest(request: Request, team: str, week: str, attestation_id: int) -> Response:
    s = need(request, "manager", "admin")
    fields = await form(request)
    check_csrf(s, fields)
    web = state_of(request)
    _summary(web, s, team, week)
    try:
        weekly_jobs.answer(web.engine, attestation_id, s.user.name, s.user.role,
                           None if s.user.role == "admin" else s.user.team, fields.get("answer", ""),
                           fields.get("note", ""))
    except ValueError as e:
        raise Refused(400, str(e)) from e
    return RedirectResponse(f"/summaries/{team}/{week}", status_code=303)


@router.get("/audit")
def audit_page(request: Request, staff_id: str = "", actor: str = "") -> Response:
    need(request, "admin", "analyst")
    rows = audit.entries(state_of(request).engine, staff_id=staff_id or None, actor=actor or None, limit=500)
    return render(request, "audit.html", rows=rows)
