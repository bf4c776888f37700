"""10,000 statements through a real server's audit log, a real `custos-agent run` tailing it and a real collector,
with the log rotated by rename and by copy-and-truncate during the stream, and the agent killed with SIGKILL in
the middle (and the log rotated again while it is down): every statement arrives in the collector exactly once.

Proof: the collector's store, read back through its API. Each statement carries its number as a column alias
(`SELECT id AS q1234 …`), which survives redaction, so the test checks the set of numbers stored, not only the count.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.agent.tailers.mariadb_audit import admin, audited_user, connect, rotate_now, writable_dir
from tests.agent.tailers.pgcluster import PgCluster
from tests.helpers.procs import AgentProcess, Collector, wait_for

N = 10_000
ALIAS = re.compile(r"\bAS q(\d+)\b")


def stored_queries(collector: Collector, token: str, user: str) -> Counter[int]:
    """How many times each statement number is in the collector's store."""
    seen: Counter[int] = Counter()
    after = None
    for _ in range(100):
        params: dict[str, Any] = {"kind": "db.query", "limit": 10_000}
        if after is not None:
            params["after"] = after
        body = httpx.get(f"{collector.url}/api/v1/events", params=params,
                         headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        for row in body["events"]:
            event = row["event"]
            m = ALIAS.search(event["payload"]["statement"])
            if event["actor"].get("db_user") == user and m:
                seen[int(m.group(1))] += 1
        after = body["next_after"]
        if after is None:
            return seen
    raise AssertionError("more pages than expected")


def copytruncate(log: Path, copy: Path) -> None:
    """What logrotate's copytruncate does: copy the file, then truncate it in place."""
    shutil.copyfile(log, copy)
    with open(log, "r+b") as f:
        f.truncate(0)


@contextmanager
def pipeline(tmp_path: Path, source: str) -> Iterator[tuple[Collector, str, AgentProcess]]:
    collector = Collector(tmp_path / "collector", f"sqlite:///{tmp_path / 'collector' / 'custos.db'}")
    try:
        collector.upgrade()
        agent_token = collector.enroll("db-host")
        api_token = collector.api_token("auditor")
        collector.start()
        config = tmp_path / "agent.toml"
        config.write_text('[ship]\nbatch_max_age = "200ms"\n\n' + source)
        agent = AgentProcess(tmp_path / "agent", collector.url, agent_token, config=config)
        try:
            yield collector, api_token, agent
        finally:
            agent.close()
    finally:
        collector.close()


def heartbeats(collector: Collector, token: str) -> int:
    body = httpx.get(f"{collector.url}/api/v1/events", params={"kind": "agent.heartbeat"},
                     headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    return len(body["events"])


def stream(run: Callable[[int], None], rotate: Callable[[], None], truncate: Callable[[], None],
           collector: Collector, api_token: str, agent: AgentProcess, user: str) -> None:
    agent.start()
    # A new agent reads the current log from its start, not the files rotated before it ran: the stream (and its
    # first rotation) begins once the agent is up, which its first heartbeat at the collector shows.
    wait_for(lambda: heartbeats(collector, api_token) >= 1, 60, "the agent's first heartbeat", interval=0.1)
    for i in range(N):
        if i == 2500:
            rotate()  # by rename, the agent running
        if i == 3000:
            wait_for(lambda: sum(stored_queries(collector, api_token, user).values()) >= 1500, 180,
                     "the first events at the collector", interval=0.5)
        if i == 4000:
            agent.kill()  # while it reads, spools and ships the statements just made
        if i == 5000:
            rotate()  # by rename again, the agent down
        if i == 6000:
            agent.start()
        if i == 7500:
            truncate()  # copy and truncate, the agent running
        run(i)
    wait_for(lambda: sum(stored_queries(collector, api_token, user).values()) >= N, 300, f"{N} events stored",
             interval=0.5)  # each look reads the whole store: do not look too often
    agent.stop()
    seen = stored_queries(collector, api_token, user)
    assert set(seen) == set(range(N)), sorted(set(range(N)) - set(seen))[:20]
    assert [i for i, n in seen.items() if n != 1] == []
    errors = httpx.get(f"{collector.url}/api/v1/events", params={"kind": "agent.parse_error"},
                       headers={"Authorization": f"Bearer {api_token}"}, timeout=30).json()["events"]
    assert errors == []  # no line unreadable, no gap left by the rotations


@pytest.mark.slow
@pytest.mark.mariadb
def test_mariadb_stream_with_rotations_and_sigkill_arrives_exactly_once(tmp_path: Path) -> None:
    log = writable_dir(tmp_path / "audit") / "server_audit.log"
    with audited_user(log) as (user, database):
        with admin() as root:
            root.cursor().execute(f"CREATE TABLE {database}.t (id INT PRIMARY KEY)")
            root.cursor().execute(f"INSERT INTO {database}.t VALUES {', '.join(f'({i})' for i in range(10))}")
        source = (f'[sources.maria]\ntype = "mariadb_audit"\npath = "{log}"\ntimezone = "UTC"\n'
                  'poll_interval = "50ms"\ngroup_wait = "500ms"\n')
        with pipeline(tmp_path, source) as (collector, api_token, agent), connect(user, database=database) as c:
            cur = c.cursor()
            stream(
                lambda i: cur.execute(f"SELECT id AS q{i} FROM t WHERE id = {i % 10}"),
                rotate_now,
                lambda: copytruncate(log, log.with_name(log.name + "-copy")),
                collector, api_token, agent, user,
            )
        assert (log.parent / "server_audit.log.1").exists() and (log.parent / "server_audit.log.2").exists()


@pytest.mark.slow
@pytest.mark.postgres
def test_pgaudit_stream_with_rotations_and_sigkill_arrives_exactly_once(pg_cluster: PgCluster, tmp_path: Path) -> None:
    log = pg_cluster.stderr_log
    generation = iter(range(1, 10))

    def rotate() -> None:
        # logrotate without copytruncate: rename, then ask the server to reopen its log
        log.rename(log.with_name(f"pg.log.{next(generation)}"))
        pg_cluster.rotate_logfile()

    source = (f'[sources.pg]\ntype = "pgaudit"\npath = "{log}"\nformat = "stderr"\n'
              f"log_line_prefix = '{pg_cluster_prefix()}'\npoll_interval = \"50ms\"\ngroup_wait = \"500ms\"\n")
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as c:
        c.execute("CREATE TABLE stream_t (id int PRIMARY KEY)")
        c.execute("INSERT INTO stream_t SELECT generate_series(0, 9)")
        with pipeline(tmp_path, source) as (collector, api_token, agent):
            stream(
                lambda i: c.execute(f"SELECT id AS q{i} FROM stream_t WHERE id = {i % 10}"),  # type: ignore[arg-type]
                rotate,
                lambda: copytruncate(log, log.with_name("pg.log-copy")),
                collector, api_token, agent, "postgres",
            )
    assert [p.name for p in sorted(log.parent.glob("pg.log?*"))] == ["pg.log-copy", "pg.log.1", "pg.log.2"]


def pg_cluster_prefix() -> str:
    from agent.tailers.pgaudit_stderr import RECOMMENDED_PREFIX

    return RECOMMENDED_PREFIX
