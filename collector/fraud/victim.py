"""Victim-centric look-up: from a customer (a clear identifier hashed on the spot, or its key) or a fraud case,
everyone who read that customer in a period — with each statement's fingerprint and row count — and any file
export or removable-media copy the same person made in the hours after the read."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import Engine, select

from collector import activity
from collector.db import customer_hits, customer_reads, events
from collector.fraud.index import refresh

AFTER = dt.timedelta(hours=24)  # how long after a read an export counts as following it
FRAUD = "business.fraud_confirmed"


@dataclass(frozen=True)
class Read:
    event_id: str
    ts: dt.datetime
    who: str  # staff id, or db:ACCOUNT when the directory names nobody
    name: str
    account: str
    database: str | None
    fingerprint: str
    statement: str  # literals replaced at the source
    rows: int
    customers: int  # how many customers the same statement returned


@dataclass(frozen=True)
class Export:
    event_id: str
    ts: dt.datetime
    who: str
    what: str  # path and destination
    destination: str | None
    identifiers: int
    after: Read  # the read it followed


@dataclass(frozen=True)
class Happening:
    ts: dt.datetime
    kind: str
    ref: str | None


@dataclass(frozen=True)
class VictimReport:
    customer_key: str
    since: dt.datetime
    until: dt.datetime
    happenings: list[Happening]  # the business events about the customer
    reads: list[Read]
    exports: list[Export]

    @property
    def readers(self) -> list[str]:
        return sorted({r.who for r in self.reads})


def key_of_case(engine: Engine, case_id: str) -> tuple[str, dt.datetime] | None:
    """The customer key and time of a confirmed-fraud case, from the lending system's records."""
    refresh(engine)
    with engine.connect() as conn:
        row = conn.execute(select(customer_hits.c.customer_key, customer_hits.c.ts)
                           .where(customer_hits.c.ref == case_id, customer_hits.c.kind == FRAUD)
                           .order_by(customer_hits.c.ts).limit(1)).first()
    return (row[0], row[1]) if row is not None else None


def look_up(engine: Engine, customer_key: str, since: dt.datetime, until: dt.datetime) -> VictimReport:
    """Who read `customer_key` between `since` and `until`, oldest first, and what they exported after."""
    refresh(engine)
    acc = activity.accounts(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            select(events.c.event_id, events.c.ts, events.c.staff_id, events.c.db_user, events.c.os_user,
                   events.c.body)
            .join(customer_reads, customer_reads.c.event_seq == events.c.seq)
            .where(customer_reads.c.customer_key == customer_key, customer_reads.c.ts >= since,
                   customer_reads.c.ts < until).order_by(events.c.ts)).all()
        hits = conn.execute(select(customer_hits.c.ts, customer_hits.c.kind, customer_hits.c.ref)
                            .where(customer_hits.c.customer_key == customer_key).order_by(customer_hits.c.ts)).all()
    names: dict[str, str] = {}
    reads = []
    for event_id, ts, staff_id, db_user, os_user, body in rows:
        p = json.loads(body)["payload"]
        who = acc.owner(staff_id, db_user, os_user) or (f"db:{db_user}" if db_user else f"os:{os_user}")
        if who not in names:
            info = activity.person(engine, who)
            names[who] = info.display if info else who
        reads.append(Read(event_id, ts, who, names[who], db_user or os_user or "", p.get("database"),
                          p.get("fingerprint", ""), p.get("statement", ""), int(p.get("rows") or 0),
                          max(int(p.get("customer_keys_total") or 0), len(p.get("customer_keys") or ()))))
    return VictimReport(customer_key, since, until, [Happening(t, k, r) for t, k, r in hits], reads,
                        _exports(engine, reads, acc))


def _exports(engine: Engine, reads: list[Read], acc: activity.Accounts) -> list[Export]:
    out: list[Export] = []
    seen: set[str] = set()
    for who in {r.who for r in reads if not r.who.startswith(("db:", "os:"))}:
        mine = [r for r in reads if r.who == who]
        for f in activity.facts_of(engine, [who], mine[0].ts, mine[-1].ts + AFTER, acc=acc):
            if f.kind != "file.export" or f.event_id in seen:
                continue
            before = [r for r in mine if r.ts <= f.ts <= r.ts + AFTER]
            if before:
                seen.add(f.event_id)
                out.append(Export(f.event_id, f.ts, who, f.what, f.destination, f.identifiers, before[-1]))
    return sorted(out, key=lambda e: e.ts)
