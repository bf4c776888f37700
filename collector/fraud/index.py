"""The linkage index: for each stored event that names customers, one row per customer key — reads
(`db.query` customer keys) in `customer_reads`, business events in `customer_hits` — so that "who read this
customer" and "which customers were hit" are indexed look-ups instead of scans of every event body.

`refresh` indexes the events stored since it last ran. Events commit out of `seq` order under concurrent ingest,
so each refresh looks again over a margin below its cursor; rows are keyed (customer, event), so a second look
adds nothing twice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from collector.db import customer_hits, customer_reads, events, ui_cursors

CURSOR = "fraud_index"
PAGE = 5_000
MARGIN = 2_000  # seqs below the cursor looked at again: commits that landed out of order


class _Payload(msgspec.Struct):
    customer_keys: list[str] = []
    customer_key: str | None = None
    case_id: str | None = None
    application_id: str | None = None
    system: bool = False


class _Body(msgspec.Struct):
    payload: _Payload


_decode = msgspec.json.Decoder(_Body).decode


def _upsert(conn: Connection) -> Any:
    return sqlite_insert if conn.dialect.name == "sqlite" else pg_insert


def refresh(engine: Engine) -> int:
    """Index the events stored since the last refresh; returns how many events were looked at."""
    with engine.begin() as conn:
        cursor = conn.scalar(select(ui_cursors.c.value).where(ui_cursors.c.name == CURSOR)) or 0
        newest = conn.scalar(select(func.max(events.c.seq))) or 0
    start = max(0, cursor - MARGIN)
    seen = 0
    while start < newest:
        with engine.begin() as conn:
            rows = conn.execute(
                select(events.c.seq, events.c.kind, events.c.ts, events.c.body)
                .where(events.c.seq > start, events.c.seq <= newest,
                       (events.c.kind == "db.query") | events.c.kind.startswith("business."))
                .order_by(events.c.seq).limit(PAGE)).all()
            if not rows:
                break
            _index(conn, rows)
            start = rows[-1].seq
            seen += len(rows)
            _save_cursor(conn, max(start, cursor))
    with engine.begin() as conn:
        _save_cursor(conn, max(newest, cursor))
    return seen


def _index(conn: Connection, rows: list[Any]) -> None:
    reads: list[dict[str, Any]] = []
    hits: list[dict[str, Any]] = []
    for seq, kind, ts, body in rows:
        try:
            p = _decode(body).payload
        except msgspec.DecodeError:
            continue  # stored events were checked at ingest: only a future schema could get here
        if kind == "db.query":
            if p.system:
                continue  # a foreign-key check by the database itself: nobody's read
            reads += [{"customer_key": k, "event_seq": seq, "ts": ts} for k in set(p.customer_keys)]
        elif p.customer_key:
            hits.append({"customer_key": p.customer_key, "event_seq": seq, "ts": ts, "kind": kind,
                         "ref": (p.case_id or p.application_id or None)})
    ins = _upsert(conn)
    for table, batch in ((customer_reads, reads), (customer_hits, hits)):
        for i in range(0, len(batch), 2_000):
            conn.execute(ins(table).on_conflict_do_nothing(index_elements=["customer_key", "event_seq"]),
                         batch[i:i + 2_000])


def _save_cursor(conn: Connection, value: int) -> None:
    ins = _upsert(conn)
    stmt = ins(ui_cursors).values(name=CURSOR, value=value, updated_at=dt.datetime.now(dt.timezone.utc))
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": stmt.excluded.value,
                                                                           "updated_at": stmt.excluded.updated_at}))
