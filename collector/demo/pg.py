"""`custos demo --pg DSN`: the database part through the real PostgreSQL proxy, against real tables.

Without --pg the proxy's events are generated, as the proxy would write them. With --pg:

1. the bank's core database is made on the server at DSN (`custos_demo`, dropped and recreated; pg_tables.py),
   with the shared IT account and the batch account as login roles;
2. `custos-agent proxy` starts in front of it, and every statement a client sends in the bank's fourteen days is
   run for real through it, in the bank's order (pg_statements.py, pg_proxy.py);
3. the proxy's own `db.query` events replace the generated ones in the `proxy-core` agent's share of the bank,
   re-dated to their simulated moments; the replay then ships them like any other event. `proxy-ties.csv` in
   the working directory ties each proxy event to its scenario statement.

Statements the database issues itself (foreign-key checks, `system`) pass through no proxy and stay generated.
"""

from __future__ import annotations

import csv
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from agent.events import DbQuery
from collector.demo.bank import DemoBank, DemoError
from collector.demo.pg_proxy import AGENT_ID, ProxyRun, redate
from collector.demo.pg_statements import sent_by_a_client
from collector.demo.pg_tables import (DATABASE, BankDatabase, create_bank_database, customer_numbers,
                                      ensure_account_roles, first_line, server_address)
from collector.demo.progress import Progress


def redact(dsn: str) -> str:
    """The DSN without a password, for messages."""
    dsn = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def check_pg(dsn: str) -> None:
    """Refuse --pg unless `dsn` names a server over TCP and PostgreSQL answers there."""
    import psycopg

    server_address(dsn)
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        raise DemoError(f"--pg: cannot connect to PostgreSQL at {redact(dsn)}: {first_line(e)}; start it, or give "
                        "the DSN of one that runs (such as postgresql://postgres@127.0.0.1:5432/postgres)") from e


@dataclass(frozen=True, slots=True)
class ProxyPart:
    """What ran through the proxy: statements, rows the clients read, the proxy's pid, and the statements the
    database issued itself (kept as generated)."""

    database: BankDatabase
    statements: int
    rows: int
    pid: int
    kept: int
    seconds: float

    def describe(self) -> str:
        return (f"the database part ran through the real proxy: {self.statements:,} statements against {DATABASE} "
                f"on {self.database.host}:{self.database.port}; the stored db.query events are the proxy's own, "
                "re-dated to the simulated days")


def own_accounts_of_nobody(bank: DemoBank) -> list[str]:
    """Database accounts that are no one person's own: shared by several, or a service's."""
    users = Counter(u for p in bank.scenario.people for u in p.db_users)
    return sorted({u for p in bank.scenario.people for u in p.db_users if users[u] > 1 or p.kind != "person"})


def run_through_proxy(dsn: str, bank: DemoBank, workdir: Path, progress: Progress, env: dict[str, str]) -> ProxyPart:
    """Make the bank's database, run the proxy's statements through the real proxy, and put its events, re-dated,
    in place of the generated ones."""
    began = time.monotonic()
    numbers = customer_numbers()
    database = create_bank_database(dsn, bank, numbers)
    accounts = own_accounts_of_nobody(bank)
    passwords = ensure_account_roles(dsn, accounts)
    progress.step("postgres", f"{DATABASE} on {database.host}:{database.port}, made afresh: "
                              + ", ".join(f"{n:,} {t}" for t, n in database.rows.items())
                              + f" (made-up values); login roles {', '.join(accounts)}")
    queries = [[e for e in day.get(AGENT_ID, []) if isinstance(e, DbQuery)] for day in bank.by_day]
    total = sum(1 for day in queries for e in day if sent_by_a_client(e))
    with ProxyRun(workdir, database, passwords, env) as run:
        for day, events in enumerate(queries):
            for e in events:
                if sent_by_a_client(e):
                    run.send(e, numbers, e.actor.db_user if e.actor.db_user in accounts else None)
                    if run.sent % 250 == 0:
                        progress.count("proxy", bank.day_label(day), run.sent, total, "statements")
            progress.count("proxy", bank.day_label(day), run.sent, total, "statements", line=True)
        pairs = run.collect()
        pid = run.child.proc.pid if run.child is not None else 0
    measured = {scenario.id: redate(proxy, scenario) for scenario, proxy in pairs}
    if len(measured) != total:
        raise DemoError(f"{len(measured)} of {total} statements came back from the proxy")
    write_ties(workdir / "proxy-ties.csv", pairs)
    for day in bank.by_day:
        if AGENT_ID in day:
            day[AGENT_ID] = [measured.get(e.id, e) for e in day[AGENT_ID]]
    part = ProxyPart(database, total, run.rows, pid, sum(len(d) for d in queries) - total, time.monotonic() - began)
    progress.step("proxy", f"{part.statements:,} statements sent through custos-agent proxy (pid {pid}) in "
                           f"{part.seconds:.0f} s, {part.rows:,} rows read; its db.query events, re-dated to the "
                           f"simulated days, replace the generated ones ({part.kept} foreign-key checks the database "
                           "makes itself stay generated); ties in proxy-ties.csv")
    return part


def write_ties(path: Path, pairs: list[tuple[DbQuery, DbQuery]]) -> None:
    """Each proxy event and the scenario statement it ran for: ids, the real and the simulated time."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["scenario_event_id", "proxy_event_id", "proxy_session_id", "measured_at", "simulated_at"])
        for scenario, proxy in pairs:
            w.writerow([scenario.id, proxy.id, proxy.payload.session_id, proxy.ts.isoformat(), scenario.ts.isoformat()])
