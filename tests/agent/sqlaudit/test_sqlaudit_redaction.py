"""Redaction: every kind of literal, comment and parameter, in both dialects."""

from __future__ import annotations

import pytest

from agent.sqlaudit import Analyser, analyse

PG = Analyser("postgres")
MY = Analyser("mysql")


@pytest.mark.parametrize(
    ("sql", "redacted"),
    [
        ("SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = ?"),
        ("SELECT 'it''s', 42, -3.5e-2, .5, 0x1F, 1_000", "SELECT ?, ?, -?, ?, ?, ?"),
        (r"SELECT E'it\'s \\ secret'", "SELECT ?"),
        ("SELECT e'a\\'b' || 'c'", "SELECT ? || ?"),
        ("SELECT $$dollar ' quoted; $$ AS d", "SELECT ? AS d"),
        ("SELECT $fn$ body $x$ inner $x$ $fn$", "SELECT ?"),
        ("SELECT B'1010', X'FF', N'nat', U&'d\\0061t'", "SELECT ?, ?, ?, ?"),
        ("SELECT '{1,2,3}'::int[], ARRAY[1, 2]", "SELECT ?::int[], ARRAY[?, ?]"),
        ("SELECT INTERVAL '1 day', DATE '2020-01-01'", "SELECT INTERVAL ?, DATE ?"),
        ("SELECT a FROM t WHERE id = $1 AND b = $2", "SELECT a FROM t WHERE id = $1 AND b = $2"),
        ("SELECT t1.c2, a$1, \"Weird 1\" FROM t1", 'SELECT t1.c2, a$1, "Weird 1" FROM t1'),
        ("SELECT 1 -- trailing comment with 'x'\n FROM t", "SELECT ? FROM t"),
        ("SELECT /* outer /* nested 'x' */ still comment */ 1", "SELECT ?"),
        ("SELECT   a,\n\t b  FROM   t ;", "SELECT a, b FROM t"),
        ("SELECT 'unterminated and secret", "SELECT ?"),
        ('SELECT "unterminated secret', "SELECT ?"),
        ("SELECT 1 /* unterminated comment 'x'", "SELECT ?"),
        ("SELECT $$ never closed", "SELECT ?"),
        ("SELECT tablE'x'", "SELECT tablE?"),
    ],
)
def test_postgres_literals_become_placeholders(sql: str, redacted: str) -> None:
    assert PG.analyse(sql).redacted == redacted


@pytest.mark.parametrize(
    ("sql", "redacted"),
    [
        (r"""SELECT 'it\'s', 'a''b', "dou\"ble" FROM t""", "SELECT ?, ?, ? FROM t"),
        ("SELECT \"double quoted is a string\", `ident` FROM t", "SELECT ?, `ident` FROM t"),
        ("SELECT 'multi\nline', email FROM customers WHERE name='cust1, \"quoted\"'",
         "SELECT ?, email FROM customers WHERE name=?"),
        ("SELECT _utf8mb4'x', N'y', x'1F', b'01', 0x1F, 0b01", "SELECT ?, ?, ?, ?, ?, ?"),
        ("SELECT name FROM customers WHERE id = ?", "SELECT name FROM customers WHERE id = ?"),
        ("SELECT 1 # hash comment 'x'\nFROM t", "SELECT ? FROM t"),
        ("SELECT 1 -- dash comment\nFROM t", "SELECT ? FROM t"),
        ("SELECT 5--1", "SELECT ?--?"),
        ("/*!40101 SET NAMES utf8 */", "SET NAMES utf8"),
        ("SELECT /*+ hint 'x' */ a FROM t", "SELECT a FROM t"),
        ("SELECT 'ends with backslash\\", "SELECT ?"),
    ],
)
def test_mysql_literals_become_placeholders(sql: str, redacted: str) -> None:
    assert MY.analyse(sql).redacted == redacted


