"""Known statements through the proxy, each checked against the db.query event it produced."""

from __future__ import annotations

import asyncio
import subprocess

import asyncpg
import psycopg
import pytest

from tests.agent.proxy.conftest import RunningProxy, dbname, key_hash

pytestmark = pytest.mark.postgres
ROWS = 100_000


@pytest.fixture
def bank(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE customers (customer_id bigint PRIMARY KEY, full_name text, national_id text, phone text)"
        )
        conn.execute(
            "INSERT INTO customers SELECT g, 'Name ' || g, 'NID' || lpad(g::text, 9, '0'), '+4470' || g "
            "FROM generate_series(1, %s) g", (ROWS,)
        )
        conn.execute("CREATE TABLE orders (order_id serial PRIMARY KEY, customer_id bigint, amount numeric)")
        conn.execute("INSERT INTO orders (customer_id, amount) SELECT g % 20 + 1, g FROM generate_series(1, 60) g")
    return pg_url


def one(events: list, needle: str):  # type: ignore[no-untyped-def]
    found = [e for e in events if needle in e.payload.statement]
    assert len(found) == 1, (needle, [e.payload.statement for e in events])
    return found[0]


def test_point_lookup_records_table_row_key_hash_and_no_literal(proxy: RunningProxy, bank: str) -> None:
    with psycopg.connect(proxy.url(bank), autocommit=True) as conn:
        row = conn.execute("SELECT customer_id, full_name FROM customers WHERE customer_id = %s", (4242,)).fetchone()
    assert row == (4242, "Name 4242")
    events = proxy.wait_queries(lambda es: any("full_name" in e.payload.statement for e in es), dbname(bank))
    e = one(events, "full_name FROM customers")
    p = e.payload
    assert p.statement == "SELECT customer_id, full_name FROM customers WHERE customer_id = $1"
    assert (p.statement_type, p.tables_read, p.rows, p.error_code) == ("SELECT", ["public.customers"], 1, None)
    assert p.sensitive_classes == ["name"]
    assert p.customer_keys == [key_hash("4242")] and p.customer_keys_total == 1
    assert e.actor.db_user == "postgres" and p.database == dbname(bank) and p.client_addr == "127.0.0.1"
    assert p.duration_ms is not None and p.started_at is not None and p.bytes and p.bytes > 0


def test_large_select_counts_every_row_and_caps_key_hashes_keeping_the_total(proxy: RunningProxy, bank: str) -> None:
    with psycopg.connect(proxy.url(bank), autocommit=True) as conn:
        rows = conn.execute("SELECT customer_id, national_id FROM customers ORDER BY customer_id").fetchall()
    assert len(rows) == ROWS
    events = proxy.wait_queries(lambda es: any("national_id FROM" in e.payload.statement for e in es), dbname(bank))
    p = one(events, "national_id FROM customers").payload
    assert p.rows == ROWS and p.sensitive_classes == ["id_number"]
    assert p.bytes > ROWS * 20  # each row: two field lengths + an 8-byte key + a 12-character identifier
    assert p.customer_keys_total == ROWS and len(p.customer_keys) == 1000
    assert p.customer_keys == [key_hash(str(i)) for i in range(1, 1001)]


def test_join_and_cte_name_their_tables_and_rows(proxy: RunningProxy, bank: str) -> None:
    with psycopg.connect(proxy.url(bank), autocommit=True) as conn:
        joined = conn.execute(
            "SELECT c.full_name, o.amount FROM customers c JOIN orders o ON o.customer_id = c.customer_id "
            "WHERE c.customer_id <= %s", (5,)).fetchall()
        counted = conn.execute(
            "WITH few AS (SELECT customer_id FROM customers WHERE customer_id <= 500) SELECT count(*) FROM few"
        ).fetchone()
    assert len(joined) == 15 and counted == (500,)
    events = proxy.wait_queries(lambda es: sum("JOIN" in e.payload.statement or "WITH" in e.payload.statement
                                               for e in es) == 2, dbname(bank))
    j = one(events, "JOIN orders").payload
    assert sorted(j.tables_read) == ["public.customers", "public.orders"] and j.rows == 15
    assert "public.customers.full_name" in j.columns and j.sensitive_classes == ["name"]
    c = one(events, "WITH few").payload
    assert c.statement_type == "SELECT" and c.tables_read == ["public.customers"] and c.rows == 1
    assert "500" not in c.statement


