"""Against a real PostgreSQL with pgAudit: known statements in, the tailer's events out, from both log formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.spool import Spool
from agent.tailers.pgaudit_stderr import RECOMMENDED_PREFIX
from agent.tailers.source import TailerSource
from tests.agent.tailers.helpers import make_source, of_kind, spooled
from tests.agent.tailers.pgcluster import PgCluster
from tests.helpers.procs import wait_for

pytestmark = pytest.mark.postgres
PLANTED = [b"planted-literal-1", b"planted-param-2", b"planted-literal-3", b"ssn-secret-", b"renamed-9"]


def run_known_statements(cluster: PgCluster) -> None:
    with psycopg.connect(cluster.dsn(application_name="teller app"), autocommit=True) as c:
        c.execute("CREATE TABLE rc_customers (id int PRIMARY KEY, name text, ssn text)")
        c.execute("CREATE TABLE rc_orders (id serial PRIMARY KEY, customer_id int REFERENCES rc_customers(id), "
                  "amount int)")
        c.execute("INSERT INTO rc_customers SELECT g, 'name-'||g, 'ssn-secret-'||g FROM generate_series(1, 50) g")
        c.execute("INSERT INTO rc_orders (customer_id, amount) SELECT (g % 50) + 1, g FROM generate_series(1, 30) g")
        c.execute("SELECT c.name, o.amount FROM rc_customers c JOIN rc_orders o ON o.customer_id = c.id "
                  "WHERE c.ssn <> 'planted-literal-1'")
        c.execute("SELECT name FROM rc_customers WHERE id = %s AND name <> %s", (7, "planted-param-2"))
        with c.transaction():
            c.execute("DECLARE rc_cur CURSOR FOR SELECT * FROM rc_customers")
            c.execute("FETCH 10 FROM rc_cur")
            c.execute("CLOSE rc_cur")
        c.execute("SELECT 'multi\nline planted-literal-3', name FROM rc_customers WHERE id = 1")
        with c.cursor().copy("COPY (SELECT * FROM rc_customers) TO STDOUT") as copy:
            assert sum(1 for _ in copy.rows()) == 50
        c.execute("SET pgaudit.log_rows = on")
        c.execute("SELECT * FROM rc_customers WHERE id <= 12").fetchall()
        c.execute("UPDATE rc_customers SET name = 'renamed-9' WHERE id <= 3")


def collect(source: TailerSource, spool: Spool) -> list[Any]:
    """Poll until the test session's end is spooled (its disconnection completes its last statement)."""

    def ended() -> bool:
        source.poll_once()
        return any(s.payload.phase == "end" and s.payload.application_name == "teller app"
                   for s in of_kind(spooled(spool), "db.session"))

    wait_for(ended, 30, "the session's disconnection in the log")
    return spooled(spool)


def check_events(events: list[Any]) -> None:
    assert of_kind(events, "agent.parse_error") == []
    sessions = [s for s in of_kind(events, "db.session") if s.payload.application_name == "teller app"]
    assert [s.payload.phase for s in sessions] == ["start", "end"]
    sid = sessions[0].payload.session_id
    queries = [q for q in of_kind(events, "db.query") if q.payload.session_id == sid]
    for q in queries:
        assert q.actor.db_user == "postgres" and q.payload.database == "postgres"
        assert q.payload.application_name == "teller app" and q.payload.client_addr == "127.0.0.1"
        assert q.payload.client_port == sessions[0].payload.client_port

    def one(fragment: str) -> Any:
        found = [q for q in queries if fragment in q.payload.statement]
        assert len(found) == 1, (fragment, [q.payload.statement for q in found])
        return found[0].payload

    assert one("CREATE TABLE rc_customers").statement_type == "DDL"  # as the proxy names it
    assert one("INSERT INTO rc_customers").tables_written == ["public.rc_customers"]
    insert = one("INSERT INTO rc_orders")
    assert (insert.tables_written, insert.tables_read, insert.system) == (["public.rc_orders"], [], False)
    [checks] = [q.payload for q in queries if q.payload.system]  # 30 READ lines, one per inserted order
    assert checks.tables_read == ["public.rc_customers"]
    join = one("JOIN rc_orders")
    assert join.tables_read == ["public.rc_customers", "public.rc_orders"]
    assert join.statement.endswith("WHERE c.ssn <> ?")
    assert one("WHERE id = $1 AND name <> $2").tables_read == ["public.rc_customers"]
    cursor = one("DECLARE rc_cur CURSOR")
    assert (cursor.cursor, cursor.rows) == ("rc_cur", None) and "rows" in cursor.unknown
    assert one("SELECT ?, name FROM rc_customers").statement == "SELECT ?, name FROM rc_customers WHERE id = ?"
    assert one("COPY (SELECT * FROM rc_customers)").tables_read == ["public.rc_customers"]
    rows = one("SELECT * FROM rc_customers WHERE id <= ?")
    assert rows.rows == 12 and "rows" not in rows.unknown
    update = one("UPDATE rc_customers")
    assert (update.rows, update.tables_written) == (3, ["public.rc_customers"])
    assert len(queries) == 12


def test_the_tailer_reads_real_pgaudit_logs_in_both_formats(pg_cluster: PgCluster, tmp_path: Path) -> None:
    run_known_statements(pg_cluster)
    shapes = []
    for fmt, path in (("stderr", pg_cluster.stderr_log), ("csvlog", pg_cluster.csv_log)):
        (tmp_path / fmt).mkdir()
        with Spool(tmp_path / fmt / "spool.sqlite3") as spool:
            source = make_source("pgaudit", path, spool, format=fmt, log_line_prefix=RECOMMENDED_PREFIX,
                                 group_wait="30s")
            events = collect(source, spool)
            source.follower.close()
        check_events(events)
        stored = b"".join(p.read_bytes() for p in (tmp_path / fmt).glob("spool.sqlite3*"))
        assert b"planted-param-2" in path.read_bytes()  # the server logged it: the tailer must not pass it on
        for value in PLANTED:
            assert value not in stored, (fmt, value)
        shapes.append(sorted(
            (q.payload.fingerprint, tuple(q.payload.tables_read), q.payload.rows, q.payload.system)
            for q in of_kind(events, "db.query")
        ))
    assert shapes[0] == shapes[1]