def test_backslash_quote_ends_a_postgres_standard_string_but_not_an_e_string() -> None:
    # standard_conforming_strings: 'a\' is a complete literal, so what follows is SQL again.
    assert PG.analyse(r"SELECT 'a\' , b").redacted == "SELECT ? , b"
    assert PG.analyse(r"SELECT E'a\' , b'").redacted == "SELECT ?"


def test_sqlcommenter_tags_are_read_and_then_removed() -> None:
    sql = (
        "SELECT * FROM loans WHERE id = 42 "
        "/*custos_user='alice',route='%2Floans%2F42',traceparent='00-abc-01',framework='django%3A4.2'*/"
    )
    a = PG.analyse(sql)
    assert a.redacted == "SELECT * FROM loans WHERE id = ?"
    assert a.end_user == "alice"
    assert a.tag("route") == "/loans/42"
    assert a.tag("framework") == "django:4.2"
    assert dict(a.tags) == {"custos_user": "alice", "route": "/loans/42", "traceparent": "00-abc-01",
                            "framework": "django:4.2"}


def test_sqlcommenter_escaped_quote_and_doubled_percent_decode() -> None:
    a = PG.analyse(r"/*custos_user='o\'brien',route='%%2Fa%%20b'*/ SELECT 1")
    assert a.end_user == "o'brien"
    assert a.tag("route") == "/a b"


def test_an_ordinary_comment_gives_no_tags() -> None:
    a = PG.analyse("/* app=crm, user = 'bob' is here */ SELECT 1")
    assert a.tags == ()
    assert a.end_user is None


def test_several_statements_are_split_and_each_analysed() -> None:
    a = PG.analyse("BEGIN; UPDATE accounts SET balance = 0 WHERE id = 1; SELECT ';' FROM t; COMMIT;")
    assert a.multi
    assert a.statement_type == "MULTI"
    assert [p.statement_type for p in a.parts] == ["BEGIN", "UPDATE", "SELECT", "COMMIT"]
    assert [p.redacted for p in a.parts][1:3] == ["UPDATE accounts SET balance = ? WHERE id = ?", "SELECT ? FROM t"]
    assert a.tables_written == ("public.accounts",)
    assert a.tables_read == ("public.t",)


def test_a_trailing_semicolon_or_empty_statement_does_not_make_a_text_multi() -> None:
    a = PG.analyse("SELECT 1;;  ;")
    assert not a.multi
    assert a.redacted == "SELECT ?"


def test_an_empty_or_comment_only_text_is_empty() -> None:
    assert analyse("").statement_type == "EMPTY"
    assert analyse("  -- nothing\n /* here */ ").statement_type == "EMPTY"


def test_semicolons_inside_literals_and_dollar_quotes_do_not_split() -> None:
    a = PG.analyse("DO $$ BEGIN PERFORM 1; PERFORM 2; END $$; SELECT 'a;b'")
    assert [p.statement_type for p in a.parts] == ["DO", "SELECT"]


def test_payload_fields_fit_the_event_schema() -> None:
    from agent import events as ev

    a = PG.analyse("SELECT name FROM customers WHERE id IN (" + ", ".join(str(i) for i in range(30000)) + ")")
    fields = a.payload_fields()
    assert len(fields["statement"]) <= 65536
    payload = ev.DbQueryPayload(session_id="s", **fields)
    event = ev.new_event(ev.DbQuery, payload, source=ev.Source(type="proxy"))
    assert ev.decode(ev.encode(event)).payload.tables_read == ["public.customers"]


def test_payload_fields_of_undecodable_names_still_encode() -> None:
    from agent import events as ev

    sql = b'SELECT "caf\xe9" FROM "t\xff" WHERE a = 1'.decode("utf-8", "surrogateescape")
    fields = PG.analyse(sql).payload_fields()
    event = ev.new_event(ev.DbQuery, ev.DbQueryPayload(session_id="s", **fields), source=ev.Source(type="proxy"))
    assert ev.decode(ev.encode(event)).payload.statement.endswith("WHERE a = ?")
