"""Database-proxy bypass: a staff machine connected straight to a database server behind the proxy is an alert;
connections through the proxy, or to databases nobody proxies, are not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent import events as ev
from agent.netwatch import DbConnectionsConfig, DbConnectionsSource
from agent.spool import Spool
from collector import credentials
from collector.alerts import AlertStore
from tests.agent.test_netwatch import pg_client  # noqa: F401 - the fixture: a process connected to PostgreSQL
from tests.helpers.api import Served, batch
from tests.helpers.procs import wait_for


INTEGRITY = 'bypass_grace = "1s"\n'


@pytest.fixture
def api(integrity_api: Served) -> Served:
    return integrity_api


def session(source: str, client: tuple[str, int], server: tuple[str, int], host: str = "ws-alice") -> ev.Envelope:
    return ev.new_event(ev.DbSession, ev.DbSessionPayload(
        session_id=f"{client}", phase="observed" if source != "proxy" else "start", client_addr=client[0],
        client_port=client[1], server_addr=server[0], server_port=server[1]),
        source=ev.Source(type=source), host=host, actor=ev.Actor(os_user="alice"))


def bypasses(api: Served) -> list[str]:
    return [a.group_key for a in AlertStore(api.engine).list(rule_id="custos.proxy_bypass")]


def test_a_staff_machine_connected_straight_to_the_upstream_is_a_bypass(
        api: Served, tmp_path: Path, pg_client: tuple[subprocess.Popen[str], int]) -> None:  # noqa: F811
    staff_token = credentials.create(api.engine, "ws-alice", "agent")
    # The proxy in front of PostgreSQL reports a session it carried: so 127.0.0.1:5432 is behind a proxy.
    proxy_session = session("proxy", ("10.9.9.9", 40000), ("127.0.0.1", 5432), host="db-proxy")
    assert api.post_events(proxy_session).status_code == 200
    # The staff agent's connection watcher sees a program on this machine connected to 127.0.0.1:5432 directly.
    _, port = pg_client
    watcher = DbConnectionsSource("db", DbConnectionsConfig(endpoints=["127.0.0.1:5432"]), agent_id="ws-alice")
    with Spool(tmp_path / "spool.db") as spool:
        watcher.spool = spool
        seen = [e for e in watcher.poll() if e.payload.client_port == port]  # type: ignore[attr-defined]
        assert seen, "the connection watcher did not see the direct connection"
        r = api.post(batch(*(e.body for e in spool.peek(1000))), token=staff_token)
        assert r.status_code == 200 and not r.json()["rejected"]
    found = wait_for(lambda: AlertStore(api.engine).list(rule_id="custos.proxy_bypass"), 30, "the bypass alert")
    assert any(a.evidence == [seen[0].id] and a.measures["server"] == "127.0.0.1:5432" for a in found)


def test_sessions_through_the_proxy_or_to_unproxied_databases_are_quiet(api: Served) -> None:
    proxied = session("proxy", ("10.1.1.7", 50001), ("10.0.0.5", 5432), host="db-proxy")
    to_proxy = session("db_connections", ("10.1.1.7", 50000), ("10.0.0.9", 6432))  # to the proxy's own port
    in_path = session("db_connections", ("10.1.1.7", 50001), ("10.0.0.5", 5432))  # the proxy reported this one
    elsewhere = session("db_connections", ("10.1.1.7", 50002), ("10.0.0.77", 3306))  # nobody proxies it
    direct = session("db_connections", ("10.1.1.7", 50003), ("10.0.0.5", 5432), host="ws-bob")
    assert api.post_events(proxied, to_proxy, in_path, elsewhere, direct).status_code == 200
    wait_for(lambda: bypasses(api), 30, "the one bypass among them")
    assert bypasses(api) == ["ws-bob"]
