"""The rule engine inside the collector: store-backed state, restarts that forget nothing and send nothing twice,
directory imports, and alerts from events posted to a real collector process."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import msgspec
import pytest

from agent.events import encode
from collector.alerts import AlertStore
from collector.db import alerts as alerts_table
from collector.db import make_engine
from collector.migrate import upgrade
from collector.rules_runtime import RuleRuntime
from collector.rules_state import count_rows, import_assignments, import_directory
from collector.store import EventStore
from rules.identity import Person
from rules.parse import load_rules
from rules.testing import build_events, test_key
from tests.helpers.procs import Collector, wait_for

PEOPLE = [Person("alice", "Alice Berg", "loans", db_users=("alice",), os_users=("alice",)),
          Person("bob", "Bob Kalns", "loans", db_users=("bob",), os_users=("bob",))]


@pytest.fixture
def db(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def runtime(engine) -> RuleRuntime:  # type: ignore[no-untyped-def]
    return RuleRuntime(engine, load_rules())


def bulk(at: str, rows: int, who: str = "alice") -> list:  # type: ignore[type-arg]
    return build_events([{"who": who, "rows": rows, "classes": ["card_number"], "at": at}])


def test_a_window_spanning_a_restart_still_fires_once(db) -> None:  # type: ignore[no-untyped-def]
    import_directory(db, PEOPLE)
    store = EventStore(db)
    store.insert(bulk("2026-03-02T10:00:00Z", 3000), agent="proxy-1")
    first = runtime(db)
    first.drain()
    first.checkpoint()
    assert count_rows(db, alerts_table) == 0

    second = runtime(db)  # a new process: state and cursor come from the store
    store.insert(bulk("2026-03-02T10:30:00Z", 2500), agent="proxy-1")
    second.drain()
    (alert,) = AlertStore(db).list()
    assert alert.rule_id == "custos.bulk_sensitive_read" and alert.staff_id == "alice"
    assert second.stats.evaluated == 1  # the first event was not evaluated twice


def test_events_evaluated_again_after_a_crash_raise_no_duplicate_alerts(db) -> None:  # type: ignore[no-untyped-def]
    store = EventStore(db)
    store.insert(bulk("2026-03-02T10:00:00Z", 6000), agent="proxy-1")
    crashed = runtime(db)
    crashed.drain()  # alert stored, but the process dies before its checkpoint
    assert count_rows(db, alerts_table) == 1
    again = runtime(db)
    again.drain()
    assert again.stats.evaluated == 1 and count_rows(db, alerts_table) == 1


def test_directory_and_assignments_imports_reach_the_rules(db) -> None:  # type: ignore[no-untyped-def]
    rt = runtime(db)
    import_directory(db, PEOPLE)
    import_assignments(db, [("alice", test_key(f"c{i}")) for i in range(1, 21)], "loan_queue")
    rt.refresh_directory()
    EventStore(db).insert(build_events([{"who": "alice", "customers": 12, "customers_from": 500},
                                        {"who": "alice", "customers": 10}]), agent="proxy-1")
    rt.drain()
    (alert,) = AlertStore(db).list()
    assert alert.rule_id == "custos.outside_assignment" and alert.staff_id == "alice"
    assert "Alice Berg read 12 customers outside their work assignment" in alert.summary


def test_a_replayed_alert_within_the_suppression_period_is_not_stored_again(db) -> None:  # type: ignore[no-untyped-def]
    rs = load_rules()
    events = bulk("2026-03-02T10:00:00Z", 6000) + bulk("2026-03-02T10:20:00Z", 6000)
    from rules.engine import Engine
    from rules.state import MemoryState
    live = Engine(rs.rules, rs.context, MemoryState()).run(events[:1])
    replay = Engine(rs.rules, rs.context, MemoryState()).run(events[1:])  # completes on another event
    store = AlertStore(db)
    assert len(store.save(live)) == 1
    suppress = {r.id: r.suppress for r in rs.rules}
    assert store.save(replay, origin="replay", suppress=suppress) == []
    assert count_rows(db, alerts_table) == 1


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_an_event_posted_to_the_collector_becomes_an_alert(tmp_path: Path, sqlite_url: str, worker: str) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(f'[rules]\nworker = "{worker}"\n')
    collector = Collector(tmp_path / "c", sqlite_url, config=config)
    try:
        collector.upgrade()
        token = collector.enroll("proxy-1")
        collector.start()
        events = build_events([{"who": "carol", "rows": 1, "customers": ["canary-1"],
                                "at": dt.datetime.now(dt.timezone.utc).isoformat()}])
        body = b'{"events":[' + b",".join(encode(e) for e in events) + b"]}"
        r = httpx.post(f"{collector.url}/api/v1/events", content=body, timeout=10,
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert r.status_code == 200 and msgspec.json.decode(r.content)["accepted"] == 1
        engine = make_engine(sqlite_url)
        try:
            # the built-in honeytoken list is empty: the canary is not one here, so no alert may appear …
            EventStore(engine).insert(bulk(dt.datetime.now(dt.timezone.utc).isoformat(), 6000, "bob"),
                                      agent="proxy-1")
            # … while the bulk read stored behind the collector's back is picked up by its worker via seq
            alerts = wait_for(lambda: AlertStore(engine).list(), 20, "an alert from the collector's rule worker")
            assert [a.rule_id for a in alerts] == ["custos.bulk_sensitive_read"]
            # and one posted over HTTP is evaluated as well
            more = bulk(dt.datetime.now(dt.timezone.utc).isoformat(), 7000, "alice")
            r = httpx.post(f"{collector.url}/api/v1/events", content=b'{"events":[' + encode(more[0]) + b"]}",
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 200
            wait_for(lambda: len(AlertStore(engine).list()) == 2, 20, "the second alert")
            assert {a.group_key for a in AlertStore(engine).list()} == {"db:bob", "db:alice"}
        finally:
            engine.dispose()
    finally:
        collector.close()


def test_an_event_committed_after_a_later_seq_is_still_evaluated(pg_url: str) -> None:
    """On PostgreSQL a transaction can take seq N and commit after another took N+1 and committed: the worker
    remembers the hole and evaluates N when it appears."""
    from sqlalchemy import insert

    from collector.db import events as events_table

    engine = make_engine(pg_url)
    try:
        upgrade(engine)
        rt = runtime(engine)
        slow, fast = bulk("2026-03-02T10:00:00Z", 6000, "alice"), bulk("2026-03-02T10:00:00Z", 6000, "bob")

        def row(ev):  # type: ignore[no-untyped-def]
            return {"event_id": ev.id, "kind": "db.query", "ts": ev.ts, "received_at": ev.ts, "agent": "proxy-1",
                    "host": ev.host, "source_type": "proxy", "db_user": ev.actor.db_user, "body": encode(ev).decode()}
        with engine.connect() as first:
            tx = first.begin()
            first.execute(insert(events_table), [row(slow[0])])  # takes the lower seq, not yet committed
            EventStore(engine).insert(fast, agent="proxy-1")  # takes the next seq and commits
            rt.drain()
            assert [a.group_key for a in AlertStore(engine).list()] == ["db:bob"]
            assert len(rt.holes) == 1
            tx.commit()
        rt.drain()
        assert sorted(a.group_key for a in AlertStore(engine).list()) == ["db:alice", "db:bob"]
        assert rt.holes == {}
    finally:
        engine.dispose()


def test_a_killed_rule_worker_process_is_restarted_and_catches_up(tmp_path: Path, sqlite_url: str) -> None:
    import os
    import signal

    import psutil

    config = tmp_path / "collector.toml"
    config.write_text('[rules]\nworker = "process"\n')
    collector = Collector(tmp_path / "c", sqlite_url, config=config)
    engine = make_engine(sqlite_url)
    try:
        collector.upgrade()
        collector.start()
        assert collector.proc is not None

        def worker() -> psutil.Process | None:
            for kid in psutil.Process(collector.proc.pid).children():  # type: ignore[union-attr]
                try:
                    if "spawn_main" in " ".join(kid.cmdline()) and kid.status() != psutil.STATUS_ZOMBIE:
                        return kid
                except psutil.Error:  # gone, or a zombie not yet reaped
                    continue
            return None
        first = wait_for(worker, 20, "the rule worker process")
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: (w := worker()) is not None and w.pid != first.pid, 20, "a new rule worker process")
        EventStore(engine).insert(bulk(dt.datetime.now(dt.timezone.utc).isoformat(), 6000), agent="proxy-1")
        wait_for(lambda: AlertStore(engine).list(), 30, "an alert from the restarted worker")
    finally:
        engine.dispose()
        collector.close()
