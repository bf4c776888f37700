"""Against the running MariaDB with server_audit logging to a file: known statements in, events out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pymysql
import pytest

from agent.spool import Spool
from tests.agent.tailers.helpers import make_source, of_kind, spooled
from tests.agent.tailers.mariadb_audit import admin, audited_user, connect, writable_dir
from tests.helpers.procs import wait_for

pytestmark = pytest.mark.mariadb
LONG_COLUMNS = ", ".join(f"c{i}" for i in range(120))


def run_known_statements(user: str, database: str) -> None:
    with admin() as root:
        cur = root.cursor()
        cur.execute(f"CREATE TABLE {database}.customers (id INT PRIMARY KEY, name TEXT, ssn TEXT)")
        cur.execute(f"CREATE TABLE {database}.orders (id INT PRIMARY KEY, customer_id INT, amount INT)")
        cur.execute(f"CREATE TABLE {database}.wide ({', '.join(f'c{i} INT' for i in range(120))})")
    with connect(user, database=database) as c:
        cur = c.cursor()
        cur.execute("INSERT INTO customers VALUES (1, 'Ann', 'ssn-planted-1'), (2, 'Bob', 'ssn-planted-2')")
        cur.execute("SELECT * FROM customers WHERE ssn = %s", ("ssn-planted-1",))
        cur.execute("SELECT c.name, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id")
        cur.execute("UPDATE customers SET name = 'it''s \"planted-3\"\nsecond line' WHERE id = 2")
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM nosuch WHERE x = 'planted-4'")
        cur.execute(f"SELECT {LONG_COLUMNS} FROM wide WHERE c0 = 'planted-5-cut-or-not'")
    with pytest.raises(pymysql.err.OperationalError):
        connect(user, password="wrong-password-planted-6", database=database)


def test_the_tailer_reads_the_real_server_audit_log(tmp_path: Path) -> None:
    log = writable_dir(tmp_path / "audit") / "server_audit.log"
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with audited_user(log, query_log_limit=400) as (user, database):
        run_known_statements(user, database)
        with Spool(tmp_path / "spool.sqlite3") as spool:
            source = make_source("mariadb_audit", log, spool, timezone=_local_zone(), query_log_limit=400,
                                 group_wait="30s")

            def done() -> bool:
                source.poll_once()
                return len([s for s in of_kind(spooled(spool), "db.session") if s.payload.phase == "end"]) >= 2

            wait_for(done, 30, "both disconnections in the audit log")
            events = spooled(spool)
            source.follower.close()
    after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    assert of_kind(events, "agent.parse_error") == []
    events = [e for e in events if e.actor.db_user == user]  # the server logs every user's connections
    sessions = of_kind(events, "db.session")
    assert [(s.payload.phase, s.payload.error_code) for s in sessions] == [
        ("start", None), ("end", None), ("start", "1045"), ("end", None)]
    queries = of_kind(events, "db.query")
    for e in events:
        assert before <= e.ts <= after  # server-local times read in the right zone

    def one(fragment: str) -> Any:
        found = [q.payload for q in queries if fragment in q.payload.statement]
        assert len(found) == 1, (fragment, [q.payload.statement for q in queries])
        return found[0]

    assert one("INSERT INTO customers").tables_written == [f"{database}.customers"]
    select = one("SELECT * FROM customers WHERE ssn = ?")
    assert (select.tables_read, select.database, select.error_code) == ([f"{database}.customers"], database, None)
    # the optimizer's reads of mysql.*_stats while planning are the server's, not the user's
    assert one("JOIN orders").tables_read == [f"{database}.customers", f"{database}.orders"]
    assert one("INSERT INTO customers").tables_read == []
    update = one("UPDATE customers SET name = ?")
    assert update.tables_written == [f"{database}.customers"]
    failed = one("FROM nosuch")
    assert (failed.error_code, failed.tables_read) == ("1146", [f"{database}.nosuch"])  # attempted, not logged
    wide = one("SELECT c0, c1, c2,")  # longer than server_audit_query_log_limit: cut by the server
    assert "statement" in wide.unknown and "c119" not in wide.statement
    for q in queries:
        assert q.payload.rows is None and "rows" in q.payload.unknown
    assert len(queries) == 7  # with the client's own SET NAMES
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("spool.sqlite3*"))
    assert b"ssn-planted-1" in log.read_bytes()
    for value in (b"planted-1", b"planted-2", b"planted-3", b"planted-4", b"planted-5", b"planted-6"):
        assert value not in stored, value


def _local_zone() -> str:
    """The server's zone: it runs on this machine, in the machine's zone."""
    try:
        return Path("/etc/timezone").read_text().strip() or "UTC"
    except OSError:
        return "UTC"
