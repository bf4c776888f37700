"""The pgAudit tailer on real pgAudit 1.7 / PostgreSQL 15 logs captured on this platform (data/README.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from agent.events import DbQuery
from tests.agent.tailers.helpers import DATA, of_kind, read_all

# Values that appear in the sample logs only inside literals or bind parameters.
PLANTED = [b"cust1", b"quoted", b"multi", b"example.com", b"> 5000", b"auditor", b"'alice'", b"BETWEEN 100"]


def by_statement(events: list[DbQuery], fragment: str) -> list[DbQuery]:
    return [e for e in events if fragment in e.payload.statement]


def spool_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("spool.sqlite3*"))


def test_stderr_sample_gives_one_event_per_statement(tmp_path: Path) -> None:
    events = read_all("pgaudit", DATA / "pgaudit.log", tmp_path)
    queries = of_kind(events, "db.query")
    assert of_kind(events, "agent.parse_error") == []
    assert len(queries) == 16
    # OBJECT and SESSION lines of one statement: one event.
    assert len(by_statement(queries, "SELECT count(*) FROM customers")) == 1
    # log_relation: the join is logged once per relation, and comes back as one event with both.
    [join] = by_statement(queries, "JOIN orders")
    assert join.payload.tables_read == ["public.customers", "public.orders"]
    assert join.payload.tables_written == []
    # COPY (SELECT …) TO is logged as a SELECT substatement and a COPY substatement: one statement.
    [copy] = by_statement(queries, "COPY (SELECT")
    assert copy.payload.tables_read == ["public.customers"]
    assert copy.payload.statement_type == "COPY"


def test_foreign_key_checks_become_one_system_event_apart_from_the_insert(tmp_path: Path) -> None:
    queries = of_kind(read_all("pgaudit", DATA / "pgaudit.log", tmp_path), "db.query")
    checks = [e for e in queries if e.payload.system]
    assert len(checks) == 1  # three READ lines on customers, one per inserted order
    assert checks[0].payload.tables_read == ["public.customers"]
    assert checks[0].payload.session_id == "7357"
    [insert] = by_statement(queries, "INSERT INTO orders")
    assert insert.payload.system is False
    assert insert.payload.tables_written == ["public.orders"]
    assert insert.payload.tables_read == []  # the checks' reads are not the person's
    # Nine statements read customers, and the PREPARE that declares one of them names it too.
    assert sum(1 for e in queries if not e.payload.system and "public.customers" in e.payload.tables_read) == 10


def test_stderr_sample_events_carry_the_prefix_fields_and_name_what_the_log_lacks(tmp_path: Path) -> None:
    queries = of_kind(read_all("pgaudit", DATA / "pgaudit.log", tmp_path), "db.query")
    [alice] = by_statement(queries, "SELECT email FROM customers WHERE id BETWEEN")
    assert alice.actor.db_user == "alice"
    assert alice.payload.database == "postgres"
    assert (alice.payload.client_addr, alice.payload.client_port) == ("127.0.0.1", 53718)
    assert alice.payload.session_id == "7362"  # no %c in this prefix: the pid
    assert alice.ts == dt.datetime(2026, 11, 27, 1, 52, 37, 785000, tzinfo=dt.timezone.utc)
    assert alice.payload.started_at == alice.ts
    assert alice.payload.rows is None
    assert alice.payload.application_name is None
    assert set(alice.payload.unknown) >= {"rows", "application_name", "duration_ms", "bytes", "customer_keys",
                                          "error_code"}
    assert alice.source.type == "pgaudit" and alice.source.name == "t"


def test_a_statement_spanning_lines_is_one_event_with_its_literals_redacted(tmp_path: Path) -> None:
    queries = of_kind(read_all("pgaudit", DATA / "pgaudit.log", tmp_path), "db.query")
    [multi] = by_statement(queries, "email FROM customers WHERE name =")
    assert multi.payload.statement == "SELECT ?, email FROM customers WHERE name = ?"


def test_no_literal_or_parameter_value_reaches_the_spool(tmp_path: Path) -> None:
    for name in ("pgaudit.log", "pgaudit.csv"):
        sub = tmp_path / name
        sub.mkdir()
        events = read_all("pgaudit", DATA / name, sub, format="csvlog" if name.endswith("csv") else "stderr")
        assert of_kind(events, "db.query")
        stored = spool_bytes(sub)
        assert stored  # the spool file was written
        present = [v for v in PLANTED if v in (DATA / name).read_bytes()]
        assert len(present) >= 6  # values the test would see leak
        for value in present:
            assert value not in stored, (name, value)


def test_csvlog_sample_gives_the_same_statements_with_session_ids_and_application_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    csv_events = of_kind(read_all("pgaudit", DATA / "pgaudit.csv", tmp_path / "a", format="csvlog"), "db.query")
    log_events = of_kind(read_all("pgaudit", DATA / "pgaudit.log", tmp_path / "b"), "db.query")

    def shape(e: DbQuery) -> tuple[object, ...]:
        p = e.payload
        return (p.fingerprint, tuple(p.tables_read), tuple(p.tables_written), p.system, e.ts)

    assert {shape(e) for e in log_events} <= {shape(e) for e in csv_events}
    assert len(csv_events) == 18  # the csvlog also holds the DO block's two statements
    [join] = by_statement(csv_events, "JOIN orders")
    assert join.payload.session_id == "6b08e265.1cc0"
    assert join.payload.application_name == "psql"
    assert "application_name" not in join.payload.unknown
    # A PL/pgSQL expression reading a view logs the view and the tables under it: one event.
    roles = by_statement(csv_events, "NOT EXISTS (SELECT FROM pg_roles")
    assert [e.payload.tables_read for e in roles] == [
        ["pg_catalog.pg_roles", "pg_catalog.pg_authid", "pg_catalog.pg_db_role_setting"]
    ] * 2
    [multi] = by_statement(csv_events, "email FROM customers WHERE name =")
    assert multi.payload.statement == "SELECT ?, email FROM customers WHERE name = ?"
