"""The lane (agent/proxy/_framer.c) writes the events of common round trips in C: they must be the events the
Python audit writes, and anything unusual must go back to the Python audit with nothing lost."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
from collections import Counter
from collections.abc import Callable

import asyncpg
import psycopg
import pytest

from agent.events import DbQuery
from agent.proxy import pgwire as w
from tests.agent.proxy.conftest import RunningProxy, dbname
from tests.helpers.procs import wait_for

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(w.Lane is None, reason="the C extension was not built")]

KEYS = {"customer_keys": ["public.customers.customer_id"],
        "sensitive": {"public.customers.national_id": "id_number"}}

# Simple queries (psql sends each line as one Query message): literals of every kind, statements the lane must
# give back (comments, dollar quotes, errors after rows, COPY, an empty query, a key table), notices inside a
# result, a transaction, and a change of application_name in the middle.
PSQL = r"""
SELECT id, label FROM items WHERE id = 7;
SELECT id, label FROM items WHERE id = 8;
select id from items where label = 'it''s' or price > 1.5e3 or id in (1, 2, 3_000);
SELECT count(*) FROM items WHERE price < -2.50;
SELECT id FROM items WHERE id = 9;  
/*custos_user='bob'*/ SELECT id FROM items WHERE id = 10;
SELECT $$x$$ AS dollar, E'a\nb' AS escaped, "id" FROM items WHERE id = 11;
SELECT id FROM items WHERE id = 12; SELECT id FROM items WHERE id = 13;
SELECT 10 / (3 - g) FROM generate_series(1, 5) g;
SELECT * FROM noisy(4);
COPY (SELECT id FROM items WHERE id < 50) TO STDOUT;
;
SELECT national_id FROM customers WHERE customer_id = 4;
SELECT customer_id AS alias FROM customers WHERE customer_id = 4;
SELECT national_id FROM customers WHERE customer_id = 5;
SELECT customer_id, national_id FROM customers WHERE customer_id = 5;
SELECT customer_id AS alias FROM customers WHERE customer_id = 6;
SELECT customer_id AS alias FROM customers WHERE customer_id = 7;
SELECT national_id FROM customers WHERE customer_id = 6;
BEGIN;
SELECT id FROM items WHERE id = 14;
UPDATE items SET label = label WHERE id = 15;
COMMIT;
SET application_name = 'renamed';
SELECT id FROM items WHERE id = 16;
SELECT id, label FROM items WHERE id = 17;
"""


@pytest.fixture
def db(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text, price numeric)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 2000) g")
        conn.execute("CREATE TABLE customers (customer_id bigint PRIMARY KEY, national_id text)")
        conn.execute("INSERT INTO customers SELECT g, 'NID' || g FROM generate_series(1, 100) g")
        conn.execute("CREATE FUNCTION noisy(n int) RETURNS SETOF int LANGUAGE plpgsql AS $$ BEGIN "
                     "FOR i IN 1..n LOOP RAISE NOTICE 'row %', i; RETURN NEXT i; END LOOP; END $$")
    subprocess.run(["pgbench", "-i", "-q", "-s", "1", "-h", "127.0.0.1", "-U", "postgres", dbname(pg_url)],
                   check=True, capture_output=True, timeout=120)
    return pg_url


def facts(e: DbQuery) -> tuple:  # type: ignore[type-arg]
    """What an event says, less what differs from run to run (ids, times, ports)."""
    p = e.payload
    return (p.statement, p.statement_type, p.fingerprint, tuple(p.tables_read), tuple(p.tables_written),
            tuple(p.columns), tuple(p.sensitive_classes), p.rows, p.bytes, p.error_code, p.cursor,
            tuple(p.customer_keys or ()), p.customer_keys_total, p.application_name, p.database,
            e.actor.db_user, e.actor.end_user, e.source.type, e.host)


def run_workload(url: str) -> None:
    out = subprocess.run(["psql", "-X", "-q", url], input=PSQL, capture_output=True, text=True, timeout=60)
    assert "division by zero" in out.stderr and out.stdout.count("\n") > 40, out.stderr

    async def prepared() -> None:
        conn = await asyncpg.connect(url)
        try:
            stmt = await conn.prepare("SELECT id, label FROM items WHERE id = $1")
            for i in range(1, 21):
                assert (await stmt.fetchrow(i))["label"] == f"item {i}"
            async with conn.transaction():  # inside a transaction the unnamed portal outlives the round trip
                for i in range(21, 26):
                    await stmt.fetchrow(i)
                await conn.execute("UPDATE items SET price = price WHERE id = 3")
            bad = await conn.prepare("SELECT 10 / (3 - id) FROM items WHERE id < 6 ORDER BY id")
            with pytest.raises(asyncpg.DivisionByZeroError):
                await bad.fetch()
            keys = await conn.prepare("SELECT customer_id FROM customers WHERE customer_id < $1 ORDER BY 1")
            assert len(await keys.fetch(4)) == 3
            # A key table read without its key column: the lane may take it, once its columns are known.
            others = await conn.prepare("SELECT national_id FROM customers WHERE customer_id = $1")
            for i in range(1, 6):
                assert await others.fetchval(i) == f"NID{i}"
        finally:
            await conn.close()

    asyncio.run(prepared())
    with psycopg.connect(url, autocommit=True) as conn:  # libpq: Bind, Describe, Execute, Sync
        for i in range(30, 40):
            conn.execute("SELECT id, price FROM items WHERE id = %s", (i,), prepare=True)
    name = re.sub(r".*/", "", url.split("?")[0])
    out = subprocess.run(["pgbench", "-n", "-c", "2", "-t", "50", "-M", "prepared", "-S", "-h", "127.0.0.1", "-p",
                          url.split(":")[-1].split("/")[0], "-U", "postgres", name],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def events_of(proxy: RunningProxy, name: str, count: int) -> list[DbQuery]:
    return proxy.wait_queries(lambda es: len(es) >= count, name, what=f"{count} db.query events")


def ended(proxy: RunningProxy, sessions: int) -> None:
    wait_for(lambda: proxy.server.open_connections == 0, 20, "every proxied session to end")


def test_the_lane_writes_the_events_the_python_audit_writes(make_proxy: Callable[..., RunningProxy],
                                                           db: str) -> None:
    name = dbname(db)
    python = make_proxy(lane=False, **KEYS)
    run_workload(python.url(db))
    ended(python, 0)
    expected = python.queries(name)
    assert python.server.lane_fast == 0 and len(expected) > 150

    before = dt.datetime.now(dt.timezone.utc)
    lane = make_proxy(**KEYS)
    run_workload(lane.url(db))
    ended(lane, 0)
    after = dt.datetime.now(dt.timezone.utc)
    got = events_of(lane, name, len(expected))

    # pgbench reads random rows: its SELECTs agree in everything but the row's bytes.
    def comparable(events: list[DbQuery]) -> Counter:  # type: ignore[type-arg]
        return Counter(facts(e)[:8] + facts(e)[9:] if "pgbench_accounts" in e.payload.statement else facts(e)
                       for e in events)

    assert comparable(got) == comparable(expected)
    assert lane.server.lane_fast > 100, "the lane took the common round trips"
    assert lane.server.lane_gave_up >= 3, "errors, notices' neighbours and COPY went back to Python"
    for e in got:
        assert before <= e.payload.started_at <= after and before <= e.ts <= after
        assert e.payload.duration_ms is not None and 0 <= e.payload.duration_ms < 10_000
    ids = [e.id for e in got]
    assert len(set(ids)) == len(ids)
    # Each session's events keep the order of its statements.
    renamed = [e for e in got if e.payload.application_name == "renamed"]
    assert [e.payload.statement for e in renamed] == [
        "SELECT id FROM items WHERE id = ?", "SELECT id, label FROM items WHERE id = ?"]


def test_an_error_after_rows_goes_back_to_python_with_the_rows_counted(make_proxy: Callable[..., RunningProxy],
                                                                     db: str) -> None:
    lane = make_proxy(**KEYS)
    with psycopg.connect(lane.url(db), autocommit=True) as conn:
        conn.execute("SELECT id FROM items WHERE id = 1").fetchall()  # the lane takes this one
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 10 / (1500 - id) FROM items WHERE id > 1000 ORDER BY id").fetchall()
        conn.execute("SELECT id FROM items WHERE id = 2").fetchall()
    events = events_of(lane, dbname(db), 3)
    failed = [e for e in events if e.payload.error_code]
    assert len(failed) == 1 and failed[0].payload.error_code == "22012"
    # The rows the server sent before the error are counted, as the Python audit counts them.
    assert failed[0].payload.rows is not None and 0 <= failed[0].payload.rows <= 499
    assert [e.payload.error_code for e in events][-1] is None
    ended(lane, 0)
    assert lane.server.lane_fast >= 2 and lane.server.lane_gave_up >= 1
