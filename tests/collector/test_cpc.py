"""The common-point-of-compromise ranking: a synthetic bank's insider first, no innocent person flagged, over
twenty seeds; and the same through the store and `custos investigate cpc`."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.customer_keys import CustomerKeyHasher
from agent.events import Actor, DbQuery, DbQueryPayload, FraudConfirmed, FraudConfirmedPayload, Source, new_event
from collector.alerts import AlertStore
from collector.db import make_engine
from collector.fraud.cpc import Reads, first_reads, rank
from collector.fraud.investigate import CPC_RULE
from collector.fraud.synthetic import DAY, generate
from collector.migrate import upgrade
from collector.store import EventStore
from tests.helpers.procs import base_env

SEEDS = range(20)


def p_value(text: str) -> float:
    """A p-value as `custos investigate cpc` prints it (`<1e-300` below what a double holds)."""
    return 0.0 if text.startswith("<") else float(text)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_insider_ranks_first_with_p_below_1e_6_and_no_innocent_below_0_01(seed: int) -> None:
    bank = generate(seed)
    assert len(bank.staff) == 40 and len(bank.leaked) == 2000 and len(bank.victims) == 150
    ranking = rank(bank.reads, bank.fraud_customer, bank.fraud_t, lookback=30 * DAY, top=40)
    first = ranking.ranked[0]
    assert first.person == bank.insider
    assert first.p < 1e-6 and first.p_adj < 1e-6
    assert first.hit >= 150  # every victim, and any background fraud she happened to read first
    assert {h.customer for h in first.hits} >= set(bank.victims.tolist())
    innocent = [r for r in ranking.ranked if r.person != bank.insider]
    assert len(innocent) == 39
    assert min(r.p for r in innocent) >= 0.01


def test_reads_after_the_fraud_and_before_the_lookback_do_not_count() -> None:
    # person 0 read customers 0-9 a day before they were hit; person 1 read them a day after (the victims called);
    # person 2 read them 40 days before.
    c = np.arange(10)
    hit_t = np.full(10, 100 * DAY)
    reads = Reads(np.repeat([0, 1, 2], 10), np.tile(c, 3),
                  np.concatenate([hit_t - DAY, hit_t + DAY, hit_t - 40 * DAY]))
    background = Reads(np.concatenate([reads.person, np.repeat([0, 1, 2], 100)]),
                       np.concatenate([reads.customer, np.arange(10, 310)]),
                       np.concatenate([reads.t, np.full(300, 50 * DAY)]))
    ranking = rank(background, c, hit_t, lookback=30 * DAY)
    by_person = {r.person: r for r in ranking.ranked}
    assert (by_person[0].hit, by_person[1].hit, by_person[2].hit) == (10, 0, 0)
    assert by_person[1].p == by_person[2].p == 1.0
    assert ranking.population == 310 and ranking.frauds == 10 and ranking.people == 3
    assert by_person[0].share == 1.0 and by_person[0].lift == pytest.approx((10 / 110) / (10 / 310))
    assert rank(background, c, hit_t, lookback=None).ranked[0].hit == 10
    assert {r.person: r.hit for r in rank(background, c, hit_t, lookback=None).ranked}[2] == 10


def _store_bank(engine: object, start: dt.datetime, hasher: CustomerKeyHasher) -> tuple[str, set[str]]:
    bank = generate(3, customers=20_000, start=start.timestamp())
    store = EventStore(engine)  # type: ignore[arg-type]
    key = [hasher.hash(f"CUST-{i:06d}") for i in range(bank.customers)]
    src = Source(type="proxy", name="pg-core")
    events = []
    hour = (bank.reads.t // 3600).astype(np.int64)
    order = np.lexsort((hour, bank.reads.person))
    p, c, h, t = bank.reads.person[order], bank.reads.customer[order], hour[order], bank.reads.t[order]
    cut = np.flatnonzero((np.diff(p) != 0) | (np.diff(h) != 0)) + 1
    for lo, hi in zip(np.concatenate([[0], cut]), np.concatenate([cut, [len(p)]])):
        for a in range(lo, hi, 1000):
            b = min(hi, a + 1000)
            keys = sorted({key[int(x)] for x in c[a:b]})
            staff = bank.staff[int(p[a])][0]
            events.append(new_event(DbQuery, DbQueryPayload(
                session_id=f"s-{staff}", statement_type="SELECT", fingerprint="f1",
                statement="SELECT customer_id, full_name, phone FROM customers WHERE customer_id = ANY($1)",
                rows=len(keys), customer_keys=keys, sensitive_classes=["name", "phone"]),
                source=src, actor=Actor(db_user=staff, staff_id=staff), host="db01",
                ts=dt.datetime.fromtimestamp(float(t[b - 1]), dt.timezone.utc)))
    lend = Source(type="business", name="lending")
    for i, (cust, ft) in enumerate(zip(bank.fraud_customer, bank.fraud_t)):
        when = dt.datetime.fromtimestamp(float(ft), dt.timezone.utc)
        events.append(new_event(FraudConfirmed, FraudConfirmedPayload(
            customer_key=key[int(cust)], case_id=f"FR-{i}", confirmed_on=when.date()), source=lend,
            host="lending", ts=when))
    for i in range(0, len(events), 2000):
        store.insert(events[i:i + 2000], agent="test")
    return bank.staff[bank.insider][0], {key[int(v)] for v in bank.victims}


def test_investigate_cpc_ranks_the_insider_first_from_the_store_and_raises_one_alert(db_url: str,
                                                                                      tmp_path: Path) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=45)).replace(microsecond=0)
    insider, victims = _store_bank(engine, start, CustomerKeyHasher(b"cpc-test-key-0123456789abcdef"))
    env = base_env(CUSTOS_DATABASE_URL=db_url)

    def run() -> str:
        proc = subprocess.run([sys.executable, "-m", "collector", "investigate", "cpc", "--since", "90d"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = run()
    table = out.splitlines()
    first = table[2].split()
    assert first[0] == "1" and first[1] == insider, out
    assert int(first[4]) >= 150 and p_value(first[7]) < 1e-6
    rows = [line.split() for line in table[3:] if len(line.split()) >= 9]
    assert len(rows) == 19 and all(p_value(r[7]) >= 0.01 for r in rows), out
    assert "1 alert(s) raised" in out
    (alert,) = AlertStore(engine).list(rule_id=CPC_RULE)
    assert alert.staff_id == insider and alert.severity == "critical"
    assert victims <= {x["customer"] for x in alert.measures["links"]}
    assert "alert(s) raised" not in run()  # the same findings again: no second alert
    assert len(AlertStore(engine).list(rule_id=CPC_RULE)) == 1
    engine.dispose()


def test_first_reads_agree_whether_keys_and_times_fit_one_integer_or_not() -> None:
    rng = np.random.default_rng(0)
    pair = rng.integers(0, 1000, 20_000)
    t = rng.uniform(1.79e9, 1.79e9 + 90 * DAY, 20_000)
    packed_keys, packed_t = first_reads(pair, t)  # the one-integer sort
    wide_keys, wide_t = first_reads(pair + (1 << 50), t)  # too wide: the stable sort
    assert np.array_equal(packed_keys, wide_keys - (1 << 50))
    assert np.all((packed_t >= wide_t) & (packed_t - wide_t < 1.0))  # rounded up to the second
    expected = {int(k): min(float(x) for x, q in zip(t, pair) if q == k) for k in np.unique(pair)[:20]}
    assert {int(k): float(v) for k, v in zip(wide_keys - (1 << 50), wide_t) if int(k) in expected} == expected


def test_the_daily_job_raises_the_insiders_alert_once(sqlite_url: str) -> None:
    from collector.config import CollectorConfig
    from collector.scheduler import Jobs

    engine = make_engine(sqlite_url)
    upgrade(engine)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    insider, victims = _store_bank(engine, now - dt.timedelta(days=45), CustomerKeyHasher(b"job-test-key-0123456789"))

    (raised,) = Jobs(engine, CollectorConfig(), clock=lambda: now).run_cpc()

    (alert,) = AlertStore(engine).list(rule_id=CPC_RULE)
    assert alert.alert_id == raised and alert.staff_id == insider and alert.origin == "investigation"
    assert alert.measures["p_adj"] < 1e-6 and victims <= {x["customer"] for x in alert.measures["links"]}
    assert Jobs(engine, CollectorConfig(), clock=lambda: now).run_cpc() == []  # today's run is taken
    tomorrow = Jobs(engine, CollectorConfig(), clock=lambda: now + dt.timedelta(days=1))
    assert tomorrow.run_cpc() == []  # the same person within a week: not again
    engine.dispose()
