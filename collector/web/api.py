"""The JSON API of the UI (documented in the OpenAPI spec): alerts list and update, weekly summaries,
attestation answers.

Authentication: the UI's session cookie (a state-changing call then also sends the session's CSRF token in
`X-CSRF-Token`), or an API token (`custos tokens create NAME --role analyst`) as `Authorization: Bearer …`.
A manager sees only their own team; API tokens carry no team, so they need the analyst or admin role.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.

import datetime as dt
from typing import Any, Literal, Optional

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from collector import audit, credentials, triage, weekly_jobs
from collector.users import Session, User, csrf_ok, session_of
from collector.web.common import SESSION_COOKIE, state_of

router = APIRouter(
    prefix="/api/v1",
    tags=["alerts and summaries"],
    responses={
        400: {"description": "The body is not JSON"},
        401: {"description": "Not logged in and no valid API token"},
        403: {"description": "The role may not do this (or the CSRF token is missing)"},
        404: {"description": "No such alert or summary, or not one of the caller's team"},
    },
)


class AlertOut(BaseModel):
    alert_id: str
    rule_id: str
    title: str
    severity: str
    tags: list[str]
    who: str = Field(description="staff id, or the account the rule alerted on (db:shared_account)")
    staff_id: Optional[str]
    person_name: Optional[str]
    team: Optional[str]
    ts: dt.datetime
    first_ts: dt.datetime
    last_ts: dt.datetime
    summary: str = Field(description="one sentence a manager understands")
    evidence: list[str] = Field(description="ids of the events that made the alert, oldest first")
    status: str
    assignee: Optional[str]
    risk: float = Field(description="the person's risk score: decaying sum of alert severities")
    case_id: str
    case_size: int


class HistoryEntry(BaseModel):
    at: dt.datetime
    actor: str
    field: str
    old: Optional[str]
    new: Optional[str]


class AlertDetail(AlertOut):
    measures: dict[str, Any]
    history: list[HistoryEntry]


class AlertUpdate(BaseModel):
    status: Optional[Literal["new", "acknowledged", "closed_tp", "closed_fp", "closed_benign"]] = None
    # No NUL: PostgreSQL text cannot hold one (refused with 422 rather than failing in the database)
    assignee: Optional[str] = Field(None, max_length=128, pattern=r"^[^\x00]*$", description='"" unassigns')
    comment: Optional[str] = Field(None, max_length=4000, pattern=r"^[^\x00]*$")


class SummaryRef(BaseModel):
    team: str
    week: str
    created_at: dt.datetime


class AttestationOut(BaseModel):
    id: int
    staff_id: str
    reason: str
    answer: Optional[str]
    note: Optional[str]
    answered_by: Optional[str]
    answered_at: Optional[dt.datetime]


class SummaryOut(BaseModel):
    team: str
    week: str
    created_at: dt.datetime
    data: dict[str, Any]
    attestations: list[AttestationOut]


class AttestationAnswer(BaseModel):
    answer: Literal["confirm", "question"]
    note: str = Field("", max_length=2000)


def _caller(request: Request, writing: bool = False) -> User:
    web = state_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        who = credentials.authenticate(web.engine, token.strip())
        if who is None or who.kind != "api":
            raise HTTPException(401, "unknown or revoked API token", headers={"WWW-Authenticate": "Bearer"})
        if who.role not in ("admin", "analyst"):
            raise HTTPException(403, "API tokens need the analyst or admin role; managers use the web UI")
        return User(0, f"token:{who.name}", who.role, None, None)  # type: ignore[arg-type]
    s: Optional[Session] = session_of(web.engine, request.cookies.get(SESSION_COOKIE), web.now())
    if s is None:
        raise HTTPException(401, "log in, or send Authorization: Bearer <API token>",
                            headers={"WWW-Authenticate": "Bearer"})
    if writing and not csrf_ok(s.csrf, request.headers.get("x-csrf-token")):
        raise HTTPException(403, "send the session's CSRF token in X-CSRF-Token")
    return s.user


def _out(a: triage.AlertRow) -> AlertOut:
    return AlertOut(**{k: getattr(a, k) for k in AlertOut.model_fields})


@router.get("/alerts", response_model=list[AlertOut], summary="List alerts (managers: their team's only)")
def list_alerts(request: Request,
                status: Optional[str] = Query(None, description="a status, or open / closed"),
                severity: Optional[str] = Query(None, description="this severity or higher"),
                team: Optional[str] = None, rule_id: Optional[str] = None, who: Optional[str] = None,
                sort: Literal["risk", "time", "severity"] = "risk",
                limit: int = Query(100, ge=1, le=1000)) -> list[AlertOut]:
    user = _caller(request)
    web = state_of(request)
    q = triage.Query(status=status, severity=severity, team=team, rule_id=rule_id, who=who, sort=sort,
                     limit=limit, teams_allowed=None if user.sees_all else frozenset([user.team or ""]))
    rows = triage.list_alerts(web.engine, q, web.now())
    audit.record(web.engine, user.name, "view", "alerts", str(request.url.query)[:256] or "all", role=user.role,
                 detail={"shown": len(rows)})
    return [_out(a) for a in rows]


def _visible(request: Request, user: User, alert_id: str) -> triage.AlertRow:
    web = state_of(request)
    a = triage.get_alert(web.engine, alert_id, web.now())
    if a is None or not user.may_see_team(a.team):
        raise HTTPException(404, "no such alert in your view")
    return a


def _detail(request: Request, a: triage.AlertRow) -> AlertDetail:
    hist = [HistoryEntry(**{k: h[k] for k in HistoryEntry.model_fields})
            for h in triage.history(state_of(request).engine, a.alert_id)]
    return AlertDetail(**_out(a).model_dump(), measures=a.measures, history=hist)


@router.get("/alerts/{alert_id}", response_model=AlertDetail, summary="One alert with its history")
def get_alert(request: Request, alert_id: str) -> AlertDetail:
    user = _caller(request)
    a = _visible(request, user, alert_id)
    audit.record(state_of(request).engine, user.name, "view", "alert", alert_id, role=user.role,
                 staff_id=a.staff_id)
    return _detail(request, a)


@router.patch("/alerts/{alert_id}", response_model=AlertDetail,
              summary="Change status or assignee, or add a comment (analysts, admins)")
async def update_alert(request: Request, alert_id: str, change: AlertUpdate) -> AlertDetail:
    user = _caller(request, writing=True)
    if user.role not in ("admin", "analyst") and (change.status is not None or change.assignee is not None):
        raise HTTPException(403, "only analysts and admins change status or assignee")
    _visible(request, user, alert_id)
    web = state_of(request)
    try:
        await run_in_threadpool(triage.update_alert, web.engine, alert_id, user.name, role=user.role,
                                status=change.status, assignee=change.assignee, comment=change.comment)
    except triage.TriageError as e:
        raise HTTPException(400, str(e)) from e
    return _detail(request, _visible(request, user, alert_id))


@router.get("/summaries", response_model=list[SummaryRef], summary="Weekly summaries kept (managers: their team's)")
def list_summaries(request: Request, team: Optional[str] = None) -> list[SummaryRef]:
    user = _caller(request)
    if not user.sees_all:
        team = user.team or ""
    return [SummaryRef(**r) for r in weekly_jobs.stored_summaries(state_of(request).engine, team)]


@router.get("/summaries/{team}/{week}", response_model=SummaryOut, summary="One team's weekly summary")
def get_summary(request: Request, team: str, week: str) -> SummaryOut:
    user = _caller(request)
    web = state_of(request)
    stored = weekly_jobs.stored_summary(web.engine, team, week) if user.may_see_team(team) else None
    if stored is None:
        raise HTTPException(404, "no such summary in your view")
    att = [AttestationOut(**{k: getattr(a, k) for k in AttestationOut.model_fields})
           for a in weekly_jobs.list_attestations(web.engine, team, week)]
    return SummaryOut(team=team, week=week, created_at=stored["created_at"], data=stored["data"], attestations=att)


@router.post("/attestations/{attestation_id}", response_model=AttestationOut,
             summary="Answer an attestation: the flagged access had a business need (confirm) or not (question)")
def answer_attestation(request: Request, attestation_id: int, body: AttestationAnswer) -> AttestationOut:
    user = _caller(request, writing=True)
    if user.role not in ("manager", "admin"):
        raise HTTPException(403, "attestations are answered by the team's manager")
    try:
        a = weekly_jobs.answer(state_of(request).engine, attestation_id, user.name, user.role,
                               None if user.role == "admin" else user.team, body.answer, body.note)
    except ValueError as e:
        raise HTTPException(404, str(e)) from e
    return AttestationOut(**{k: getattr(a, k) for k in AttestationOut.model_fields})
