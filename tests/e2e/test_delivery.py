"""Delivery guarantees with real processes: a `custos serve` collector on an ephemeral loopback port, a
`custos-agent run` agent, real SIGKILLs, on SQLite and on PostgreSQL.

Heartbeats are switched off (`[heartbeat] interval = 0`) so that the store holds exactly the events the test
wrote, and the agent's backoff is capped at a second so that it finds a restarted collector quickly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from agent.ids import uuid7
from agent.spool import Spool
from collector.db import make_engine
from tests.helpers.procs import AgentProcess, Collector, run_cli, wait_for
from tests.helpers.relay import Relay
from tests.helpers.sample import query_event, spooled

FAST_POLL = 0.002  # seconds between looks at the spool's counters when a test must act right after an ack


def agent_toml(path: Path, *, batch: int, backoff_max: str = "1s") -> Path:
    path.write_text(
        f"""
agent_id = "e2e-agent"

[ship]
batch_max_events = {batch}
batch_max_age = "20ms"
backoff_base = "50ms"
backoff_max = "{backoff_max}"

[heartbeat]
interval = 0
"""
    )
    return path


class Store:
    """Reads the collector's database directly (also while the collector is dead)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    def ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(text("SELECT event_id FROM events"))]

    def counts(self) -> tuple[int, int]:
        """(rows, distinct event ids)"""
        with self.engine.connect() as conn:
            total, distinct = conn.execute(text("SELECT count(*), count(DISTINCT event_id) FROM events")).one()
        return int(total), int(distinct)

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class Setup:
    collector: Collector
    token: str
    store: Store


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Iterator[Setup]:
    """An upgraded database, an enrolled agent credential, and a collector that has run once (so its port is
    known to the agent) and is now stopped."""
    collector = Collector(tmp_path / "collector", db_url)
    store = Store(db_url)
    try:
        collector.upgrade()
        token = collector.enroll("agent-1")
        collector.start()
        collector.stop()
        yield Setup(collector, token, store)
    finally:
        collector.close()
        store.close()


def assert_stored_exactly_once(store: Store, expected: set[str]) -> None:
    total, distinct = store.counts()
    assert (total, distinct) == (len(expected), len(expected))
    assert set(store.ids()) == expected


def emit_lines(path: Path, n: int) -> list[str]:
    """Write `n` events as JSON lines for `custos-agent emit`, with ids chosen here so they can be checked."""
    ids = [uuid7() for _ in range(n)]
    with path.open("w") as f:
        for event_id in ids:
            f.write(json.dumps({
                "id": event_id, "kind": "db.query", "actor": {"db_user": "alice"},
                "payload": {"session_id": "s1", "statement_type": "SELECT", "fingerprint": "0f" * 8,
                            "statement": "SELECT name FROM customers WHERE id = $1",
                            "tables_read": ["customers"], "rows": 1},
            }) + "\n")
    return ids


def put_events(spool: Spool, n: int) -> set[str]:
    ids: set[str] = set()
    for start in range(0, n, 1000):
        entries = [spooled(query_event()) for _ in range(min(1000, n - start))]
        spool.put(entries)
        ids.update(eid for eid, _ in entries)
    return ids


def acknowledged_ids(spool: Spool, put: set[str]) -> set[str]:
    """Events that left the spool other than as refused: the ones the collector acknowledged."""
    waiting = {e.event_id for e in spool.peek(10_000_000)}
    dead = {eid for eid, _ in spool.dead_letters(limit=10_000_000)}
    return put - waiting - dead


@pytest.mark.slow
def test_20000_events_survive_collector_outage_and_two_sigkills_and_are_stored_once(
        setup: Setup, tmp_path: Path) -> None:
    collector, store = setup.collector, setup.store
    config = agent_toml(tmp_path / "agent.toml", batch=500)
    agent = AgentProcess(tmp_path / "agent", collector.url, setup.token, config=config)
    expected: set[str] = set()

    def emit(n: int) -> None:
        lines = tmp_path / f"events-{len(expected)}.jsonl"
        expected.update(emit_lines(lines, n))
        out = run_cli("agent", "emit", "--config", str(config), str(lines), env=agent.env, cwd=agent.workdir)
        assert f"queued {n} events" in out

    try:
        agent.start()
        emit(5000)  # the collector is down
        wait_for(agent.spool_path.exists, 30, "the agent's spool")
        with Spool(agent.spool_path) as spool:
            assert spool.stats().acked == 0

            collector.start()
            emit(5000)
            wait_for(lambda: spool.stats().acked >= 2000, 120, "2000 events acknowledged")
            collector.kill()  # SIGKILL 1
            acked_at_first_kill = spool.stats().acked
            emit(5000)

            collector.start()
            wait_for(lambda: spool.stats().acked >= acked_at_first_kill + 2000, 120, "2000 more acknowledged")
            collector.kill()  # SIGKILL 2
            emit(5000)
            assert spool.stats().depth > 0  # the kills left work behind

            collector.start()
            wait_for(lambda: spool.stats().acked == 20_000, 180, "all 20000 events acknowledged")
            st = spool.stats()
            assert (st.queued, st.acked, st.depth, st.dead, st.dropped) == (20_000, 20_000, 0, 0, 0)
        assert_stored_exactly_once(store, expected)
    finally:
        agent.close()


