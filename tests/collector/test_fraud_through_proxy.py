"""Loan-fraud linkage end to end: staff read a customers table in the real local PostgreSQL through the real
proxy; the lending system reports fraud on customers by identifiers written its own way; the collector's keys
from both sides meet, the linkage rule names the insider and the ranking puts her first."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from agent.events import DbQuery, encode
from collector import credentials
from collector.alerts import AlertStore
from collector.db import make_engine
from collector.fraud.business import BUSINESS_EVENTS_PATH
from collector.migrate import upgrade
from collector.rules_state import import_directory
from rules.identity import Person
from tests.agent.proxy.conftest import SECRET, RunningProxy, dbname, make_proxy  # noqa: F401 - a fixture
from tests.collector.test_cpc import p_value
from tests.helpers.api import Served, batch, served
from tests.helpers.procs import wait_for

pytestmark = pytest.mark.postgres
CUSTOMERS = 20_000
INNOCENT = 8
INSIDER_READS = 2_000
VICTIMS = 150


def customer_id(i: int) -> str:
    return f"390101{i:06d}X"  # as the core-banking table holds it


def as_lending_writes_it(i: int) -> str:
    return f"390101 {i:06d} x"  # as the lending system sends it


@pytest.fixture
def roles(pg_url: str) -> Iterator[list[str]]:
    """Database accounts for the staff (cluster-wide, so named uniquely and dropped afterwards)."""
    tag = uuid.uuid4().hex[:8]
    names = [f"fr{tag}_insider"] + [f"fr{tag}_staff{i}" for i in range(INNOCENT)]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        for n in names:
            conn.execute(f'CREATE ROLE "{n}" LOGIN')
    yield names
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for n in names:
            conn.execute(f'DROP OWNED BY "{n}"')  # the grants in the test database
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        for n in names:
            conn.execute(f'DROP ROLE IF EXISTS "{n}"')


@pytest.fixture
def core_banking(pg_url: str, roles: list[str]) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (customer_id text PRIMARY KEY, full_name text, phone text)")
        conn.execute("INSERT INTO customers SELECT '390101' || lpad(g::text, 6, '0') || 'X', 'Name ' || g, "
                     "'+3706' || g FROM generate_series(1, %s) g", (CUSTOMERS,))
        for r in roles:
            conn.execute(f'GRANT SELECT ON customers TO "{r}"')
    return pg_url


@pytest.fixture
def collector(sqlite_url: str, tmp_path: Path, roles: list[str]) -> Iterator[Served]:
    """A collector with the proxy's customer key and the staff directory (imported before it starts, so the rules
    name people from the first event)."""
    key = tmp_path / "customer-key"
    key.write_bytes(SECRET)
    key.chmod(0o600)
    config = tmp_path / "collector.toml"
    config.write_text(f'[customers]\nkey_file = "{key}"\n')
    engine = make_engine(sqlite_url)
    upgrade(engine)
    import_directory(engine, [Person(staff_id=r.split("_")[1], name=r.split("_")[1].title(), team="call_centre",
                                     db_users=(r,)) for r in roles])
    engine.dispose()
    with served(tmp_path / "collector", sqlite_url, config=config) as s:
        yield s


def test_reads_through_the_proxy_meet_the_lending_systems_fraud_reports(
        make_proxy: Callable[..., RunningProxy], core_banking: str, roles: list[str], collector: Served,
        tmp_path: Path) -> None:
    proxy = make_proxy(customer_keys=["public.customers.customer_id"], customer_keys_cap=1000,
                       sensitive={"public.customers.full_name": "name", "public.customers.phone": "phone"})
    insider, staff = roles[0], roles[1:]
    rng = random.Random(7)
    leaked = rng.sample(range(1, CUSTOMERS + 1), INSIDER_READS)
    url = proxy.url(core_banking)
    for who in staff:  # list screens of 20 customers at a time
        with psycopg.connect(url.replace("postgres@", f"{who}@"), autocommit=True) as conn:
            for _ in range(30):
                ids = [customer_id(i) for i in rng.sample(range(1, CUSTOMERS + 1), 20)]
                conn.execute("SELECT customer_id, full_name, phone FROM customers WHERE customer_id = ANY(%s)",
                             (ids,)).fetchall()
    with psycopg.connect(url.replace("postgres@", f"{insider}@"), autocommit=True) as conn:
        for chunk in range(0, INSIDER_READS, 500):  # the bulk read
            ids = [customer_id(i) for i in leaked[chunk:chunk + 500]]
            conn.execute("SELECT customer_id, full_name, phone FROM customers WHERE customer_id = ANY(%s)",
                         (ids,)).fetchall()
    queries = proxy.wait_queries(lambda es: sum(e.payload.database == dbname(core_banking) for e in es)
                                 >= INNOCENT * 30 + INSIDER_READS // 500, dbname(core_banking))
    for i in range(0, len(queries), 100):
        ack = collector.post(batch(*(encode(e) for e in queries[i:i + 100]))).json()
        assert ack["rejected"] == []

    source = credentials.create(collector.engine, "lending", "source")
    victims = rng.sample(leaked, VICTIMS)
    records = [{"type": "fraud_confirmed", "ts": "", "ref": f"FR-{i}",
                "customer": as_lending_writes_it(i), "case_id": f"FR-{i}"} for i in victims]
    fraud_at = max(q.ts for q in queries) + dt.timedelta(seconds=1)
    for r in records:  # after every read: the fraud follows the leak
        r["ts"] = fraud_at.isoformat()
    answer = httpx.post(collector.url + BUSINESS_EVENTS_PATH, json={"records": records},
                        headers={"Authorization": f"Bearer {source}"}, timeout=30).json()
    assert answer["accepted"] == VICTIMS and answer["rejected"] == []

    # The keys meet: every fraud report's key is one the proxy computed from the table's own value.
    read_by_insider = {k for q in queries if isinstance(q, DbQuery) and q.actor.db_user == insider
                       for k in q.payload.customer_keys}
    assert len(read_by_insider) == INSIDER_READS
    stored = [json.loads(r["body"]) for r in collector.stored().values()
              if r["kind"] == "business.fraud_confirmed"]
    fraud_keys = {b["payload"]["customer_key"] for b in stored}
    assert len(fraud_keys) == VICTIMS and fraud_keys <= read_by_insider

    # The linkage rule names the insider and those customers.
    insider_id = insider.split("_")[1]

    def linkage_alerts() -> list:  # type: ignore[type-arg]
        found = AlertStore(collector.engine).list(rule_id="custos.read_then_fraud")
        return found if any(a.severity == "critical" for a in found) else []

    alerts = wait_for(linkage_alerts, 60, "the linkage rule's critical alert")
    assert {a.staff_id for a in alerts} == {insider_id}
    assert all({x["customer"] for x in a.measures["links"]} <= fraud_keys for a in alerts)

    # The ranking puts her first, far beyond chance; nobody else is close.
    until = (fraud_at + dt.timedelta(minutes=1)).isoformat()  # the fraud may still lie ahead of the clock
    out = collector.collector.cli("investigate", "cpc", "--since", "1d", "--until", until)
    table = [line.split() for line in out.splitlines()[2:] if len(line.split()) >= 9]
    assert table[0][1] == "Insider" and int(table[0][4]) == VICTIMS and p_value(table[0][8]) < 1e-6, out
    assert all(p_value(row[7]) >= 0.01 for row in table[1:]), out
