"""MariaDB server_audit lines: the real sample, TABLE→QUERY joins, escapes, truncation, hosts, times, errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from agent.spool import Spool
from agent.tailers.mariadb import split_host, unescape
from tests.agent.tailers.helpers import DATA, Clock, make_source, of_kind, poll_until_idle, read_all, spooled


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "server_audit.log"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_the_real_sample_gives_sessions_and_one_query_event_per_statement(tmp_path: Path) -> None:
    events = read_all("mariadb_audit", DATA / "mariadb_audit.log", tmp_path, timezone="UTC")
    assert of_kind(events, "agent.parse_error") == []
    queries = of_kind(events, "db.query")
    sessions = of_kind(events, "db.session")
    assert len(queries) == 14 and len(sessions) == 22
    [join] = [q for q in queries if "JOIN orders" in q.payload.statement]
    assert join.payload.tables_read == ["shop.customers", "shop.orders"]
    assert join.payload.session_id == "7" and join.actor.db_user == "alice"
    [update] = [q for q in queries if q.payload.statement_type == "UPDATE"]
    assert update.payload.tables_written == ["shop.customers"]
    assert update.payload.statement == "UPDATE customers SET balance=balance+? WHERE id=?"
    [failed] = [q for q in queries if "nosuch" in q.payload.statement]
    # The server logged no TABLE row (the table does not exist); the statement still names what was attempted.
    assert failed.payload.error_code == "1146" and failed.payload.tables_read == ["shop.nosuch"]
    [refused] = [s for s in sessions if s.payload.error_code]
    assert (refused.payload.phase, refused.payload.error_code) == ("start", "1045")
    for q in queries:
        assert {"rows", "duration_ms", "bytes", "customer_keys", "client_port"} <= set(q.payload.unknown)
        assert q.payload.rows is None
    assert join.ts == dt.datetime(2026, 11, 27, 1, 54, 29, tzinfo=dt.timezone.utc)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("spool.sqlite3*"))
    for value in (b"cust1", b"quoted", b"multi", b"example.com", b"/tmp/research"):
        assert value in (DATA / "mariadb_audit.log").read_bytes()
        assert value not in stored


def test_table_lines_join_their_query_even_when_other_connections_interleave(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        "20261127 01:54:29,vm,alice,10.0.0.5,7,21,READ,shop,customers,",
        "20261127 01:54:29,vm,bob,10.0.0.6,8,22,WRITE,shop,orders,",
        "20261127 01:54:29,vm,alice,10.0.0.5,7,21,READ,crm,notes,",
        "20261127 01:54:29,vm,bob,10.0.0.6,8,22,QUERY,shop,'DELETE FROM orders WHERE id=3',0",
        "20261127 01:54:29,vm,alice,10.0.0.5,7,21,QUERY,shop,'SELECT * FROM customers JOIN crm.notes USING (id)',0",
    )
    queries = of_kind(read_all("mariadb_audit", log, tmp_path), "db.query")
    assert [(q.actor.db_user, q.payload.tables_read, q.payload.tables_written) for q in queries] == [
        ("bob", [], ["shop.orders"]),
        ("alice", ["shop.customers", "crm.notes"], []),
    ]


def test_query_text_is_unescaped_before_redaction_and_a_cut_text_is_marked(tmp_path: Path) -> None:
    assert unescape(r"SELECT \'a\\b\', \'x\ny\'") == "SELECT 'a\\b', 'x\ny'"
    log = write(
        tmp_path,
        r"20261127 01:54:29,vm,alice,localhost,7,23,QUERY,shop,'SELECT \'it\\\'s, ok\', 5 FROM t',0",
        "20261127 01:54:29,vm,alice,localhost,7,24,QUERY,shop,"
        "'SELECT name FROM customers WHERE ssn IN (\\'123-45-67',0",
    )
    first, cut = of_kind(read_all("mariadb_audit", log, tmp_path, query_log_limit=46), "db.query")
    assert first.payload.statement == "SELECT ?, ? FROM t"
    assert "statement" not in first.payload.unknown
    assert cut.payload.statement == "SELECT name FROM customers WHERE ssn IN (?"
    assert "statement" in cut.payload.unknown
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("spool.sqlite3*"))
    assert b"123-45" not in stored and b"it\\'s" not in stored


def test_hosts_with_ports_from_mariadb_12_and_ipv6() -> None:
    assert split_host("127.0.0.1:53692") == ("127.0.0.1", 53692)
    assert split_host("localhost") == ("localhost", None)
    assert split_host("::1") == ("::1", None)
    assert split_host("[fe80::1]:3306") == ("fe80::1", 3306)
    assert split_host("") == (None, None)


def test_mariadb_12_ports_and_connection_type_fields_are_read(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        "20261127 01:54:29,db1,alice,10.0.0.5:41000,9,0,CONNECT,shop,,0,TCP/IP",
        "20261127 01:54:29,db1,alice,10.0.0.5:41000,9,5,QUERY,shop,'SELECT 1',0",
        "20261127 01:54:30,db1,alice,10.0.0.5:41000,9,0,DISCONNECT,shop,,0,TCP/IP",
    )
    events = read_all("mariadb_audit", log, tmp_path)
    assert [e.payload.client_port for e in events] == [41000, 41000, 41000]
    assert "client_port" not in events[1].payload.unknown
    assert [getattr(e.payload, "phase", None) for e in events] == ["start", None, "end"]


def test_server_local_times_are_read_in_the_configured_zone(tmp_path: Path) -> None:
    log = write(tmp_path, "20260701 12:00:05,vm,alice,h,7,21,QUERY,shop,'SELECT 1',0")
    [q] = of_kind(read_all("mariadb_audit", log, tmp_path, timezone="Europe/Berlin"), "db.query")
    assert q.ts == dt.datetime(2026, 7, 1, 10, 0, 5, tzinfo=dt.timezone.utc)


def test_table_lines_without_their_query_give_an_event_whose_statement_is_unknown(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        "20261127 01:54:29,vm,alice,h,7,21,READ,shop,customers,",
        "20261127 01:54:29,vm,alice,h,7,25,QUERY,shop,'SELECT 2',0",  # the connection went on: 21 had no QUERY
        "20261127 01:54:29,vm,alice,h,8,30,WRITE,shop,orders,",  # the last one waits for group_wait
    )
    clock = Clock()
    with Spool(tmp_path / "spool.sqlite3") as spool:
        source = make_source("mariadb_audit", log, spool, group_wait="5s", clock=clock)
        poll_until_idle(source)
        first = of_kind(spooled(spool), "db.query")
        clock.now += 5
        source.poll_once()
        events = of_kind(spooled(spool), "db.query")
        source.follower.close()
    assert [(q.payload.statement, q.payload.tables_read) for q in first] == [("", ["shop.customers"]), ("SELECT ?", [])]
    assert {"statement", "fingerprint", "statement_type"} <= set(first[0].payload.unknown)
    assert events[2].payload.tables_written == ["shop.orders"]


def test_unreadable_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        "this is not an audit line",
        "20261127 01:54:29,vm,alice,h,7,21,QUERY,shop,'SELECT 1 unterminated,0",
        "20261127 01:54:29,vm,alice,h,7,22,QUERY,shop,'SELECT 3',0",
    )
    events = read_all("mariadb_audit", log, tmp_path)
    assert [e.payload.line for e in of_kind(events, "agent.parse_error")] == [1, 2]
    assert [q.payload.statement for q in of_kind(events, "db.query")] == ["SELECT ?"]
