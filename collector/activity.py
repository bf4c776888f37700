"""A person's activity as the store holds it: the events done under their accounts (staff id, or a db or OS
account the directory maps to them alone), decoded into plain facts for pages, timelines and summaries.

An account the directory maps to several people (a shared one) names nobody, as in the rule engine.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from collector.db import directory_accounts, directory_people, events


@dataclass(frozen=True)
class PersonInfo:
    staff_id: str
    name: str
    team: str | None
    manager: str | None
    email: str | None
    kind: str = "person"
    shift: str | None = None
    end_date: dt.date | None = None

    @property
    def display(self) -> str:
        return self.name or self.staff_id


def person(engine: Engine, staff_id: str) -> PersonInfo | None:
    with engine.connect() as conn:
        r = conn.execute(select(directory_people).where(directory_people.c.staff_id == staff_id)).first()
    return _info(r._mapping) if r is not None else None


def _info(r: Any) -> PersonInfo:
    return PersonInfo(r["staff_id"], r["name"], r["team"], r["manager"], r["email"], r["kind"], r["shift"],
                      r["end_date"])


def team_people(engine: Engine, team: str) -> list[PersonInfo]:
    with engine.connect() as conn:
        rows = conn.execute(select(directory_people).where(directory_people.c.team == team)
                            .order_by(directory_people.c.name)).all()
    return [_info(r._mapping) for r in rows]


def teams(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(t for (t,) in conn.execute(select(directory_people.c.team).distinct()) if t)


@dataclass
class Accounts:
    """Which accounts name which person (only accounts that name exactly one)."""

    db: dict[str, str] = field(default_factory=dict)
    os: dict[str, str] = field(default_factory=dict)

    def owner(self, staff_id: str | None, db_user: str | None, os_user: str | None) -> str | None:
        if staff_id:
            return staff_id
        if db_user and db_user in self.db:
            return self.db[db_user]
        if os_user and os_user in self.os:
            return self.os[os_user]
        return os_user if os_user and os_user in self.os.values() else None


def accounts(engine: Engine, staff_ids: Iterable[str] | None = None) -> Accounts:
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    with engine.connect() as conn:
        for kind, name, sid in conn.execute(select(directory_accounts.c.kind, directory_accounts.c.name,
                                                   directory_accounts.c.staff_id)):
            owners[(kind, name)].add(sid)
    wanted = set(staff_ids) if staff_ids is not None else None
    acc = Accounts()
    for (kind, name), sids in owners.items():
        if len(sids) == 1:
            (sid,) = sids
            if wanted is None or sid in wanted:
                (acc.db if kind == "db" else acc.os)[name] = sid
    return acc


def _who(acc: Accounts, staff_ids: set[str]) -> Any:
    conds = [events.c.staff_id.in_(sorted(staff_ids))]
    dbs = sorted(n for n, s in acc.db.items() if s in staff_ids)
    oss = sorted(n for n, s in acc.os.items() if s in staff_ids)
    if dbs:
        conds.append(events.c.db_user.in_(dbs))
    if oss:
        conds.append(events.c.os_user.in_(oss))
    return or_(*conds)


who_filter = _who  # the WHERE clause for these people's events: their staff id and the accounts naming only them


@dataclass(frozen=True)
class Fact:
    """One event in words and numbers, with no customer data (keys are counted, never shown)."""

    event_id: str
    kind: str
    ts: dt.datetime
    host: str
    staff_id: str | None
    account: str
    what: str
    rows: int = 0
    sensitive: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    destination: str | None = None
    identifiers: int = 0  # customer identifiers found in a file

    @property
    def customer_count(self) -> int:
        return len(self.customers)


def fact(row: Any, acc: Accounts) -> Fact:
    body = json.loads(row.body)
    actor = body.get("actor") or {}
    p = body.get("payload") or {}
    kind = row.kind
    owner = acc.owner(row.staff_id, row.db_user, row.os_user)
    account = row.db_user or row.os_user or row.agent
    if kind == "db.query":
        total = p.get("customer_keys_total")
        keys = tuple(p.get("customer_keys") or ())
        what = (p.get("statement") or p.get("statement_type") or "")[:300]
        return Fact(body["id"], kind, row.ts, row.host, owner, account, what, int(p.get("rows") or 0),
                    tuple(p.get("sensitive_classes") or ()), keys if total is None else keys,
                    tuple(p.get("tables_read") or ()))
    if kind == "file.export":
        counts = p.get("counts") or {}
        what = f"{p.get('action', 'wrote')} {p.get('path', '?')} ({p.get('destination', '?')})"
        return Fact(body["id"], kind, row.ts, row.host, owner, account, what, destination=p.get("destination"),
                    sensitive=tuple(sorted(counts)), identifiers=int(sum(counts.values())))
    if kind == "db.session":
        proc = (p.get("process") or {}).get("name") or "?"
        what = f"session {p.get('phase', '')} from {p.get('client_addr', '?')} ({proc})"
        return Fact(body["id"], kind, row.ts, row.host, owner, account, what)
    if kind == "device.mount":
        return Fact(body["id"], kind, row.ts, row.host, owner, account,
                    f"{p.get('action', '')} {p.get('mount_point', '')}", destination=p.get("destination"))
    return Fact(body["id"], kind, row.ts, row.host, owner, account or str(actor), kind)


_COLS = (events.c.event_id, events.c.kind, events.c.ts, events.c.host, events.c.agent, events.c.staff_id,
         events.c.db_user, events.c.os_user, events.c.body)


def facts_of(engine: Engine, staff_ids: Iterable[str], since: dt.datetime, until: dt.datetime, *,
             limit: int | None = None, acc: Accounts | None = None, page: int = 5000) -> Iterator[Fact]:
    """The events of these people between `since` and `until`, oldest first."""
    ids = set(staff_ids)
    acc = acc or accounts(engine)
    who = _who(acc, ids)
    last: tuple[dt.datetime, int] | None = None
    n = 0
    while True:
        q = select(*_COLS, events.c.seq).where(who, events.c.ts >= since, events.c.ts < until)
        if last is not None:
            q = q.where(or_(events.c.ts > last[0], and_(events.c.ts == last[0], events.c.seq > last[1])))
        with engine.connect() as conn:
            rows = conn.execute(q.order_by(events.c.ts, events.c.seq).limit(page)).all()
        for r in rows:
            f = fact(r, acc)
            if f.staff_id in ids:
                yield f
                n += 1
                if limit is not None and n >= limit:
                    return
        if len(rows) < page:
            return
        last = (rows[-1].ts, int(rows[-1].seq))


def facts_of_account(engine: Engine, db_user: str, since: dt.datetime, until: dt.datetime, *,
                     limit: int = 300) -> list[Fact]:
    """The events of one database account (a shared one names nobody), oldest first."""
    acc = accounts(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(*_COLS).where(events.c.db_user == db_user, events.c.ts >= since,
                                                 events.c.ts < until).order_by(events.c.ts).limit(limit)).all()
    return [fact(r, acc) for r in rows]


def facts_by_id(engine: Engine, event_ids: Iterable[str]) -> list[Fact]:
    ids = list(event_ids)[:1000]
    if not ids:
        return []
    acc = accounts(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(*_COLS).where(events.c.event_id.in_(ids)).order_by(events.c.ts)).all()
    return [fact(r, acc) for r in rows]


@dataclass(frozen=True)
class Day:
    date: dt.date
    queries: int
    sensitive_rows: int
    customers: int
    baseline: float | None  # the median of the person's previous days with activity


def daily(engine: Engine, staff_id: str, start: dt.date, end: dt.date, zone: dt.tzinfo,
          baseline_days: int = 14) -> list[Day]:
    """Per local day from `start` to `end` (inclusive): queries, sensitive rows, distinct customers, and the
    person's own baseline for distinct customers (median of the previous `baseline_days` active days)."""
    lead = start - dt.timedelta(days=baseline_days * 2)
    since = dt.datetime.combine(lead, dt.time(0), zone)
    until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0), zone)
    q: dict[dt.date, int] = defaultdict(int)
    rows: dict[dt.date, int] = defaultdict(int)
    cust: dict[dt.date, set[str]] = defaultdict(set)
    for f in facts_of(engine, [staff_id], since, until):
        if f.kind != "db.query":
            continue
        d = f.ts.astimezone(zone).date()
        q[d] += 1
        if f.sensitive:
            rows[d] += f.rows
        cust[d].update(f.customers)
    out = []
    history: list[int] = []
    day = lead
    while day <= end:
        value = len(cust.get(day, ()))
        base = statistics.median(history[-baseline_days:]) if len(history) >= 3 else None
        if day >= start:
            out.append(Day(day, q.get(day, 0), rows.get(day, 0), value, base))
        if value:
            history.append(value)
        day += dt.timedelta(days=1)
    return out
