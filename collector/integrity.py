"""What the collector's own integrity checks share: the alerts they raise (through the rules' Alert and the
alert store, like any rule's) and an insert-or-update on either database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from rules.alerts import Alert, alert_id

# MITRE ATT&CK: T1562.001 Impair Defenses: Disable or Modify Tools; T1070 Indicator Removal.
TAGS = ("T1562.001", "T1070")


def integrity_alert(rule_id: str, title: str, group: str, *, anchor: str, ts: dt.datetime, summary: str,
                    evidence: Sequence[str] = (), measures: Mapping[str, Any] | None = None,
                    severity: str = "high") -> Alert:
    """An alert of one of the collector's built-in integrity checks, with an id derived from `anchor` so that
    judging the same thing twice stores it once."""
    return Alert(alert_id=alert_id(rule_id, group, anchor), rule_id=rule_id, title=title, severity=severity,
                 tags=TAGS, group=group, ts=ts, first_ts=ts, last_ts=ts, summary=summary,
                 evidence=tuple(evidence), measures=dict(measures or {}))


def upsert(conn: Connection, engine: Engine, table: Table, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Insert the row `key` + `values`, or update `values` where the row `key` exists."""
    insert = sqlite_insert if engine.dialect.name == "sqlite" else pg_insert
    stmt = insert(table).values({**key, **values})
    conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=dict(values)))
