"""Agents as the collector last heard from them: the latest heartbeat of each (version, spool depth, dropped
events) and whether it has gone silent."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from collector.db import credentials, events


@dataclass(frozen=True)
class AgentStatus:
    name: str
    enrolled: bool
    revoked: bool
    last_heartbeat: dt.datetime | None
    version: str | None
    spool_depth: int | None
    dropped: int | None
    dead_lettered: int | None
    silent: bool


def agent_statuses(engine: Engine, silent_after: dt.timedelta, now: dt.datetime) -> list[AgentStatus]:
    with engine.connect() as conn:
        creds = {r.name: r for r in conn.execute(select(credentials.c.name, credentials.c.revoked_at)
                                                 .where(credentials.c.kind == "agent"))}
        latest = dict(conn.execute(select(events.c.agent, func.max(events.c.ts)).where(
            events.c.kind == "agent.heartbeat").group_by(events.c.agent)).all())
        out = []
        for name in sorted(set(creds) | set(latest)):
            last = latest.get(name)
            payload: dict[str, object] = {}
            if last is not None:
                if last.tzinfo is None:
                    last = last.replace(tzinfo=dt.timezone.utc)
                body = conn.scalar(select(events.c.body).where(
                    events.c.agent == name, events.c.kind == "agent.heartbeat", events.c.ts == last).limit(1))
                payload = json.loads(body).get("payload", {}) if body else {}
            revoked = name in creds and creds[name].revoked_at is not None
            out.append(AgentStatus(
                name, name in creds, revoked, last, payload.get("version"),  # type: ignore[arg-type]
                payload.get("spool_depth"), payload.get("dropped"),  # type: ignore[arg-type]
                payload.get("dead_lettered"),  # type: ignore[arg-type]
                silent=not revoked and (last is None or now - last > silent_after)))
    return out
