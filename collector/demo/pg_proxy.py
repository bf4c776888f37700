"""`custos demo --pg`: the proxy's statements run for real — `custos-agent proxy` in front of the demo database,
each generated `db.query` of the bank sent through it as its real statement (collector/demo/pg_statements.py),
and the proxy's own events read back from its spool, tied to their scenario statements and re-dated.

    with ProxyRun(workdir, database, passwords, env) as run:   # the proxy process, listening
        run.send(event, numbers, account)                       # in the bank's order, waiting for each answer
        pairs = run.collect()                                   # (scenario event, the proxy's event of it)
    redate(proxy_event, scenario_event)                         # at the simulated moment and desk, checked

Ties: each statement goes over the connection of its account and program, one at a time, and the proxy writes a
connection's statements in the order they completed; so the n-th `db.query` the proxy wrote for a client port is
the n-th statement sent over that connection. Each tie is checked (statement type, who, no error).

Re-dating: the bank's fourteen days are replayed in well under a minute and the rules judge each event by its own
time, so the proxy's event takes its scenario statement's moment (`ts`, `started_at`) and the address and port of
the simulated desk the statement came from (`client_addr`, `client_port`: here every client is on the loopback).
Everything else — statement, tables, columns, sensitive classes, rows, bytes, duration, customer keys, session,
the account and the person named — is what the proxy measured.
"""

from __future__ import annotations

import socket
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from agent.config import load_config as load_agent_config
from agent.events import DbQuery, decode
from agent.spool import Spool
from collector.demo.bank import DemoError
from collector.demo.pg_statements import Statement, real_statement
from collector.demo.pg_tables import BankDatabase, first_line
from collector.demo.site import Child, poll
from rules.scenario import DEMO_KEY, PROXY

SENSITIVE = {  # the demo database's columns and the classes the proxy reports for them
    "public.customers.name": "name", "public.customers.national_id": "national_id",
    "public.customers.phone": "phone", "public.customers.address": "address",
    "public.cards.pan": "card_number", "public.cards.holder": "name",
}
CUSTOMER_KEYS = ["public.customers.customer_id"]
KEYS_CAP = 5000
AGENT_ID = "proxy-core"
_QUERY = b'{"kind":"db.query"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(value: Any) -> str:
    return msgspec.json.encode(value).decode()  # JSON strings, lists and tables-as-inline are TOML here


@dataclass
class Session:
    """One client connection through the proxy: its account, program, local port and what was sent over it."""

    conn: Any
    port: int
    sent: list[DbQuery] = field(default_factory=list)


