"""Real statements from pgAudit and MariaDB server_audit logs (tests/agent/sqlaudit/data) analyse sensibly.

The logs name the tables each statement touched; the analysis must find at least those, and nothing of the
statements' literal values may survive redaction.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.sqlaudit import Analyser, SensitiveMap

DATA = Path(__file__).parent / "data"
SENSITIVE = SensitiveMap.of(
    {
        "public.customers.ssn": "id_number",
        "public.customers.name": "name",
        "public.customers.email": "email",
        "shop.customers.ssn": "id_number",
        "shop.customers.name": "name",
        "shop.customers.email": "email",
    }
)
PG = Analyser("postgres", sensitive=SENSITIVE)
MY = Analyser("mysql", sensitive=SENSITIVE, database="shop")
# Values the sample statements carry; none may appear in a redacted statement.
PLANTED = ["cust1", "@example.com", "multi", "quoted", "5000", "1000", "3000", "200", "research", "x.csv",
           "%example"]


@dataclass(frozen=True)
class PgAuditLine:
    audit_type: str
    audit_class: str
    command: str
    object_type: str
    object_name: str
    statement: str


def pgaudit_fields(message: str) -> PgAuditLine:
    row = next(csv.reader(io.StringIO(message.removeprefix("AUDIT: "))))
    return PgAuditLine(row[0], row[3], row[4], row[5], row[6], row[7])


def stderr_log_lines() -> list[PgAuditLine]:
    records: list[str] = []
    for line in (DATA / "pgaudit.log").read_text().splitlines():
        if line.startswith("\t") and records:
            records[-1] += "\n" + line[1:]  # continuation lines of a statement begin with a TAB
        else:
            records.append(line)
    return [pgaudit_fields(r[r.index("AUDIT: ") :]) for r in records if "AUDIT: " in r]


def csv_log_lines() -> list[PgAuditLine]:
    csv.field_size_limit(1 << 24)
    with open(DATA / "pgaudit.csv", newline="") as f:
        return [pgaudit_fields(row[13]) for row in csv.reader(f) if row[13].startswith("AUDIT: ")]


def mariadb_queries() -> list[tuple[str, set[str], str]]:
    """(statement, tables the TABLE lines named, retcode) for each QUERY line."""
    tables: dict[tuple[str, str], set[str]] = {}
    out = []
    for line in (DATA / "mariadb_audit.log").read_text().splitlines():
        fields = line.split(",", 8)
        connection, query_id, operation, database = fields[4], fields[5], fields[6], fields[7]
        rest, _, retcode = fields[8].rpartition(",")
        if operation in ("READ", "WRITE"):
            tables.setdefault((connection, query_id), set()).add(f"{database}.{rest}")
        elif operation == "QUERY":
            # The plugin single-quotes the statement and escapes quotes, backslashes and newlines with a backslash.
            text = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), rest[1:-1])
            out.append((text, tables.pop((connection, query_id), set()), retcode))
    return out


@pytest.mark.parametrize("lines", [stderr_log_lines(), csv_log_lines()], ids=["stderr", "csvlog"])
def test_pgaudit_statements_name_the_tables_pgaudit_logged(lines: list[PgAuditLine]) -> None:
    assert len(lines) >= 20
    checked = 0
    for line in lines:
        a = PG.analyse(line.statement)
        assert a.parse_ok, line.statement
        for value in PLANTED:
            assert value not in a.redacted, (value, a.redacted)
        # pgAudit logs the relations a view or DO block expands to; only tables the text names can be expected.
        bare = line.object_name.rsplit(".", 1)[-1]
        if line.object_type == "TABLE" and re.search(rf"\b{bare}\b", line.statement):
            touched = a.tables_written if line.audit_class == "WRITE" else a.tables_read
            assert line.object_name in touched, (line.statement, a)
            checked += 1
    assert checked >= 20


def test_both_pgaudit_formats_give_the_same_fingerprints() -> None:
    stderr = {line.statement: PG.analyse(line.statement).fingerprint for line in stderr_log_lines()}
    csvlog = {line.statement: PG.analyse(line.statement).fingerprint for line in csv_log_lines()}
    common = stderr.keys() & csvlog.keys()
    assert len(common) >= 10
    assert {s: stderr[s] for s in common} == {s: csvlog[s] for s in common}


def test_pgaudit_samples_give_the_expected_analyses() -> None:
    by_text = {line.statement: PG.analyse(line.statement) for line in stderr_log_lines() + csv_log_lines()}
    multiline = next(a for s, a in by_text.items() if s.startswith("SELECT 'multi"))
    assert multiline.redacted == "SELECT ?, email FROM customers WHERE name = ?"
    assert multiline.sensitive_classes == ("email", "name")  # name is read in the WHERE clause
    insert = next(a for s, a in by_text.items() if s.startswith("INSERT INTO customers"))
    assert (insert.statement_type, insert.tables_written, insert.tables_read) == ("INSERT", ("public.customers",), ())
    assert insert.sensitive_classes == ("email", "id_number", "name")
    prepared = next(a for s, a in by_text.items() if s.startswith("PREPARE q"))
    assert (prepared.statement_type, prepared.statement_name) == ("PREPARE", "q")
    assert prepared.redacted == "PREPARE q(int) AS SELECT name, ssn FROM customers WHERE id = $1"
    copy = by_text["COPY (SELECT * FROM customers) TO STDOUT WITH CSV;"]
    assert copy.export and copy.statement_type == "COPY"
    assert copy.sensitive_classes == ("email", "id_number", "name")
    fk_check = next(a for s, a in by_text.items() if "FOR KEY SHARE" in s)
    assert fk_check.columns == ("public.customers.id",) and fk_check.sensitive_classes == ()
    do_block = next(a for s, a in by_text.items() if s.startswith("NOT EXISTS"))
    assert do_block.tables_read == ("pg_catalog.pg_roles",)
    assert "auditor" not in do_block.redacted and "alice" not in do_block.redacted


def test_mariadb_statements_name_the_tables_the_plugin_logged() -> None:
    queries = mariadb_queries()
    assert len(queries) >= 12
    with_tables = 0
    for text, logged, _retcode in queries:
        a = MY.analyse(text)
        assert a.parse_ok, text
        for value in PLANTED:
            assert value not in a.redacted, (value, a.redacted)
        assert logged <= set(a.tables_read) | set(a.tables_written), (text, logged, a)
        with_tables += bool(logged)
    assert with_tables >= 9


def test_mariadb_samples_give_the_expected_analyses() -> None:
    by_text = {text: MY.analyse(text) for text, _, _ in mariadb_queries()}
    quoted = next(a for s, a in by_text.items() if s.startswith("SELECT 'multi"))
    assert quoted.redacted == "SELECT ?, email FROM customers WHERE name=?"
    commented = next(a for s, a in by_text.items() if s.startswith("/* app=crm */"))
    assert commented.redacted == "SELECT ssn FROM customers WHERE email LIKE ?"
    assert commented.sensitive_classes == ("email", "id_number") and commented.tags == ()
    outfile = next(a for s, a in by_text.items() if "OUTFILE" in s)
    assert outfile.export and outfile.tables_read == ("shop.customers",)
    update = by_text["UPDATE customers SET balance=balance+1 WHERE id=7"]
    assert (update.statement_type, update.tables_written) == ("UPDATE", ("shop.customers",))
    grants = by_text["SELECT user, host FROM mysql.user"]
    assert grants.tables_read == ("mysql.user",)


def test_the_same_statement_fingerprints_alike_from_the_proxy_and_from_pgaudit() -> None:
    # psql sends the statement with its semicolon; a driver without; pgAudit logs what the server received.
    logged = next(line.statement for line in stderr_log_lines() if line.statement.startswith("SELECT id, name"))
    from_driver = PG.analyse("select id, name, email, ssn from customers where id < $1")
    assert PG.analyse(logged).fingerprint == from_driver.fingerprint
