"""Malformed and hostile clients: the proxy stays up, other sessions go on, memory stays bounded."""

from __future__ import annotations

import os
import socket
import struct

import psutil
import psycopg
import pytest

from tests.agent.proxy.conftest import ProxyProcess, RunningProxy, start_proxy_process
from tests.helpers.procs import wait_for

pytestmark = pytest.mark.postgres
# Connections that never finish startup: below the default max_connections (2000), which is the designed
# ceiling: beyond it new clients are refused until the startup timeout (15 s) frees places.
HALF_OPEN = 1800


def startup(user: str = "postgres", database: str = "postgres") -> bytes:
    body = struct.pack("!I", 196608) + f"user\0{user}\0database\0{database}\0\0".encode()
    return struct.pack("!I", len(body) + 4) + body


def still_serves(url: str) -> None:
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)


def test_garbage_and_oversize_startup_packets_are_refused_without_harm(proxy: RunningProxy, pg_url: str) -> None:
    with psycopg.connect(proxy.url(pg_url), autocommit=True) as bystander:
        for payload in (os.urandom(4096), b"\xff\xff\xff\xff" + os.urandom(100), struct.pack("!II", 4, 0),
                        struct.pack("!II", 9, 1234) + b"x", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", proxy.port)) as s:
                s.sendall(payload)
                s.settimeout(10)
                assert s.recv(100) in (b"", b"N")  # closed (or an SSL answer to random bytes) — never a hang
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    assert proxy.server.counters()["errors"]["bad_startup"] >= 4
    still_serves(proxy.url(pg_url))


def test_garbage_after_startup_is_forwarded_and_only_that_session_loses_its_audit(proxy: RunningProxy,
                                                                                    pg_url: str) -> None:
    with psycopg.connect(proxy.url(pg_url), autocommit=True) as bystander:
        for junk in (b"Q\x00\x00\x00\x02", b"Q\x7f\xff\xff\xff" + os.urandom(3000), os.urandom(5000),
                     b"P\x00\x00\x00\x20" + b"\x00" * 10):  # bad length, oversize, noise, truncated
            with socket.create_connection(("127.0.0.1", proxy.port)) as s:
                s.settimeout(10)
                s.sendall(startup())
                wait_for(lambda: b"Z" in s.recv(65536), 10, "ReadyForQuery")
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):  # the server answers with an error and closes: read until it does
                    pass
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    still_serves(proxy.url(pg_url))
    assert proxy.server.open_connections == 0 or wait_for(lambda: proxy.server.open_connections == 0, 10,
                                                          "connections to be closed")


@pytest.mark.slow
def test_thousands_of_unfinished_startups_neither_block_others_nor_grow_memory(tmp_path, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    proxy: ProxyProcess = start_proxy_process(tmp_path / "p")
    try:
        proc = psutil.Process(proxy.proc.pid)
        still_serves(proxy.url(pg_url))
        before = proc.memory_info().rss
        socks = []
        try:
            for i in range(HALF_OPEN):
                s = socket.create_connection(("127.0.0.1", proxy.port))
                s.sendall(startup()[: (i % 7) + 1])  # a few bytes of a startup packet, never the rest
                socks.append(s)
            # Meanwhile real sessions work, with no upstream connection spent on the half-open ones.
            still_serves(proxy.url(pg_url))
            with psycopg.connect(pg_url, autocommit=True) as direct:
                backends = direct.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                          "'client backend'").fetchone()[0]
            assert backends < 50
            during = proc.memory_info().rss
        finally:
            for s in socks:
                s.close()
        assert during - before < 64 * 1024 * 1024, (before, during)  # about 2,000 small buffers, not a leak
        still_serves(proxy.url(pg_url))
        assert proxy.proc.poll() is None
    finally:
        proxy.stop()


def test_startup_timeout_closes_silent_connections(make_proxy, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    proxy = make_proxy(startup_timeout="300ms")
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.settimeout(10)
        s.sendall(b"\x00\x00")
        assert s.recv(10) == b""  # closed by the proxy, not by our timeout
    assert proxy.server.counters()["errors"]["startup_timeout"] == 1
    still_serves(proxy.url(pg_url))


def test_connections_beyond_the_limit_are_refused_and_counted(make_proxy, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    proxy = make_proxy(max_connections=3)
    held = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(3)]
    try:
        wait_for(lambda: proxy.server.open_connections == 3, 10, "three accepted connections")
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.settimeout(10)
            assert s.recv(10) == b""
        assert proxy.server.counters()["errors"]["refused_max_connections"] >= 1
    finally:
        for s in held:
            s.close()
    wait_for(lambda: proxy.server.open_connections == 0, 10, "the held connections to close")
    still_serves(proxy.url(pg_url))


def test_unreachable_upstream_gets_a_postgres_error_not_a_hang(make_proxy) -> None:  # type: ignore[no-untyped-def]
    from agent.proxy.config import Listener

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound but not listening: connection refused
        proxy = make_proxy(listeners=[Listener(listen="127.0.0.1:0", upstream=f"127.0.0.1:{dead}")])
        with pytest.raises(psycopg.OperationalError, match="cannot be reached"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres", connect_timeout=10)
    assert proxy.server.counters()["errors"]["upstream_unreachable"] == 1


def test_an_audit_fault_closes_the_session_when_configured_fail_closed(make_proxy, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    proxy = make_proxy(fail_closed=True)
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.settimeout(10)
        s.sendall(startup())
        wait_for(lambda: b"Z" in s.recv(65536), 10, "ReadyForQuery")
        s.sendall(b"Q\x00\x00\x00\x02")  # a length below the minimum: the audit cannot follow this stream
        data = b"x"
        while data:
            data = s.recv(65536)
    assert proxy.server.counters()["errors"]["protocol"] == 1
    still_serves(proxy.url(pg_url))


def test_a_client_that_stops_reading_holds_the_server_not_the_proxys_memory(tmp_path, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    proxy: ProxyProcess = start_proxy_process(tmp_path / "p")
    try:
        proc = psutil.Process(proxy.proc.pid)
        still_serves(proxy.url(pg_url))
        before = proc.memory_info().rss
        with socket.create_connection(("127.0.0.1", proxy.port)) as s, \
                psycopg.connect(pg_url, autocommit=True) as watcher:
            s.sendall(startup())
            s.settimeout(10)
            wait_for(lambda: b"Z" in s.recv(65536), 10, "ReadyForQuery")
            # About 200 MB of rows, never read: the proxy must pause reading the server, not buffer them.
            query = b"SELECT repeat('x', 2000) FROM generate_series(1, 100000) /*stall*/ ;\0"
            s.sendall(b"Q" + struct.pack("!I", 4 + len(query)) + query)
            wait_for(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%/*stall*/%' "
                "AND wait_event = 'ClientWrite'").fetchone()[0] == 1, 30, "the server blocked writing to the proxy")
            grown = proc.memory_info().rss - before
            assert grown < 32 * 1024 * 1024, grown
            still_serves(proxy.url(pg_url))  # and the proxy serves others meanwhile
    finally:
        proxy.stop()