@pytest.mark.slow
def test_agent_killed_in_the_middle_of_a_batch_loses_nothing_and_stores_nothing_twice(
        setup: Setup, tmp_path: Path) -> None:
    collector, store = setup.collector, setup.store
    collector.start()
    relay = Relay(collector.port)
    agent = AgentProcess(tmp_path / "agent", relay.url, setup.token,
                         config=agent_toml(tmp_path / "agent.toml", batch=500))
    try:
        with Spool(agent.spool_path) as spool:
            expected = put_events(spool, 6000)
            for round_ in range(3):
                if round_ == 0:  # catch the very first batch
                    relay.hold_next_answer()
                    agent.start()
                else:  # let the restarted agent make progress, then catch it again
                    agent.start()
                    before = spool.stats().acked
                    wait_for(lambda: spool.stats().acked >= before + 1000, 60, "1000 events acknowledged")
                    relay.hold_next_answer()
                wait_for(relay.answer_held.is_set, 60, "a batch stored by the collector, its answer held")
                agent.kill()  # SIGKILL with the batch stored and its acknowledgement not received
                relay.release()
                stored = set(store.ids())
                acknowledged = acknowledged_ids(spool, expected)
                assert acknowledged <= stored
                assert len(stored - acknowledged) >= 500, "the agent was not caught between store and ack"
                expected |= put_events(spool, 200)  # sources keep writing while the agent is down

            agent.start()
            wait_for(lambda: spool.stats().depth == 0, 120, "the spool to empty")
            st = spool.stats()
            assert (st.queued, st.acked, st.dead, st.dropped) == (len(expected), len(expected), 0, 0)
        assert_stored_exactly_once(store, expected)
    finally:
        agent.close()
        relay.close()


# The collector's SIGKILL tests SQLite's durability most: there the killed process itself wrote the WAL, while
# PostgreSQL's commit is the server's and outlives any client. The full 50 kills run on SQLite; PostgreSQL gets
# 20, which keeps this file within its time budget (each kill costs a collector start, about a second).
KILLS = {"sqlite": 50, "postgresql": 20}


@pytest.mark.slow
def test_collector_killed_right_after_acknowledging_again_and_again_keeps_every_acknowledged_event(
        setup: Setup, tmp_path: Path, db_url: str) -> None:
    collector, store = setup.collector, setup.store
    kills = KILLS["sqlite" if db_url.startswith("sqlite") else "postgresql"]
    agent = AgentProcess(tmp_path / "agent", collector.url, setup.token,
                         config=agent_toml(tmp_path / "agent.toml", batch=20, backoff_max="250ms"))
    try:
        with Spool(agent.spool_path) as spool:
            expected = put_events(spool, 3000)
            agent.start()
            for _ in range(kills):
                if spool.stats().depth < 1000:  # keep acknowledgements coming until the last kill
                    expected |= put_events(spool, 2000)
                collector.start()
                acked = spool.stats().acked
                wait_for(lambda: spool.stats().acked > acked, 60, "an acknowledgement", interval=FAST_POLL)
                collector.kill()  # SIGKILL right after the agent recorded an acknowledgement
                acknowledged = acknowledged_ids(spool, expected)  # the spool first: the store only grows
                stored_rows = store.ids()
                assert len(stored_rows) == len(set(stored_rows))
                missing = acknowledged - set(stored_rows)
                assert not missing, f"{len(missing)} acknowledged events are not in the store"
            assert spool.stats().acked == len(acknowledged_ids(spool, expected))

            collector.start()
            wait_for(lambda: spool.stats().depth == 0, 180, "the spool to empty")
            assert spool.stats().acked == len(expected)
        assert_stored_exactly_once(store, expected)
    finally:
        agent.close()
