"""The audit trail of the people who use custos: who looked at whose activity, who changed which alert, who
answered an attestation, who logged in. Written in the same request as what it records; never edited."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Connection, Engine, select

from collector.db import audit_log


def record(target: Engine | Connection, actor: str, action: str, subject: str, subject_id: str, *,
           role: str | None = None, staff_id: str | None = None, detail: dict[str, Any] | None = None,
           now: dt.datetime | None = None) -> None:
    row = {"at": now or dt.datetime.now(dt.timezone.utc), "actor": actor, "role": role, "action": action,
           "subject": subject, "subject_id": str(subject_id)[:256], "staff_id": staff_id,
           "detail": json.dumps(detail, default=str) if detail else None}
    if isinstance(target, Connection):
        target.execute(audit_log.insert().values(**row))
    else:
        with target.begin() as conn:
            conn.execute(audit_log.insert().values(**row))


def entries(engine: Engine, *, staff_id: str | None = None, actor: str | None = None, subject: str | None = None,
            limit: int = 200) -> list[dict[str, Any]]:
    q = select(audit_log)
    if staff_id is not None:
        q = q.where(audit_log.c.staff_id == staff_id)
    if actor is not None:
        q = q.where(audit_log.c.actor == actor)
    if subject is not None:
        q = q.where(audit_log.c.subject == subject)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q.order_by(audit_log.c.id.desc()).limit(limit))]
