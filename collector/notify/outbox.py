"""The notification outbox: one row per (receiver, kind, subject), enqueued in the transaction that decides to
notify, delivered by whichever collector process leases it first, retried with exponential backoff."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from collector.db import notify_log, notify_outbox
from collector.ui_config import SEVERITIES, NotifySection, Receiver


def route(receivers: Iterable[Receiver], kind: str, *, severity: str | None = None,
          team: str | None = None) -> list[Receiver]:
    """The receivers that want this message: its kind, a severity at or above theirs, one of their teams."""
    out = []
    for r in receivers:
        if kind not in r.kinds:
            continue
        if severity is not None and SEVERITIES.index(severity if severity in SEVERITIES else "info") < \
                SEVERITIES.index(r.min_severity):
            continue
        if r.teams and team not in r.teams:
            continue
        out.append(r)
    return out


def enqueue(conn: Connection, receivers: Sequence[Receiver], kind: str, ref: str, payload: dict[str, Any], *,
            now: dt.datetime) -> int:
    """Put the message for each receiver in the outbox unless it is there already; returns how many were new."""
    if not receivers:
        return 0
    ins = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    body = json.dumps(payload, default=str)
    rows = [{"dedupe_key": f"{r.name}|{kind}|{ref}"[:256], "receiver": r.name, "kind": kind, "ref": ref[:128],
             "payload": body, "status": "pending", "attempts": 0, "next_at": now, "created_at": now}
            for r in receivers]
    stmt = ins(notify_outbox).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(notify_outbox.c.id)
    return len(conn.scalars(stmt, rows).all())


@dataclass(frozen=True)
class Item:
    id: int
    receiver: str
    kind: str
    ref: str
    payload: dict[str, Any]
    attempts: int


def claim_due(engine: Engine, now: dt.datetime, *, lease_seconds: float = 120.0, limit: int = 50) -> list[Item]:
    """Messages due now, each leased to this process (an UPDATE that only one process can win)."""
    free = or_(notify_outbox.c.lease_until.is_(None), notify_outbox.c.lease_until < now)
    with engine.connect() as conn:
        rows = conn.execute(select(notify_outbox.c.id).where(
            notify_outbox.c.status == "pending", notify_outbox.c.next_at <= now, free)
            .order_by(notify_outbox.c.next_at, notify_outbox.c.id).limit(limit)).all()
    claimed: list[Item] = []
    for (oid,) in rows:
        with engine.begin() as conn:
            won = conn.execute(update(notify_outbox).where(
                and_(notify_outbox.c.id == oid, notify_outbox.c.status == "pending", free))
                .values(lease_until=now + dt.timedelta(seconds=lease_seconds))).rowcount
            if won != 1:
                continue
            r = conn.execute(select(notify_outbox).where(notify_outbox.c.id == oid)).first()
        if r is not None:
            m = r._mapping
            claimed.append(Item(int(m["id"]), m["receiver"], m["kind"], m["ref"], json.loads(m["payload"]),
                                int(m["attempts"])))
    return claimed


def backoff(attempt: int, cfg: NotifySection) -> float:
    """Seconds before try number `attempt + 1`: doubling from the base, capped, with ±10% jitter so that many
    messages to one receiver that comes back do not all retry in the same second."""
    delay = min(cfg.retry_base_seconds * (2 ** max(attempt - 1, 0)), cfg.retry_max_seconds)
    return delay * random.uniform(0.9, 1.1)


def finish(engine: Engine, item: Item, ok: bool, detail: str, cfg: NotifySection, now: dt.datetime) -> str:
    """Record one delivery attempt; returns the message's new status (sent, pending or dead)."""
    attempt = item.attempts + 1
    if ok:
        values: dict[str, Any] = {"status": "sent", "sent_at": now, "attempts": attempt, "lease_until": None,
                                  "last_error": None}
    elif attempt >= cfg.max_attempts:
        values = {"status": "dead", "attempts": attempt, "lease_until": None, "last_error": detail[:2000]}
    else:
        values = {"status": "pending", "attempts": attempt, "lease_until": None, "last_error": detail[:2000],
                  "next_at": now + dt.timedelta(seconds=backoff(attempt, cfg))}
    with engine.begin() as conn:
        conn.execute(update(notify_outbox).where(notify_outbox.c.id == item.id).values(**values))
        conn.execute(notify_log.insert().values(outbox_id=item.id, at=now, receiver=item.receiver, attempt=attempt,
                                                ok=1 if ok else 0, detail=detail[:2000]))
    return str(values["status"])


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {s: int(n) for s, n in conn.execute(
            select(notify_outbox.c.status, func.count()).group_by(notify_outbox.c.status))}


def deliveries(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(notify_log, notify_outbox.c.kind, notify_outbox.c.ref)
            .join(notify_outbox, notify_outbox.c.id == notify_log.c.outbox_id)
            .order_by(notify_log.c.id.desc()).limit(limit))]
