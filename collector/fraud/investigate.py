"""Investigations on the store: the common-point-of-compromise ranking of a period, and the alert it raises for
a person ranked far above chance. Reads and confirmed frauds come from the linkage index (collector/fraud/index.py);
people from the directory, as the rules name them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, func, select

from collector import activity
from collector.alerts import AlertStore
from collector.db import customer_hits, customer_reads, events
from collector.fraud.cpc import Reads, rank
from collector.fraud.index import refresh
from rules.alerts import Alert, alert_id

FRAUD = "business.fraud_confirmed"
CPC_RULE = "custos.common_point_of_compromise"
ALERT_BELOW = 1e-6  # p_adj under which a person becomes an alert
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class HitCustomer:
    customer_key: str
    read_at: dt.datetime
    hit_at: dt.datetime


@dataclass(frozen=True)
class CpcRow:
    who: str  # staff id, or the account (db:NAME, os:NAME) when the directory names nobody
    staff_id: str | None
    name: str
    team: str | None
    read: int
    hit: int
    share: float
    lift: float
    p: float
    p_adj: float
    hits: tuple[HitCustomer, ...]


@dataclass(frozen=True)
class CpcReport:
    since: dt.datetime
    until: dt.datetime
    lookback: dt.timedelta
    population: int  # N: customers anyone read
    frauds: int  # K: of those, confirmed fraud victims
    people: int
    rows: list[CpcRow]
    confirmed: int = 0  # every confirmed victim of the period, read by someone or not


def parse_when(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`90d`, `12h` (that long before now) or a date or time (UTC when no zone is given)."""
    from agent.units import parse_duration

    now = now or dt.datetime.now(dt.timezone.utc)
    text = text.strip()
    if text and text[-1] in "smhdw" and text[:-1].replace(".", "", 1).isdigit():
        return now - dt.timedelta(seconds=parse_duration(text))
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: give a span back from now (90d, 12h) or a date such as 2026-09-01") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)


def cpc(engine: Engine, since: dt.datetime, until: dt.datetime, *, lookback: dt.timedelta = 30 * DAY,
        top: int = 20) -> CpcReport:
    """Rank the people whose reads (from `since - lookback` to `until`) cover the customers confirmed as fraud
    victims between `since` and `until`."""
    refresh(engine)
    with engine.connect() as conn:
        frauds = conn.execute(
            select(customer_hits.c.customer_key, func.min(customer_hits.c.ts))
            .where(customer_hits.c.kind == FRAUD, customer_hits.c.ts >= since, customer_hits.c.ts < until)
            .group_by(customer_hits.c.customer_key)).all()
        rows = conn.execute(
            select(customer_reads.c.customer_key, customer_reads.c.ts, events.c.staff_id, events.c.db_user,
                   events.c.os_user)
            .join(events, events.c.seq == customer_reads.c.event_seq)
            .where(customer_reads.c.ts >= since - lookback, customer_reads.c.ts < until)).all()
    acc = activity.accounts(engine)
    keys: dict[str, int] = {}
    people: dict[str, int] = {}
    person = np.empty(len(rows), dtype=np.int64)
    customer = np.empty(len(rows), dtype=np.int64)
    t = np.empty(len(rows), dtype=np.float64)
    for i, (key, ts, staff_id, db_user, os_user) in enumerate(rows):
        who = acc.owner(staff_id, db_user, os_user) or (f"db:{db_user}" if db_user else f"os:{os_user}")
        person[i] = people.setdefault(who, len(people))
        customer[i] = keys.setdefault(key, len(keys))
        t[i] = ts.timestamp()
    fraud_customer = np.array([keys.setdefault(k, len(keys)) for k, _ in frauds], dtype=np.int64)
    fraud_t = np.array([ts.timestamp() for _, ts in frauds], dtype=np.float64)
    ranking = rank(Reads(person, customer, t), fraud_customer, fraud_t, lookback=lookback.total_seconds(), top=top)
    names = {v: k for k, v in people.items()}
    key_of = {v: k for k, v in keys.items()}
    out = []
    for r in ranking.ranked:
        who = names[r.person]
        info = activity.person(engine, who)
        staff_id = info.staff_id if info else (None if who.startswith(("db:", "os:")) else who)
        out.append(CpcRow(who, staff_id, info.display if info else who,
                          info.team if info else None, r.read, r.hit, r.share, r.lift, r.p, r.p_adj,
                          tuple(HitCustomer(key_of[h.customer], _utc(h.read_t), _utc(h.hit_t)) for h in r.hits)))
    return CpcReport(since, until, lookback, ranking.population, ranking.frauds, ranking.people, out, len(frauds))


def cpc_alerts(report: CpcReport, below: float = ALERT_BELOW) -> list[Alert]:
    """An alert for each person whose adjusted p-value is under `below`: the same findings give the same id."""
    out = []
    for r in report.rows:
        if r.p_adj >= below or not r.hits:
            continue
        first = min(h.read_at for h in r.hits)
        last = max(h.hit_at for h in r.hits)
        summary = (f"{r.name} read {r.hit} of the {report.frauds} customers confirmed as fraud victims between "
                   f"{report.since:%d %b %Y} and {report.until:%d %b %Y} ({r.share:.0%} of them; "
                   f"{r.lift:.1f} times the rate of all reads; p = {r.p:.1e}, {r.p_adj:.1e} over "
                   f"{report.people} people) — a likely common point of compromise.")
        links = [{"customer": h.customer_key, "read_at": h.read_at.isoformat(), "hit_at": h.hit_at.isoformat(),
                  "days": round((h.hit_at - h.read_at) / DAY, 1)} for h in r.hits]
        out.append(Alert(
            alert_id=alert_id(CPC_RULE, r.who, f"{r.hit}:{report.frauds}:{report.until:%Y-%m-%d}"),
            rule_id=CPC_RULE, title="Common point of compromise of fraud victims", severity="critical",
            tags=("T1213", "T1530"), group=r.who, ts=report.until if report.until < _now() else _now(),
            first_ts=first, last_ts=last, summary=summary, evidence=(), staff_id=r.staff_id,
            person_name=r.name if r.staff_id else None, team=r.team,
            measures={"customers": r.hit, "read": r.read, "share": round(r.share, 4), "lift": round(r.lift, 2),
                      "p": r.p, "p_adj": r.p_adj, "frauds": report.frauds, "population": report.population,
                      "links": links}))
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def raise_cpc_alerts(engine: Engine, report: CpcReport, below: float = ALERT_BELOW) -> list[str]:
    """Store the ranking's alerts (once each; not again within a week for the same person); their ids."""
    return AlertStore(engine).save(cpc_alerts(report, below), origin="investigation",
                                   suppress={CPC_RULE: 7 * 86400.0})
