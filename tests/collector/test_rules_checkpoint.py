"""The rule-state checkpoint written beside evaluation: evaluation goes on while a checkpoint is being written,
and a restart resumes from exactly the checkpointed cursor with the checkpointed state (never a mix of it and
what was evaluated during the write). A write that fails is written by the next checkpoint. Every slot can be
stored on PostgreSQL, including the linkage rules' counts of everyone (once kept under NUL keys)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from collector.alerts import AlertStore
from collector.db import make_engine, rule_cursors, rule_state
from collector.migrate import upgrade
from collector.rules_runtime import RuleRuntime
from collector.rules_state import Snapshot, import_directory
from collector.store import EventStore
from rules.identity import Person
from rules.kinds.linkage import EVERYONE
from rules.parse import load_rules
from rules.testing import build_events

PEOPLE = [Person("alice", "Alice Berg", "loans", db_users=("alice",), os_users=("alice",))]
RULE = "custos.bulk_sensitive_read"


@pytest.fixture
def db(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    upgrade(engine)
    import_directory(engine, PEOPLE)
    yield engine
    engine.dispose()


def bulk(at: str, rows: int) -> list:  # type: ignore[type-arg]
    return build_events([{"who": "alice", "rows": rows, "classes": ["card_number"], "at": at}])


class GatedWrite:
    """Holds the real `StoreState.write` of a runtime until `release` (or fails it once when `fail`)."""

    def __init__(self, rt: RuleRuntime, *, fail: bool = False) -> None:
        self.real = rt.state.write
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        rt.state.write = self  # type: ignore[method-assign]

    def __call__(self, snap: Snapshot, conn: Any = None) -> int:
        self.entered.set()
        assert self.release.wait(30), "the test never released the checkpoint write"
        if self.fail:
            self.fail = False
            raise RuntimeError("the store refused the checkpoint")
        return self.real(snap, conn)


def stored_cursor(engine: Engine) -> int | None:
    with engine.connect() as conn:
        return conn.scalar(select(rule_cursors.c.last_seq).where(rule_cursors.c.name == "stream"))


def stored_window_events(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        docs = [json.loads(d) for (d,) in conn.execute(select(rule_state.c.data).where(rule_state.c.rule_id == RULE))]
    return {e for doc in docs for e in doc["e"]}


def test_evaluation_goes_on_while_a_checkpoint_is_written_and_a_restart_resumes_from_it(db: Engine) -> None:
    store = EventStore(db)
    before = bulk("2026-03-02T10:00:00Z", 3000)
    store.insert(before, agent="proxy-1")
    rt = RuleRuntime(db, load_rules())
    rt.drain()
    checkpointed_seq = rt.max_seq
    gate = GatedWrite(rt)
    rt.checkpoint(wait=False)
    assert gate.entered.wait(30)

    during = bulk("2026-03-02T10:30:00Z", 2500)  # completes the window: 5,500 rows in the hour
    store.insert(during, agent="proxy-1")
    rt.drain()  # evaluation is not held by the checkpoint being written
    (alert,) = AlertStore(db).list()
    assert alert.rule_id == RULE and rt.stats.evaluated == 2 and rt.max_seq > checkpointed_seq
    assert stored_cursor(db) is None and rt.stats.checkpoints == 0  # nothing written yet

    gate.release.set()
    rt.wait_checkpoint()
    assert rt.stats.checkpoints == 1
    # The snapshot as of the point it was taken: the cursor and the state of the first event only.
    assert stored_cursor(db) == checkpointed_seq
    assert stored_window_events(db) == {before[0].id}

    again = RuleRuntime(db, load_rules())  # a restart: resumes exactly from the checkpoint
    assert again.max_seq == checkpointed_seq
    again.drain()
    assert again.stats.evaluated == 1  # only the event evaluated during the write is evaluated again
    window = again.state.peek(RULE, "window", "alice")
    assert window is not None and set(window.eids) == {before[0].id, during[0].id}
    assert len(AlertStore(db).list()) == 1  # the same alert, not a second one


def test_a_failed_checkpoint_write_is_written_by_the_next_checkpoint(db: Engine) -> None:
    store = EventStore(db)
    first = bulk("2026-03-02T10:00:00Z", 3000)
    store.insert(first, agent="proxy-1")
    rt = RuleRuntime(db, load_rules())
    rt.drain()
    gate = GatedWrite(rt, fail=True)
    rt.checkpoint(wait=False)
    gate.release.set()
    rt.wait_checkpoint()
    assert rt.stats.checkpoints == 0 and rt.stats.failures == 1 and stored_cursor(db) is None

    rt.checkpoint()  # nothing changed since, yet the slot the failed write held is written now
    assert rt.stats.checkpoints == 1 and stored_cursor(db) == rt.max_seq
    assert stored_window_events(db) == {first[0].id}


def test_linkage_counts_of_everyone_are_checkpointed_and_restored(db: Engine) -> None:
    """Their group keys are stored as text on PostgreSQL too (which refuses NUL in text)."""
    EventStore(db).insert(build_events([{"who": "alice", "customers": 3}]), agent="proxy-1")
    rt = RuleRuntime(db, load_rules())
    rt.drain()
    rt.checkpoint()
    again = RuleRuntime(db, load_rules())
    everyone = again.state.peek("custos.read_then_fraud", "series", EVERYONE)
    assert everyone is not None and sum(everyone.totals.values()) == 3


def test_linkage_state_kept_under_the_old_nul_keys_is_moved_at_the_next_checkpoint(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'custos.db'}")
    upgrade(engine)
    EventStore(engine).insert(build_events([{"who": "alice", "customers": 2}]), agent="proxy-1")
    rt = RuleRuntime(engine, load_rules())
    rt.drain()
    rt.checkpoint()
    with engine.begin() as conn:  # as an earlier version stored it
        conn.execute(update(rule_state).where(rule_state.c.group_key == EVERYONE).values(group_key="\x00all"))
    again = RuleRuntime(engine, load_rules())
    again.checkpoint()
    with engine.connect() as conn:
        groups = {g for (g,) in conn.execute(select(rule_state.c.group_key).where(
            rule_state.c.rule_id == "custos.read_then_fraud", rule_state.c.part == "series"))}
    assert EVERYONE in groups and "\x00all" not in groups
    assert sum(again.state.peek("custos.read_then_fraud", "series", EVERYONE).totals.values()) == 2
    engine.dispose()
