"""`custos-agent proxy` from agent.toml: several listeners, exclusions counted in heartbeats, config errors."""

from __future__ import annotations

from pathlib import Path

import msgspec
import psycopg
import pytest

from agent.errors import ConfigError
from agent.events import AgentHeartbeat, DbQuery, DbSession, decode
from agent.proxy.config import proxy_config
from agent.spool import Spool
from tests.agent.proxy.conftest import UPSTREAM, dbname, free_port, start_proxy_process
from tests.helpers.procs import run_cli, base_env, wait_for

pytestmark = pytest.mark.postgres


def test_several_listeners_exclusions_and_heartbeat_counters(tmp_path: Path, pg_url: str) -> None:
    ports = [free_port(), free_port()]
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[spool]\ndir = "{tmp_path / "spool"}"\n[heartbeat]\ninterval = "200ms"\n\n'
        '[sources.pg]\ntype = "proxy"\n'
        f'listeners = [{{ listen = "127.0.0.1:{ports[0]}", upstream = "{UPSTREAM}", name = "pg-a" }},\n'
        f'             {{ listen = "127.0.0.1:{ports[1]}", upstream = "{UPSTREAM}", name = "pg-b" }}]\n'
        'exclude_applications = ["nightly-backup"]\nexclude_objects = ["public.audit_noise"]\n'
        'end_user_from_application_name = "^loans-web:(?P<user>[a-z]+)$"\n'
    )
    with psycopg.connect(pg_url, autocommit=True) as direct:
        direct.execute("CREATE TABLE audit_noise (x int)")
        direct.execute("CREATE TABLE loans (id int)")
    proxy = start_proxy_process(tmp_path / "proc", config=config, port=ports[0], listen=False)
    try:
        name = dbname(pg_url)
        for port, app in ((ports[0], "loans-web:alice"), (ports[1], "teller"), (ports[1], "nightly-backup")):
            url = f"postgresql://postgres@127.0.0.1:{port}/{name}?application_name={app}"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT count(*) FROM loans")
                conn.execute("SELECT count(*) FROM audit_noise")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{ports[0]}/{name}?application_name=prepared",
                             autocommit=True) as conn:
            for _ in range(3):  # prepared: the first run through the Python audit, the others through the lane
                conn.execute("SELECT id FROM loans", prepare=True)

        def spooled() -> list:  # type: ignore[type-arg]
            with Spool(proxy.spool_path) as spool:
                return [decode(e.body) for e in spool.peek(100_000)]

        def beat_with_exclusions() -> AgentHeartbeat | None:
            beats = [e for e in spooled() if isinstance(e, AgentHeartbeat)]
            good = [b for b in beats if b.payload.excluded.get("pg.application.nightly-backup") == 1
                    and b.payload.excluded.get("pg.object.public.audit_noise") == 2
                    and b.payload.activity.get("pg.lane_fast", 0) >= 2]
            return good[-1] if good else None

        wait_for(beat_with_exclusions, 30, "a heartbeat counting both exclusions and the lane's round trips")
    finally:
        proxy.stop()
    events = spooled()
    queries = [e for e in events if isinstance(e, DbQuery) and e.payload.database == name]
    assert [(q.payload.application_name, q.payload.tables_read) for q in queries] == [
        ("loans-web:alice", ["public.loans"]), ("teller", ["public.loans"])] + [("prepared", ["public.loans"])] * 3
    assert queries[0].actor.end_user == "alice" and queries[1].actor.end_user is None
    sessions = [e for e in events if isinstance(e, DbSession)]
    assert {e.payload.application_name for e in sessions} == {"loans-web:alice", "teller", "prepared"}


def test_configuration_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="listeners\\[0\\] -> upstream"):
        proxy_config("pg", {"type": "proxy", "listeners": [{"listen": "127.0.0.1:1", "upstream": "nowhere"}]})
    with pytest.raises(ConfigError, match="sources -> pg -> fail_closed"):
        proxy_config("pg", {"type": "proxy", "fail_closed": "sometimes"})
    with pytest.raises(ConfigError, match="customer_key_secret"):
        proxy_config("pg", {"type": "proxy", "customer_keys": ["public.c.id"]}).secret(env={})
    with pytest.raises(AssertionError, match="--listen and --upstream go together"):
        run_cli("agent", "proxy", "--listen", "127.0.0.1:1", env=base_env())
    assert msgspec.structs.asdict(proxy_config("pg", {"type": "proxy"}))["fail_closed"] is False


def test_spool_writer_process_is_restarted_after_a_kill_and_events_go_on(tmp_path: Path, pg_url: str) -> None:
    import signal

    from agent.proxy.config import Listener, ProxyConfig
    from agent.proxy.server import ProxyServer

    spool = Spool(tmp_path / "spool" / "spool.sqlite3", synchronous="NORMAL")
    config = ProxyConfig(listeners=[Listener(listen="127.0.0.1:0", upstream=UPSTREAM)], flush_interval="20ms")
    server = ProxyServer(config, spool, name="pg", spool_process="NORMAL")
    server.start()
    url = f"postgresql://postgres@127.0.0.1:{server.address()[1]}/{dbname(pg_url)}"

    def stored(marker: str) -> bool:
        return any(isinstance(e, DbQuery) and marker in e.payload.statement
                   for e in (decode(x.body) for x in spool.peek(100_000)))

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT 1 AS before_kill")
            wait_for(lambda: stored("before_kill"), 20, "the first event, through the writer process")
            child = server.writer.sink.proc  # type: ignore[union-attr]
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            conn.execute("SELECT 2 AS after_kill")
            wait_for(lambda: stored("after_kill"), 20, "an event after the writer process was killed")
        assert server.counters()["errors"]["spool_process_restarts"] == 1
    finally:
        server.stop()
        spool.close()
