"""Alert storage: alerts from the rule engine kept once each.

An alert id is derived from rule, group and the events that completed it, so a re-evaluation after a restart
inserts nothing new. A replay (`custos rules replay`) may complete a rule on a different event than the live
stream did; it also skips an alert when one for the same rule and group already lies within the rule's
suppression period.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from collector.db import alerts
from rules.alerts import Alert


@dataclass(frozen=True)
class StoredAlert:
    alert_id: str
    rule_id: str
    severity: str
    group_key: str
    staff_id: str | None
    ts: dt.datetime
    summary: str
    evidence: list[str]
    measures: dict[str, Any]
    origin: str
    created_at: dt.datetime
    trigger_event_id: str | None


def _row(a: Alert, origin: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "alert_id": a.alert_id, "rule_id": a.rule_id, "title": a.title, "severity": a.severity,
        "tags": json.dumps(list(a.tags)), "group_key": a.group[:512], "staff_id": a.staff_id,
        "person_name": a.person_name, "team": a.team, "ts": a.ts, "first_ts": a.first_ts, "last_ts": a.last_ts,
        "summary": a.summary, "evidence": json.dumps(list(a.evidence)),
        "measures": json.dumps(dict(a.measures), default=str), "trigger_event_id": a.evidence[-1] if a.evidence
        else None, "origin": origin, "created_at": now,
    }


class AlertStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = sqlite_insert if engine.dialect.name == "sqlite" else pg_insert

    def save(self, batch: Sequence[Alert], *, origin: str = "stream",
             suppress: Mapping[str, float] | None = None) -> list[str]:
        """Store new alerts; returns the ids actually inserted. With `suppress` (rule id → seconds), an alert
        is also skipped when the same rule and group already alerted within that period (replays)."""
        if not batch:
            return []
        now = dt.datetime.now(dt.timezone.utc)
        with self.engine.begin() as conn:
            rows = []
            for a in batch:
                period = (suppress or {}).get(a.rule_id)
                if period is not None and period > 0:
                    near = conn.scalar(select(alerts.c.alert_id).where(
                        alerts.c.rule_id == a.rule_id, alerts.c.group_key == a.group[:512],
                        alerts.c.ts > a.ts - dt.timedelta(seconds=period),
                        alerts.c.ts < a.ts + dt.timedelta(seconds=period)).limit(1))
                    if near is not None:
                        continue
                rows.append(_row(a, origin, now))
            if not rows:
                return []
            stmt = self._insert(alerts).on_conflict_do_nothing(index_elements=["alert_id"]).returning(
                alerts.c.alert_id)
            return list(conn.scalars(stmt, rows).all())

    def list(self, *, rule_id: str | None = None, staff_id: str | None = None, limit: int = 1000) -> list[StoredAlert]:
        q = select(alerts.c.alert_id, alerts.c.rule_id, alerts.c.severity, alerts.c.group_key, alerts.c.staff_id,
                   alerts.c.ts, alerts.c.summary, alerts.c.evidence, alerts.c.measures, alerts.c.origin,
                   alerts.c.created_at, alerts.c.trigger_event_id)
        if rule_id is not None:
            q = q.where(alerts.c.rule_id == rule_id)
        if staff_id is not None:
            q = q.where(alerts.c.staff_id == staff_id)
        q = q.order_by(alerts.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [StoredAlert(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), json.loads(r[8]), r[9],
                                r[10], r[11]) for r in conn.execute(q)]
