"""Real clients get through the proxy exactly what they get directly from PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa

from agent.events import DbQuery, decode
from agent.spool import Spool
from tests.agent.proxy.conftest import ProxyProcess, RunningProxy, dbname
from tests.helpers.procs import wait_for

pytestmark = pytest.mark.postgres

TYPES_QUERY = (
    "SELECT g AS n, g::numeric / 7 AS q, 'text ' || g AS t, decode(md5(g::text), 'hex') AS b, "
    "timestamptz '2024-01-01 00:00+00' + g * interval '1 hour' AS ts, jsonb_build_object('g', g) AS j, "
    "ARRAY[g, g + 1] AS a, CASE WHEN g % 3 = 0 THEN NULL ELSE g END AS maybe, "
    "md5(g::text)::uuid AS u FROM generate_series(1, 500) g ORDER BY g"
)


@pytest.fixture
def db(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text, price numeric, data bytea)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.5, decode(md5(g::text), 'hex') "
                     "FROM generate_series(1, 2000) g")
    return pg_url


def both(direct: str, proxied: str, fn):  # type: ignore[no-untyped-def]
    return fn(direct), fn(proxied)


def test_psql_output_is_identical_through_the_proxy(proxy: RunningProxy, db: str) -> None:
    script = ("\\pset pager off\n\\d items\nSELECT * FROM items WHERE id < 20 ORDER BY id;\n"
              "COPY (SELECT * FROM items ORDER BY id) TO STDOUT WITH (FORMAT csv);\n"
              "BEGIN; UPDATE items SET label = upper(label) WHERE id = 3; SELECT label FROM items WHERE id = 3;"
              " ROLLBACK;\nSELECT 1/0;\nSELECT 'after error';\n")

    def run(url: str) -> str:
        return subprocess.run(["psql", "-X", url], input=script, capture_output=True, text=True, timeout=60).stdout

    direct, proxied = both(db, proxy.url(db), run)
    assert "after error" in direct and proxied == direct


def test_psycopg_text_and_binary_results_equal_direct(proxy: RunningProxy, db: str) -> None:
    def fetch(url: str) -> tuple[list, list]:  # type: ignore[type-arg]
        with psycopg.connect(url) as conn:
            text = conn.execute(TYPES_QUERY).fetchall()
            with conn.cursor(binary=True) as cur:
                binary = cur.execute(TYPES_QUERY).fetchall()
        return text, binary

    direct, proxied = both(db, proxy.url(db), fetch)
    assert len(direct[0]) == 500 and proxied == direct and direct[0] == direct[1]


def test_psycopg_server_side_cursor_pipeline_and_copy_equal_direct(proxy: RunningProxy, db: str) -> None:
    def work(url: str) -> tuple:  # type: ignore[type-arg]
        with psycopg.connect(url) as conn:
            with conn.cursor(name="scroll_me") as cur:
                cur.itersize = 300
                cur.execute("SELECT * FROM items WHERE id > %s ORDER BY id", (100,))
                named = list(cur)
            with conn.pipeline():
                curs = [conn.execute("SELECT label FROM items WHERE id = %s", (i,)) for i in range(1, 51)]
                conn.execute("UPDATE items SET price = price + 1 WHERE id <= %s", (10,))
                piped = [c.fetchone() for c in curs]
            conn.rollback()
            out = bytearray()
            with conn.cursor().copy("COPY items TO STDOUT WITH (FORMAT binary)") as copy:
                for block in copy:
                    out += block
            with conn.cursor() as cur:
                cur.execute("CREATE TEMP TABLE copied (id int, label text)")
                with cur.copy("COPY copied FROM STDIN") as copy:
                    for i in range(5000):
                        copy.write_row((i, f"row {i}"))
                copied = cur.execute("SELECT count(*), sum(id) FROM copied").fetchone()
        return named, piped, bytes(out), copied

    direct, proxied = both(db, proxy.url(db), work)
    assert len(direct[0]) == 1900 and direct[3] == (5000, sum(range(5000)))
    assert proxied == direct


def test_asyncpg_binary_prepared_statements_equal_direct(proxy: RunningProxy, db: str) -> None:
    async def work(url: str) -> tuple:  # type: ignore[type-arg]
        conn = await asyncpg.connect(url)
        try:
            stmt = await conn.prepare("SELECT * FROM items WHERE id BETWEEN $1 AND $2 ORDER BY id")
            rows = [tuple(r) for r in await stmt.fetch(10, 400)]
            again = [tuple(r) for r in await stmt.fetch(1, 3)]
            types = [tuple(r) for r in await conn.fetch(TYPES_QUERY)]
            async with conn.transaction():
                await conn.executemany("INSERT INTO items VALUES ($1, $2, $3, NULL)",
                                       [(10_000 + i, f"new {i}", i) for i in range(200)])
                counted = await conn.fetchval("SELECT count(*) FROM items")
                raise_rollback = True
                if raise_rollback:
                    await conn.execute("ROLLBACK; BEGIN")
            return rows, again, types, counted
        finally:
            await conn.close()

    direct = asyncio.run(work(db))
    proxied = asyncio.run(work(proxy.url(db)))
    assert len(direct[0]) == 391 and direct[3] == 2200 and proxied == direct


def test_sqlalchemy_results_equal_direct(proxy: RunningProxy, db: str) -> None:
    def work(url: str) -> list:  # type: ignore[type-arg]
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            items = sa.Table("items", sa.MetaData(), autoload_with=engine)
            with engine.connect() as conn:
                q = sa.select(items.c.id, items.c.label, items.c.price).where(items.c.id < 300).order_by(items.c.id)
                return [tuple(r) for r in conn.execute(q)]
        finally:
            engine.dispose()

    direct, proxied = both(db, proxy.url(db), work)
    assert len(direct) == 299 and proxied == direct


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_runs_through_the_proxy_and_every_statement_is_audited(proxy: RunningProxy, pg_url: str,
                                                                         mode: str) -> None:
    name = dbname(pg_url)
    subprocess.run(["pgbench", "-i", "-q", "-s", "1", "-h", "127.0.0.1", "-U", "postgres", name],
                   check=True, capture_output=True, timeout=120)
    out = subprocess.run(["pgbench", "-n", "-c", "4", "-t", "100", "-M", mode, "-h", "127.0.0.1", "-p",
                          str(proxy.port), "-U", "postgres", name], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"number of transactions actually processed: 400/400", out.stdout)
    # The TPC-B-like script: BEGIN, 3 UPDATEs, a SELECT, an INSERT, END per transaction.
    def workload(es: list) -> list:  # type: ignore[type-arg]
        return [e for e in es
                if e.payload.statement_type != "SELECT" or "public.pgbench_accounts" in e.payload.tables_read]

    events = workload(proxy.wait_queries(lambda es: len(workload(es)) >= 2800, name, timeout=30))
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e.payload.statement_type] = kinds.get(e.payload.statement_type, 0) + 1
        assert e.payload.error_code is None
    # (pgbench's own start-up SELECTs on the catalog and pgbench_branches are left out of the count.)
    assert kinds == {"BEGIN": 400, "UPDATE": 1200, "SELECT": 400, "INSERT": 400, "END": 400}
    assert sum(e.payload.rows for e in events if e.payload.statement_type == "UPDATE") == 1200


def test_cancel_from_the_client_reaches_the_right_backend(proxy_process: ProxyProcess, db: str) -> None:
    # A separate proxy process: libpq's blocking PQcancel holds this interpreter's GIL while it waits.
    proxy = proxy_process
    with psycopg.connect(proxy.url(db)) as conn, psycopg.connect(proxy.url(db), autocommit=True) as other:
        other.execute("SELECT 1")
        errors: list[BaseException] = []
        began = time.monotonic()

        def sleep() -> None:
            try:
                conn.execute("SELECT pg_sleep(30)")
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=sleep)
        t.start()
        wait_for(lambda: other.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
        ).fetchone()[0] == 1, 10, "the sleeping query")
        conn.cancel()
        t.join(20)
        assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled)
        assert time.monotonic() - began < 20
        assert other.execute("SELECT 2").fetchone() == (2,)  # the other session was not cancelled
    proxy.stop()
    with Spool(proxy.spool_path) as spool:
        events = [decode(e.body) for e in spool.peek(100_000)]
    assert [e.payload.error_code for e in events if isinstance(e, DbQuery) and "pg_sleep" in e.payload.statement
            ] == ["57014"]


def test_pg_cancel_backend_through_the_proxy(proxy: RunningProxy, db: str) -> None:
    async def work() -> BaseException | None:
        a = await asyncpg.connect(proxy.url(db))
        b = await asyncpg.connect(proxy.url(db))
        try:
            pid = a.get_server_pid()
            task = asyncio.ensure_future(a.execute("SELECT pg_sleep(30)"))
            for _ in range(200):
                if await b.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid):
                    break
                await asyncio.sleep(0.05)
            assert await b.fetchval("SELECT pg_cancel_backend($1)", pid)
            try:
                await asyncio.wait_for(task, 20)
            except asyncpg.QueryCanceledError as e:
                return e
            return None
        finally:
            await a.close()
            await b.close()

    assert isinstance(asyncio.run(work()), asyncpg.QueryCanceledError)


def test_listen_notify_passes_through(proxy: RunningProxy, db: str) -> None:
    with psycopg.connect(proxy.url(db), autocommit=True) as listener, \
            psycopg.connect(proxy.url(db), autocommit=True) as sender:
        listener.execute("LISTEN custos_chan")
        sender.execute("NOTIFY custos_chan, 'hello'")
        got = next(listener.notifies(timeout=10))
    assert (got.channel, got.payload) == ("custos_chan", "hello")
