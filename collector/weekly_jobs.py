"""Weekly summaries kept and sent: each team's summary stored (one per team and week), its attestations
created, e-mailed through the outbox to the team's manager; reminders for unanswered attestations and
escalation to the security team after the configured days. Answers go to the audit trail."""

from __future__ import annotations

import datetime as dt
import json
import logging
import zoneinfo
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent.errors import CustosError
from collector import activity, audit
from collector.config import CollectorConfig
from collector.db import attestations, directory_people, users, weekly_summaries
from collector.notify import enqueue, route
from collector.weekly import TeamWeek, WeekError, build_week, calendar_check, render

log = logging.getLogger("custos.weekly")
ANSWERS = ("confirm", "question")


def _ins(conn: Any) -> Any:
    return sqlite_insert if conn.dialect.name == "sqlite" else pg_insert


def manager_emails(engine: Engine, team: str) -> list[str]:
    """The team's managers: custos users with the manager role for the team, and the directory's manager."""
    with engine.connect() as conn:
        out = {e for (e,) in conn.execute(select(users.c.email).where(
            users.c.role == "manager", users.c.team == team, users.c.disabled_at.is_(None))) if e}
        mgr_ids = {m for (m,) in conn.execute(select(directory_people.c.manager).where(
            directory_people.c.team == team)) if m}
        if mgr_ids:
            out |= {e for (e,) in conn.execute(select(directory_people.c.email).where(
                directory_people.c.staff_id.in_(sorted(mgr_ids)))) if e}
    return sorted(out)


def summary_link(config: CollectorConfig, team: str, week: str) -> str | None:
    base = config.web.public_url
    return f"{base.rstrip('/')}/summaries/{team}/{week}" if base else None


def keep_summary(engine: Engine, tw: TeamWeek, html: str, now: dt.datetime) -> None:
    """Store (or replace) the summary and create an attestation per flagged person (kept if answered)."""
    with engine.begin() as conn:
        ins = _ins(conn)
        stmt = ins(weekly_summaries).values(team=tw.team, week=tw.week, created_at=now, data=tw.as_json(), html=html)
        conn.execute(stmt.on_conflict_do_update(index_elements=["team", "week"],
                                                set_={"data": tw.as_json(), "html": html, "created_at": now}))
        if tw.flagged:
            rows = [{"team": tw.team, "week": tw.week, "staff_id": sid, "reason": why, "reminders": 0,
                     "created_at": now} for sid, why in tw.flagged.items()]
            conn.execute(ins(attestations).on_conflict_do_nothing(
                index_elements=["team", "week", "staff_id"]), rows)


def make_summary(engine: Engine, config: CollectorConfig, team: str, week: str, *, keep: bool = True,
                 now: dt.datetime | None = None) -> tuple[TeamWeek, str]:
    zone = zoneinfo.ZoneInfo(config.weekly.timezone)
    dirs = [config.rules.dir] if config.rules.dir else []
    tw = build_week(engine, team, week, zone, calendar_check(engine, dirs))
    html = render(tw, link=summary_link(config, team, week))
    if keep:
        keep_summary(engine, tw, html, now or dt.datetime.now(dt.timezone.utc))
    return tw, html


def send_summaries(engine: Engine, config: CollectorConfig, week: str, now: dt.datetime | None = None) -> list[str]:
    """Build, keep and e-mail every team's summary of `week`; returns the teams done. Each team's message
    enters the outbox once (its key is team and week), however often this runs."""
    now = now or dt.datetime.now(dt.timezone.utc)
    done = []
    for team in activity.teams(engine):
        try:
            tw, html = make_summary(engine, config, team, week, now=now)
        except WeekError as e:
            log.info("no summary for team %s: %s", team, e)
            continue
        msg = {"type": "custos.weekly", "team": team, "week": week, "to": manager_emails(engine, team),
               "subject": f"custos weekly access summary — {team} — {week}",
               "text": "\n".join([f"Weekly access summary for {team}, {week}.", "", *tw.attention,
                                  "", f"Open: {summary_link(config, team, week) or 'the custos summary page'}"]),
               "html": html}
        with engine.begin() as conn:
            enqueue(conn, route(config.notify.receivers, "weekly", team=team), "weekly", f"{team}|{week}", msg,
                    now=now)
        done.append(team)
    return done


@dataclass(frozen=True)
class Attestation:
    id: int
    team: str
    week: str
    staff_id: str
    reason: str
    answer: str | None
    note: str | None
    answered_by: str | None
    answered_at: dt.datetime | None


