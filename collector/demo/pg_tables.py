"""`custos demo --pg`: the bank's core database on a real PostgreSQL server — customers, cards, loans, payments and
the loan officers' portfolios — filled from the bank's synthetic customer base. Every value is made up: names from
the scenario's name lists, identity numbers, phones, addresses and card numbers computed from the customer number.

    dsn = create_bank_database(server_dsn, bank)   # drops and recreates `custos_demo`; returns its DSN
    roles = ensure_account_roles(server_dsn, bank) # the shared and batch accounts, as real login roles
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.demo.bank import CUSTOMERS, DemoBank, DemoError
from rules.scenario import FIRST, LAST, customer_key, customer_number

DATABASE = "custos_demo"
LOANS = 8000
SCHEMA = """
CREATE TABLE customers (
    id integer PRIMARY KEY, customer_id text NOT NULL UNIQUE, name text NOT NULL, national_id text NOT NULL,
    phone text NOT NULL, address text NOT NULL);
CREATE TABLE cards (
    card_id serial PRIMARY KEY, customer_id text NOT NULL REFERENCES customers (customer_id), pan text NOT NULL,
    holder text NOT NULL, product text NOT NULL, status text NOT NULL);
CREATE INDEX cards_customer ON cards (customer_id);
CREATE TABLE loans (
    loan_id integer PRIMARY KEY, customer_id text NOT NULL REFERENCES customers (customer_id), officer text NOT NULL,
    region text NOT NULL, product text NOT NULL, amount numeric(12, 2) NOT NULL);
CREATE TABLE payments (
    payment_id serial PRIMARY KEY, loan_id integer NOT NULL REFERENCES loans (loan_id), amount numeric(12, 2) NOT NULL);
CREATE TABLE portfolios (
    officer text NOT NULL, customer_id text NOT NULL REFERENCES customers (customer_id),
    PRIMARY KEY (officer, customer_id));
"""
# Made-up values, computed from the customer number so that a run is repeatable; nothing here is real.
FILL = """
INSERT INTO customers
SELECT i, 'CUST' || lpad(i::text, 7, '0'),
       (%(first)s::text[])[1 + i %% cardinality(%(first)s::text[])] || ' '
           || (%(last)s::text[])[1 + (i * 7) %% cardinality(%(last)s::text[])],
       (3 + i %% 2)::text || to_char(date '1940-01-01' + (i * 37) %% 25000, 'YYMMDD')
           || lpad((i %% 10000)::text, 4, '0'),
       '+3706' || lpad(((i * 7919) %% 10000000)::text, 7, '0'),
       (1 + i %% 120)::text || ' ' || (ARRAY['Gedimino pr.', 'Pylimo g.', 'Savanoriu pr.', 'Laisves al.',
           'Taikos pr.', 'Zalgirio g.'])[1 + i %% 6] || ', ' || (ARRAY['Vilnius', 'Kaunas', 'Klaipeda',
           'Siauliai', 'Panevezys'])[1 + (i / 7) %% 5]
FROM generate_series(1, %(customers)s) i;
INSERT INTO cards (customer_id, pan, holder, product, status)
SELECT c.customer_id, '4' || lpad(((c.id::bigint * 104729 + n * 7919) %% 1000000000000000)::text, 15, '0'), c.name,
       (ARRAY['debit', 'credit', 'gold'])[1 + (c.id + n) %% 3], CASE WHEN n = 1 THEN 'active' ELSE 'expired' END
FROM customers c, generate_series(1, 1 + c.id %% 4) n;
INSERT INTO loans
SELECT g, 'CUST' || lpad((1 + (g * 7919) %% (%(customers)s - 1))::text, 7, '0'),
       (%(officers)s::text[])[1 + g %% cardinality(%(officers)s::text[])],
       (ARRAY['north', 'south', 'east', 'west', 'capital'])[1 + g %% 5],
       (ARRAY['mortgage', 'consumer', 'car', 'business'])[1 + (g / 5) %% 4], 500 + (g * 37) %% 50000
FROM generate_series(1, %(loans)s) g;
INSERT INTO payments (loan_id, amount) SELECT loan_id, round(amount / 24, 2) FROM loans, generate_series(1, 3);
"""


@dataclass(frozen=True, slots=True)
class BankDatabase:
    dsn: str  # the demo database, as the DSN's user
    host: str
    port: int
    rows: dict[str, int]


def server_address(dsn: str) -> tuple[str, int]:
    """(host, port) of the server a DSN names: the proxy's upstream."""
    import psycopg

    example = "such as postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        info = conninfo_to_dict(dsn)
        host, port = str(info.get("host") or info.get("hostaddr") or ""), int(info.get("port") or 5432)
    except (psycopg.Error, ValueError) as e:
        raise DemoError(f"--pg: not a DSN of one server ({first_line(e)}); give one {example}") from e
    if not host or host.startswith("/") or "," in host:
        raise DemoError(f"--pg: the DSN must name one TCP host ({example}), not a Unix socket or a list: the proxy "
                        "listens and forwards over TCP")
    return host, port


def customer_numbers() -> dict[str, int]:
    """Customer key (keyed hash) → customer number: how a generated statement's customers are found again."""
    return {customer_key(i): i for i in range(1, CUSTOMERS)}


def create_bank_database(server_dsn: str, bank: DemoBank, numbers: dict[str, int]) -> BankDatabase:
    """Drop and recreate the demo database on the server of `server_dsn` and fill it; its DSN and row counts."""
    import psycopg

    host, port = server_address(server_dsn)
    with psycopg.connect(server_dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    dsn = make_conninfo(server_dsn, dbname=DATABASE)
    officers = [p.staff_id for p in bank.scenario.people if p.team == "loans" and p.manager]
    portfolio = [(staff, customer_number(numbers[key])) for staff, key in bank.assignments()]
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute(SCHEMA)
        params = {"first": FIRST, "last": LAST, "customers": CUSTOMERS, "officers": officers, "loans": LOANS}
        for statement in FILL.split(";\n"):
            if statement.strip():
                conn.execute(statement, {k: v for k, v in params.items() if f"%({k})s" in statement})
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO portfolios VALUES (%s, %s)", portfolio)
        conn.execute("ANALYZE")
        rows = {t: int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0])
                for t in ("customers", "cards", "loans", "payments", "portfolios")}
    return BankDatabase(dsn, host, port, rows)


def ensure_account_roles(server_dsn: str, accounts: list[str]) -> dict[str, str]:
    """The bank's non-personal database accounts (the shared IT account, the batch account) as login roles that
    may read the demo tables, each with a fresh random password; account → password. Roles belong to the whole
    server: they are created when missing and kept."""
    import psycopg

    passwords = {}
    try:
        with psycopg.connect(make_conninfo(server_dsn, dbname=DATABASE), autocommit=True, connect_timeout=10) as conn:
            for account in accounts:
                password = secrets.token_urlsafe(18)
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (account,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(account),
                                                                                  sql.Literal(password)))
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(DATABASE),
                                                                                 sql.Identifier(account)))
                conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                    sql.Identifier(account)))
                passwords[account] = password
    except psycopg.Error as e:
        raise DemoError(f"--pg: cannot create the login roles {', '.join(accounts)} (the bank's shared and batch "
                        f"accounts connect as themselves): {first_line(e)}; give a DSN whose user may create "
                        "roles, such as postgres") from e
    return passwords


def first_line(e: Any) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
