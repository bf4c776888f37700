"""pgAudit line handling: prefixes, multi-line records, log_rows, cursors, errors, grouping and its state."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.spool import Spool
from agent.tailers.pgaudit_stderr import RECOMMENDED_PREFIX, compile_prefix
from tests.agent.tailers.helpers import Clock, make_source, of_kind, poll_until_idle, read_all, spooled

P = RECOMMENDED_PREFIX  # '%m [%p] %c %q%u@%d %r %a '
S = "2026-11-27 03:22:47.{ms:03d} UTC [22918] 6b08f787.5986 alice@bank 10.1.2.3(48106) {app} LOG:  "


def line(msg: str, ms: int = 0, app: str = "psql") -> str:
    return S.format(ms=ms, app=app) + msg + "\n"


def write(tmp_path: Path, *lines: str, name: str = "pg.log") -> Path:
    path = tmp_path / name
    path.write_text("".join(lines))
    return path


def test_the_recommended_prefix_reads_every_field_even_an_application_name_with_spaces(tmp_path: Path) -> None:
    log = write(tmp_path, line("AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,SELECT * FROM t,<none>", 5,
                               app="loan desk v2"))
    [q] = of_kind(read_all("pgaudit", log, tmp_path, log_line_prefix=P), "db.query")
    assert q.payload.session_id == "6b08f787.5986"
    assert q.actor.db_user == "alice" and q.payload.database == "bank"
    assert (q.payload.client_addr, q.payload.client_port) == ("10.1.2.3", 48106)
    assert q.payload.application_name == "loan desk v2"
    assert not {"application_name", "client_addr", "client_port"} & set(q.payload.unknown)


def test_prefix_escapes_padding_and_q_for_processes_without_a_session() -> None:
    rx = compile_prefix("%t %-8p|%l %% %q%u %d %h ")
    m = rx.match("2026-11-27 03:22:47 UTC 22918   |7 % bob shop 10.0.0.9 LOG:  AUDIT: x")
    assert m is not None
    assert (m["t"], m["p"], m["l"], m["u"], m["d"], m["h"], m["message"]) == (
        "2026-11-27 03:22:47 UTC", "22918", "7", "bob", "shop", "10.0.0.9", "AUDIT: x")
    checkpointer = rx.match("2026-11-27 03:22:47 UTC 22814   |2 % LOG:  checkpoint starting: time")
    assert checkpointer is not None and checkpointer["u"] is None
    with pytest.raises(ConfigError, match="%m, %t or %n"):
        compile_prefix("[%p] ")


def test_a_statement_with_newlines_is_read_from_its_tab_continuation_lines(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        line('AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,"SELECT a,\n\tb FROM t\n\tWHERE c = \'x, ""y""\n\tz\'",'
             "<none>"),
        # a message of the server's own with continuation lines is skipped without complaint
        line("ERROR:  syntax error", 1).replace("LOG:  ERROR:  ", "ERROR:  ") + "\tmore detail\n",
        line("AUDIT: SESSION,2,1,READ,SELECT,TABLE,public.u,SELECT 1 FROM u,<none>", 2),
    )
    events = read_all("pgaudit", log, tmp_path, log_line_prefix=P)
    assert of_kind(events, "agent.parse_error") == []
    [first, second] = of_kind(events, "db.query")
    assert first.payload.statement == "SELECT a, b FROM t WHERE c = ?"  # whitespace normalised, as the proxy does
    assert second.payload.tables_read == ["public.u"]


def test_an_unreadable_line_is_a_parse_error_with_its_position_never_its_content(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        line("AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,SELECT 1 FROM t,<none>"),
        "garbage with a secret 4111111111111111\n",
        line("AUDIT: SESSION,2,1,READ,SELECT,TABLE,SELECT 'only-seven'", 3),
        line("AUDIT: SESSION,3,1,READ,SELECT,TABLE,public.t,SELECT 2 FROM t,<none>", 4),
    )
    with Spool(tmp_path / "spool.sqlite3") as spool:
        source = make_source("pgaudit", log, spool, log_line_prefix=P, group_wait="0s")
        poll_until_idle(source)
        source.poll_once()
        events = spooled(spool)
        assert source.counters() == {"errors": {"parse_error": 2}}
    errors = of_kind(events, "agent.parse_error")
    lines = log.read_bytes().splitlines(keepends=True)
    assert [(e.payload.line, e.payload.offset) for e in errors] == [(2, len(lines[0])),
                                                                    (3, len(lines[0]) + len(lines[1]))]
    assert {e.payload.location for e in errors} == {str(log)}
    assert [q.payload.tables_read for q in of_kind(events, "db.query")] == [["public.t"], ["public.t"]]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("spool.sqlite3*"))
    assert b"4111111111111111" not in stored and b"only-seven" not in stored and b"garbage" not in stored


def test_log_rows_counts_foreign_key_checks_logged_before_their_insert(tmp_path: Path) -> None:
    # pgaudit.log_rows: lines are written when each statement ends, so the checks come first.
    fk = '"SELECT 1 FROM ONLY ""public"".""customers"" x WHERE ""id"" OPERATOR(pg_catalog.=) $1 FOR KEY SHARE OF x"'
    log = write(
        tmp_path,
        line(f"AUDIT: SESSION,5,1,READ,SELECT,TABLE,public.customers,{fk},2,1", 1),
        line(f"AUDIT: SESSION,5,2,READ,SELECT,TABLE,public.customers,{fk},3,1", 2),
        line(f"AUDIT: SESSION,5,3,READ,SELECT,TABLE,public.customers,{fk},4,1", 3),
        line("AUDIT: SESSION,5,4,WRITE,INSERT,TABLE,public.orders,\"INSERT INTO orders (c, a) SELECT g, 1 FROM "
             "generate_series(2,4) g;\",<none>,3", 4),
        line("AUDIT: SESSION,6,1,READ,SELECT,TABLE,public.orders,SELECT * FROM orders;,<none>,3", 5),
    )
    queries = of_kind(read_all("pgaudit", log, tmp_path, log_line_prefix=P), "db.query")
    [check] = [q for q in queries if q.payload.system]
    assert (check.payload.rows, check.payload.tables_read) == (3, ["public.customers"])
    [insert] = [q for q in queries if q.payload.statement_type == "INSERT"]
    assert (insert.payload.rows, insert.payload.system, insert.payload.tables_written) == (3, False, ["public.orders"])
    assert insert.payload.started_at is None and "started_at" in insert.payload.unknown
    assert "rows" not in insert.payload.unknown
    assert len(queries) == 3


def test_a_cursor_declared_with_zero_rows_leaves_its_rows_unknown(tmp_path: Path) -> None:
    log = write(tmp_path, line("AUDIT: SESSION,7,1,READ,DECLARE CURSOR,,,DECLARE cur CURSOR FOR SELECT * FROM "
                               "customers;,<none>,0"))
    [q] = of_kind(read_all("pgaudit", log, tmp_path, log_line_prefix=P), "db.query")
    assert q.payload.rows is None and "rows" in q.payload.unknown
    assert q.payload.cursor == "cur"


def test_statement_logged_once_reuses_the_text_of_the_first_line(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        line("AUDIT: SESSION,4,1,READ,SELECT,TABLE,public.a,SELECT * FROM a JOIN b USING (id) WHERE x = 5,<none>"),
        line("AUDIT: SESSION,4,1,READ,SELECT,TABLE,public.b,<previously logged>,<previously logged>"),
    )
    [q] = of_kind(read_all("pgaudit", log, tmp_path, log_line_prefix=P), "db.query")
    assert q.payload.tables_read == ["public.a", "public.b"]
    assert q.payload.statement == "SELECT * FROM a JOIN b USING (id) WHERE x = ?"


def test_the_last_statement_of_a_quiet_session_waits_for_group_wait_even_across_a_restart(tmp_path: Path) -> None:
    log = write(tmp_path, line("AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,\"SELECT ssn FROM t WHERE name = "
                               "'Mallory, Eve'\",<none>"))
    clock = Clock()
    with Spool(tmp_path / "spool.sqlite3") as spool:
        source = make_source("pgaudit", log, spool, log_line_prefix=P, group_wait="2s", clock=clock)
        assert source.poll_once() == 1
        assert spooled(spool) == []  # more relation lines of the statement could still come
        state = spool.cursor("tailer:t")
        assert state is not None and "SELECT ssn FROM t WHERE name = ?" in state and "Mallory" not in state
        source.follower.close()
        # a restart: the open group comes back from the committed cursor, the line is not read again
        again = make_source("pgaudit", log, spool, log_line_prefix=P, group_wait="2s", clock=clock)
        clock.now += 1.0
        assert again.poll_once() == 0 and spooled(spool) == []
        clock.now += 1.5
        again.poll_once()
        [q] = of_kind(spooled(spool), "db.query")
        assert q.payload.tables_read == ["public.t"]
        again.poll_once()
        assert len(spooled(spool)) == 1
        again.follower.close()


def test_connection_lines_become_sessions_and_a_disconnection_completes_the_last_statement(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        line("connection authorized: user=alice database=bank application_name=loan desk", 1),
        line("AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,SELECT * FROM t,<none>", 2),
        line("disconnection: session time: 0:00:00.137 user=alice database=bank host=10.1.2.3 port=48106", 3),
    )
    clock = Clock()
    with Spool(tmp_path / "spool.sqlite3") as spool:
        source = make_source("pgaudit", log, spool, log_line_prefix=P, group_wait="1h", clock=clock)
        poll_until_idle(source)
        events = spooled(spool)
        source.follower.close()
    kinds = [e.__struct_config__.tag for e in events]  # type: ignore[attr-defined]
    assert kinds == ["db.session", "db.query", "db.session"]
    start, end = events[0].payload, events[2].payload
    assert (start.phase, start.database, start.application_name, start.tls) == ("start", "bank", "loan desk", False)
    assert (end.phase, end.client_addr, end.client_port) == ("end", "10.1.2.3", 48106)
    assert events[0].actor.db_user == "alice"


def test_times_in_a_zone_abbreviation_need_the_configured_timezone(tmp_path: Path) -> None:
    text = "2026-07-01 12:00:00.250 CEST [1] LOG:  AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,SELECT 1,<none>\n"
    log = write(tmp_path, text)
    (tmp_path / "a").mkdir()
    [q] = of_kind(read_all("pgaudit", log, tmp_path / "a", log_line_prefix="%m [%p] ", timezone="Europe/Berlin"),
                  "db.query")
    assert q.ts == dt.datetime(2026, 7, 1, 10, 0, 0, 250000, tzinfo=dt.timezone.utc)
    (tmp_path / "b").mkdir()
    [err] = of_kind(read_all("pgaudit", log, tmp_path / "b", log_line_prefix="%m [%p] "), "agent.parse_error")
    assert "timezone" in err.payload.reason


def test_bind_parameters_never_reach_the_spool(tmp_path: Path) -> None:
    log = write(tmp_path, line('AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.customers,SELECT name FROM customers '
                               'WHERE id = $1 AND name <> $2,"3,param-secret-77",1'))
    [q] = of_kind(read_all("pgaudit", log, tmp_path, log_line_prefix=P), "db.query")
    assert q.payload.statement == "SELECT name FROM customers WHERE id = $1 AND name <> $2"
    assert q.payload.rows == 1
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("spool.sqlite3*"))
    assert b"param-secret-77" not in stored


def test_a_record_cut_by_the_end_of_a_rotated_file_is_reported(tmp_path: Path) -> None:
    log = write(tmp_path, line('AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,"SELECT 1,'))
    with Spool(tmp_path / "spool.sqlite3") as spool:
        source = make_source("pgaudit", log, spool, log_line_prefix=P, group_wait="0s")
        poll_until_idle(source)
        assert spooled(spool) == []  # the record's end may still come
        log.rename(tmp_path / "pg.log.1")
        write(tmp_path, line("AUDIT: SESSION,2,1,READ,SELECT,TABLE,public.u,SELECT 2 FROM u,<none>"))
        poll_until_idle(source)
        source.poll_once()
        events = spooled(spool)
        source.follower.close()
    [err] = of_kind(events, "agent.parse_error")
    assert err.payload.reason == "the file ended inside an AUDIT message"
    assert (err.payload.location, err.payload.line) == (str(tmp_path / "pg.log.1"), 1)
    assert [q.payload.tables_read for q in of_kind(events, "db.query")] == [["public.u"]]


@pytest.mark.parametrize("fmt", ["stderr", "csvlog"])
def test_a_record_longer_than_max_record_bytes_is_reported_and_the_next_one_read(tmp_path: Path, fmt: str) -> None:
    big = "\n".join(f"OR name = 'value-{i}'" for i in range(200))  # about 5 KB over many lines
    audit = f'AUDIT: SESSION,1,1,READ,SELECT,TABLE,public.t,"SELECT 1 FROM t WHERE false\n{big}",<none>'
    after = "AUDIT: SESSION,2,1,READ,SELECT,TABLE,public.u,SELECT 2 FROM u,<none>"
    if fmt == "stderr":
        text = line(audit.replace("\n", "\n\t")) + line(after, 1)
    else:
        def row(msg: str, ms: int) -> str:
            quoted = '"' + msg.replace('"', '""') + '"'
            return (f'2026-11-27 03:22:47.{ms:03d} UTC,"alice","bank",22918,"10.1.2.3:48106",6b08f787.5986,1,'
                    f'"SELECT",2026-11-27 03:22:40 UTC,3/1,0,LOG,00000,{quoted},,,,,,,,,"psql","client backend",,0\n')
        text = row(audit, 0) + row(after, 1)
    log = write(tmp_path, text)
    events = read_all("pgaudit", log, tmp_path, format=fmt, log_line_prefix=P, max_record_bytes="1KiB")
    [err] = of_kind(events, "agent.parse_error")
    assert "max_record_bytes" in err.payload.reason and err.payload.line == 1
    assert [q.payload.tables_read for q in of_kind(events, "db.query")] == [["public.u"]]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("spool.sqlite3*"))
    assert b"value-1" not in stored