class ProxyRun:
    def __init__(self, workdir: Path, database: BankDatabase, passwords: dict[str, str], env: dict[str, str]) -> None:
        self.workdir, self.database, self.passwords = workdir, database, passwords
        self.spool_dir = workdir / "spools" / "pg-proxy"
        self.config = workdir / "pg-proxy.toml"
        self.port = free_port()
        self.env = dict(env, CUSTOS_CUSTOMER_KEY_SECRET=DEMO_KEY.decode())
        self.sessions: dict[tuple[str | None, str], Session] = {}
        self.child: Child | None = None
        self.sent = 0
        self.rows = 0

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ProxyRun:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        sensitive = ", ".join(f"{_toml(column)} = {_toml(cls)}" for column, cls in SENSITIVE.items())
        self.config.write_text(
            "# custos demo --pg: the proxy in front of the demo database; its spool is read back by the demo\n"
            f"agent_id = {_toml(AGENT_ID)}\n[spool]\ndir = {_toml(str(self.spool_dir))}\n"
            f'[heartbeat]\ninterval = "0"\n\n[sources.{PROXY.name}]\ntype = "proxy"\n'
            f"customer_keys = {_toml(CUSTOMER_KEYS)}\n"
            "# the bank's bulk reads touch up to 3,000 customers in one statement: keep every hash\n"
            f"customer_keys_cap = {KEYS_CAP}\nsensitive = {{{sensitive}}}\n")
        upstream = f"{self.database.host}:{self.database.port}"
        self.child = Child("pg-proxy", [sys.executable, "-m", "agent", "-v", "proxy", "--config", str(self.config),
                                        "--listen", self.listen, "--upstream", upstream, "--name", PROXY.name,
                                        "--no-ship"], self.env, self.workdir)
        poll(lambda: self._listening() or not self.child.alive(), 60, "the proxy to listen")  # type: ignore[union-attr]
        if not self.child.alive():
            raise DemoError(f"the proxy exited {self.child.proc.returncode} before listening:\n{self.child.tail()}")

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def _session(self, user: str | None, app: str) -> Session:
        key = (user, app)
        session = self.sessions.get(key)
        if session is None:
            import psycopg
            from psycopg.conninfo import make_conninfo

            # The loopback leg is plain text: the demo's proxy ends no TLS (its upstream leg is the DSN's server).
            extra: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "application_name": app,
                                     "sslmode": "disable"}
            if user is not None:
                extra.update(user=user, password=self.passwords[user])
            try:
                conn = psycopg.connect(make_conninfo(self.database.dsn, **extra), autocommit=True,
                                       connect_timeout=10)
            except psycopg.Error as e:
                raise DemoError(f"--pg: cannot connect through the proxy at {self.listen} as "
                                f"{user or 'the DSN user'}: {first_line(e)}") from e
            with socket.socket(fileno=socket.dup(conn.pgconn.socket)) as s:
                port = int(s.getsockname()[1])
            session = self.sessions[key] = Session(conn, port)
        return session

    def send(self, event: DbQuery, numbers: dict[str, int], account: str | None) -> None:
        """Run the real statement of `event` through the proxy: as `account` when it is a role of its own, else
        as the DSN's user with the person in a sqlcommenter tag."""
        import psycopg

        st: Statement = real_statement(event, numbers, None if account else event.actor.db_user)
        session = self._session(account, event.payload.application_name or "bankdesk")
        try:
            with session.conn.cursor() as cur:
                if st.copy:
                    with cur.copy(st.sql) as copy:
                        for _ in copy:
                            self.rows += 1
                else:
                    cur.execute(st.sql, st.params)
                    if cur.description is not None:
                        self.rows += len(cur.fetchall())
        except psycopg.Error as e:
            raise DemoError(f"--pg: the statement for {event.payload.statement!r} failed: {first_line(e)}") from e
        session.sent.append(event)
        self.sent += 1

    def collect(self, timeout: float = 120.0) -> list[tuple[DbQuery, DbQuery]]:
        """(scenario event, the proxy's event of its statement) for every statement sent, once the proxy wrote
        them all."""
        written: list[DbQuery] = []
        spool = Spool(load_agent_config(self.config, env={}).spool_path)
        try:
            def more() -> bool:
                batch = spool.peek(5000)
                written.extend(decode(b.body) for b in batch if b.body.startswith(_QUERY))  # type: ignore[misc]
                spool.ack([b.seq for b in batch])
                self.check()
                return len(written) >= self.sent

            poll(more, timeout, f"the proxy to write the events of {self.sent:,} statements", interval=0.2)
        finally:
            spool.close()
        return tie(self.sessions.values(), written)

    def check(self) -> None:
        if self.child is not None and not self.child.alive():
            raise DemoError(f"the proxy exited {self.child.proc.returncode}; the end of {self.child.log_path}:\n"
                            f"{self.child.tail()}")

    def close(self) -> None:
        for session in self.sessions.values():
            session.conn.close()
        if self.child is not None:
            self.child.stop()


def tie(sessions: Any, written: list[DbQuery]) -> list[tuple[DbQuery, DbQuery]]:
    """Per connection, the n-th statement sent with the n-th event the proxy wrote for its client port."""
    by_port: dict[int | None, list[DbQuery]] = defaultdict(list)
    for e in written:
        by_port[e.payload.client_port].append(e)
    out: list[tuple[DbQuery, DbQuery]] = []
    for session in sessions:
        got = by_port.get(session.port, [])
        if len(got) != len(session.sent):
            raise DemoError(f"the proxy wrote {len(got)} statements for the connection from port {session.port}, "
                            f"which sent {len(session.sent)}; its log is in logs/pg-proxy.log")
        out.extend(zip(session.sent, got, strict=True))
    return out


def redate(measured: DbQuery, scenario: DbQuery) -> DbQuery:
    """The proxy's event at its scenario statement's simulated moment and desk; checked to be that statement."""
    p, want = measured.payload, scenario.payload
    who = measured.actor.end_user or measured.actor.db_user
    if p.error_code or p.statement_type != want.statement_type or who != scenario.actor.db_user:
        raise DemoError(f"the proxy's event {measured.id} ({p.statement_type} by {who}, error {p.error_code}) is not "
                        f"the scenario's {scenario.id} ({want.statement_type} by {scenario.actor.db_user})")
    payload = msgspec.structs.replace(p, started_at=scenario.ts, client_addr=want.client_addr,
                                      client_port=want.client_port)
    return msgspec.structs.replace(measured, ts=scenario.ts, payload=payload)