def list_attestations(engine: Engine, team: str, week: str | None = None) -> list[Attestation]:
    q = select(attestations).where(attestations.c.team == team)
    if week is not None:
        q = q.where(attestations.c.week == week)
    with engine.connect() as conn:
        return [Attestation(r.id, r.team, r.week, r.staff_id, r.reason, r.answer, r.note, r.answered_by,
                            r.answered_at) for r in conn.execute(q.order_by(attestations.c.id))]


def answer(engine: Engine, attestation_id: int, who: str, role: str, team_allowed: str | None, answer: str,
           note: str = "", now: dt.datetime | None = None) -> Attestation:
    """Record a manager's answer (confirm / question) and put it in the audit trail. `team_allowed` None means
    any team (analysts, admins)."""
    if answer not in ANSWERS:
        raise CustosError(f"answer must be one of {', '.join(ANSWERS)}")
    now = now or dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        r = conn.execute(select(attestations).where(attestations.c.id == attestation_id)).first()
        if r is None or (team_allowed is not None and r.team != team_allowed):
            raise CustosError("no such attestation for your team")
        conn.execute(update(attestations).where(attestations.c.id == attestation_id).values(
            answer=answer, note=note[:2000] or None, answered_by=who, answered_at=now))
        audit.record(conn, who, "attest", "summary", f"{r.team}/{r.week}", role=role, staff_id=r.staff_id,
                     detail={"answer": answer, "note": note[:2000]}, now=now)
    return Attestation(r.id, r.team, r.week, r.staff_id, r.reason, answer, note or None, who, now)


def remind(engine: Engine, config: CollectorConfig, now: dt.datetime | None = None) -> dict[str, int]:
    """Remind managers of attestations unanswered after `remind_after_days` (at most daily) and escalate them to
    the security team after `escalate_after_days` (once)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    w = config.weekly
    out = {"reminded": 0, "escalated": 0}
    with engine.connect() as conn:
        open_rows = conn.execute(select(attestations).where(attestations.c.answer.is_(None))).all()
    by_team: dict[tuple[str, str], list[Any]] = {}
    for r in open_rows:
        by_team.setdefault((r.team, r.week), []).append(r)
    for (team, week), rows in by_team.items():
        age = now - min(r.created_at for r in rows)
        names = ", ".join(sorted(r.staff_id for r in rows))
        link = summary_link(config, team, week) or "the custos summary page"
        if age >= dt.timedelta(days=w.escalate_after_days) and any(r.escalated_at is None for r in rows):
            msg = {"type": "custos.escalation", "team": team, "week": week, "severity": "high",
                   "subject": f"custos: attestations for {team} {week} unanswered after {age.days} days",
                   "text": f"The manager of {team} has not confirmed the access of {names} in {week}. {link}"}
            with engine.begin() as conn:
                enqueue(conn, route(config.notify.receivers, "escalation", team=team), "escalation",
                        f"{team}|{week}", msg, now=now)
                conn.execute(update(attestations).where(attestations.c.id.in_([r.id for r in rows]))
                             .values(escalated_at=now))
                audit.record(conn, "custos", "escalate", "summary", f"{team}/{week}", detail={"people": names},
                             now=now)
            out["escalated"] += 1
        elif age >= dt.timedelta(days=w.remind_after_days) and all(r.escalated_at is None for r in rows) and all(
                r.last_reminded_at is None or now - r.last_reminded_at >= dt.timedelta(days=1) for r in rows):
            n = max(r.reminders for r in rows) + 1
            msg = {"type": "custos.reminder", "team": team, "week": week, "to": manager_emails(engine, team),
                   "subject": f"Reminder: please confirm the access of {names} ({team}, {week})",
                   "text": f"Please confirm or question the access of {names} in {week}: {link}"}
            with engine.begin() as conn:
                enqueue(conn, route(config.notify.receivers, "reminder", team=team), "reminder",
                        f"{team}|{week}|{n}", msg, now=now)
                conn.execute(update(attestations).where(attestations.c.id.in_([r.id for r in rows]))
                             .values(reminders=n, last_reminded_at=now))
            out["reminded"] += 1
    return out


def stored_summaries(engine: Engine, team: str | None = None) -> list[dict[str, Any]]:
    q = select(weekly_summaries.c.team, weekly_summaries.c.week, weekly_summaries.c.created_at)
    if team is not None:
        q = q.where(weekly_summaries.c.team == team)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q.order_by(weekly_summaries.c.week.desc(),
                                                                  weekly_summaries.c.team))]


def stored_summary(engine: Engine, team: str, week: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        r = conn.execute(select(weekly_summaries).where(weekly_summaries.c.team == team,
                                                        weekly_summaries.c.week == week)).first()
    if r is None:
        return None
    d = dict(r._mapping)
    d["data"] = json.loads(d["data"])
    return d