def test_copy_out_is_an_export_with_rows_and_bytes_and_copy_in_counts_rows_written(proxy: RunningProxy,
                                                                                   bank: str) -> None:
    size = 0
    with psycopg.connect(proxy.url(bank), autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy("COPY customers TO STDOUT") as copy:
            for block in copy:
                size += len(block)
        with cur.copy("COPY orders (customer_id, amount) FROM STDIN") as copy:
            for i in range(2500):
                copy.write_row((i, i))
    events = proxy.wait_queries(lambda es: sum(e.payload.statement_type == "COPY" for e in es) == 2, dbname(bank))
    p = one(events, "COPY customers").payload
    assert p.rows == ROWS and p.bytes == size
    assert p.tables_read == ["public.customers"] and set(p.sensitive_classes) == {"id_number", "name"}
    loaded = one(events, "COPY orders").payload
    assert loaded.rows == 2500 and loaded.tables_written == ["public.orders"] and loaded.tables_read == []


def test_failing_statements_carry_their_sqlstate(proxy: RunningProxy, bank: str) -> None:
    with psycopg.connect(proxy.url(bank), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table WHERE x = %s", ("planted",))
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT customer_id / 0 FROM customers WHERE customer_id = %s", (1,))
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    events = proxy.wait_queries(lambda es: sum(e.payload.error_code is not None for e in es) == 2, dbname(bank))
    assert one(events, "no_such_table").payload.error_code == "42P01"
    assert one(events, "/ ?").payload.error_code == "22012"


def test_execute_with_row_limit_is_one_read_with_all_its_rows(proxy: RunningProxy, bank: str) -> None:
    async def read() -> int:
        conn = await asyncpg.connect(proxy.url(bank))
        try:
            async with conn.transaction():
                cur = await conn.cursor("SELECT customer_id FROM customers WHERE customer_id <= $1 "
                                        "ORDER BY customer_id", 1000)
                got = len(await cur.fetch(100)) + len(await cur.fetch(50))
            return got
        finally:
            await conn.close()

    assert asyncio.run(read()) == 150
    events = proxy.wait_queries(lambda es: any("<= $1" in e.payload.statement for e in es), dbname(bank))
    p = one(events, "<= $1 ORDER BY").payload
    assert p.rows == 150 and p.customer_keys == [key_hash(str(i)) for i in range(1, 151)]


def test_rows_fetched_through_a_declared_cursor_are_tied_to_its_query(proxy: RunningProxy, bank: str) -> None:
    script = ("BEGIN; DECLARE c1 CURSOR FOR SELECT customer_id, national_id FROM customers WHERE customer_id <= 250;"
              "FETCH 100 FROM c1; FETCH 100 FROM c1; FETCH 100 FROM c1; CLOSE c1; COMMIT;")
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", proxy.url(bank), "-c", script], capture_output=True,
                         text=True, check=True, timeout=60)
    assert len(out.stdout.split()) == 250
    events = proxy.wait_queries(lambda es: sum(e.payload.statement_type == "FETCH" for e in es) == 3, dbname(bank))
    fetches = [e.payload for e in events if e.payload.statement_type == "FETCH"]
    assert [f.rows for f in fetches] == [100, 100, 50]
    for f in fetches:
        assert f.cursor == "c1" and f.tables_read == ["public.customers"] and f.sensitive_classes == ["id_number"]
    hashes = [h for f in fetches for h in f.customer_keys]
    assert hashes == [key_hash(str(i)) for i in range(1, 251)]
    declare = one(events, "DECLARE c1").payload
    assert declare.cursor == "c1" and declare.tables_read == ["public.customers"] and declare.rows == 0


def test_psycopg_named_cursor_rows_are_counted_against_its_query(proxy: RunningProxy, bank: str) -> None:
    with psycopg.connect(proxy.url(bank)) as conn:
        with conn.cursor(name="custos_named") as cur:
            cur.execute("SELECT customer_id, full_name FROM customers WHERE customer_id <= %s", (300,))
            got = len(cur.fetchmany(120)) + len(cur.fetchmany(120)) + len(cur.fetchall())
        conn.commit()
    assert got == 300
    events = proxy.wait_queries(
        lambda es: sum(e.payload.rows or 0 for e in es if e.payload.cursor == "custos_named"
                       and e.payload.statement_type == "FETCH") == 300, dbname(bank))
    fetches = [e.payload for e in events if e.payload.statement_type == "FETCH"]
    assert all(f.tables_read == ["public.customers"] and f.sensitive_classes == ["name"] for f in fetches)
    assert sum(f.customer_keys_total or 0 for f in fetches) == 300


def test_binary_results_hash_keys_like_text_results_even_aliased_once_learned(proxy: RunningProxy,
                                                                              bank: str) -> None:
    async def read() -> tuple[list[int], list[int]]:
        conn = await asyncpg.connect(proxy.url(bank))
        try:
            plain = await conn.fetch("SELECT customer_id FROM customers WHERE customer_id = $1", 5)
            stmt = await conn.prepare("SELECT customer_id AS who FROM customers WHERE customer_id = ANY($1::bigint[])")
            return [r[0] for r in plain], [r[0] for r in await stmt.fetch([7, 8, 9])]
        finally:
            await conn.close()

    # The first read teaches the proxy which table OID is public.customers; the alias cannot hide it after.
    assert asyncio.run(read()) == ([5], [7, 8, 9])
    events = proxy.wait_queries(lambda es: any("ANY($1" in e.payload.statement for e in es), dbname(bank))
    assert one(events, "customer_id = $1").payload.customer_keys == [key_hash("5")]
    p = one(events, "ANY($1").payload
    assert sorted(p.customer_keys) == sorted(key_hash(str(i)) for i in (7, 8, 9)) and p.rows == 3


def test_simple_query_with_several_statements_gives_one_event_each(proxy: RunningProxy, bank: str) -> None:
    script = ("SELECT full_name FROM customers WHERE customer_id = 11; UPDATE orders SET amount = amount + 1 "
              "WHERE customer_id = 2; SELECT 'x' /*custos_user='alice',route='%2Floans%2F42'*/")
    subprocess.run(["psql", "-X", "-q", proxy.url(bank), "-c", script], check=True, capture_output=True, timeout=60)
    events = proxy.wait_queries(lambda es: len(es) >= 3, dbname(bank))
    assert [e.payload.statement_type for e in events] == ["SELECT", "UPDATE", "SELECT"]
    assert [e.payload.rows for e in events] == [1, 3, 1]
    assert events[1].payload.tables_written == ["public.orders"]
    assert [e.actor.end_user for e in events] == ["alice"] * 3
