from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.events import decode
from agent.netwatch import DbConnectionsConfig, DbConnectionsSource, normalise, split_endpoint
from agent.section import load_section
from agent.spool import Spool
from tests.conftest import PG_DSN, service_missing
from tests.helpers.procs import wait_for

CLIENT = """
import os, socket, sys
import psycopg
conn = psycopg.connect(sys.argv[1], application_name="report-tool")
s = socket.socket(fileno=os.dup(conn.pgconn.socket))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
conn.close()
"""


@pytest.fixture
def pg_client() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A Python process holding a connection to the local PostgreSQL; yields it and its local port."""
    import psycopg

    try:
        psycopg.connect(PG_DSN, connect_timeout=5).close()
    except psycopg.OperationalError as e:
        service_missing(f"PostgreSQL at {PG_DSN}", e)
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, PG_DSN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    with proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        try:
            yield proc, port
        finally:
            if proc.poll() is None:
                proc.kill()


def sessions(spool: Spool) -> list:  # type: ignore[type-arg]
    return [decode(e.body) for e in spool.peek(10_000)]


def test_a_python_process_connected_to_postgresql_is_a_db_session_naming_its_pid_and_user(
    tmp_path: Path, pg_client: tuple[subprocess.Popen[str], int]
) -> None:
    proc, port = pg_client
    spool = Spool(tmp_path / "spool.sqlite3")
    source = DbConnectionsSource("db", DbConnectionsConfig(endpoints=["127.0.0.1:5432"], interval="100ms"))
    source.start(spool)
    try:
        mine = lambda: [e for e in sessions(spool) if e.payload.client_port == port]  # noqa: E731
        [event] = wait_for(mine, 30, "a db.session for the client's connection")
        p = event.payload
        assert p.phase == "observed" and p.process is not None
        assert p.process.pid == proc.pid and p.process.ppid == os.getpid()
        assert p.process.username == getpass.getuser() and event.actor.os_user == getpass.getuser()
        assert "python" in (p.process.name or "") and p.process.cmdline and "-c" in p.process.cmdline
        assert (p.client_addr, p.server_addr, p.server_port) == ("127.0.0.1", "127.0.0.1", 5432)
        assert p.session_id == f"tcp:127.0.0.1:{port}-127.0.0.1:5432"
        assert all(e.payload.server_port == 5432 for e in sessions(spool))
        proc.communicate("", timeout=30)
        wait_for(lambda: [e.payload.phase for e in mine()] == ["observed", "end"], 30, "the session's end")
        assert mine()[1].payload.process == p.process  # the end names who it was, though the process is gone
    finally:
        source.stop()
        spool.close()


def test_a_wildcard_endpoint_matches_the_port_on_any_address(pg_client: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = pg_client
    source = DbConnectionsSource("db", DbConnectionsConfig(endpoints=["*:5432"]))
    events = source.poll()
    assert any(e.payload.client_port == port and e.payload.process.pid == proc.pid for e in events)
    assert [e for e in source.poll() if e.payload.client_port == port] == []  # seen once, not again


def test_connections_to_other_endpoints_are_not_reported(pg_client: tuple[subprocess.Popen[str], int]) -> None:
    _, port = pg_client
    source = DbConnectionsSource("db", DbConnectionsConfig(endpoints=["127.0.0.1:5433", "[::1]:5432"]))
    assert [e for e in source.poll() if e.payload.client_port == port] == []


@pytest.mark.parametrize("endpoints, message", [
    ([], "endpoints: list the database"),
    (["db.example"], "must be host:port"),
    (["db:99999"], "must be host:port"),
])
def test_bad_endpoints_are_configuration_errors_naming_the_key(endpoints: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"sources -> db -> .*{message}"):
        load_section(DbConnectionsConfig, "db", {"type": "db_connections", "endpoints": endpoints})


def test_endpoints_and_addresses_are_normalised() -> None:
    assert split_endpoint("[::1]:5432") == ("::1", 5432)
    assert split_endpoint("db.bank.local:6432") == ("db.bank.local", 6432)
    assert normalise("::ffff:10.0.0.5") == "10.0.0.5"
    assert normalise("::1") == "::1"
