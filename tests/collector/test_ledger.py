"""The ledger: stored events and alerts sealed into chained blocks, and `custos verify` naming exactly what was
changed, deleted, inserted or rewritten afterwards — on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy import event as sa_event

from agent import events as ev
from collector.alerts import AlertStore
from collector.db import events, ledger_blocks, make_engine
from collector.integrity import integrity_alert
from collector.migrate import upgrade
from collector.ledger import (
    EVENT_COLUMNS,
    GENESIS,
    Publisher,
    block_of,
    block_root,
    digest_leaf,
    merkle_root,
    pack_leaves,
    read_ledger_file,
    seal,
    stored_event_digest,
    unpack_leaves,
)
from collector.store import EventStore
from collector.verify import verify
from tests.helpers.api import query_event
from tests.helpers.procs import base_env

T0 = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.timezone.utc)


def store_events(engine: Engine, n: int) -> None:
    EventStore(engine).insert([query_event(ts=T0 + dt.timedelta(seconds=i)) for i in range(n)], agent="agent-1")


def store_alert(engine: Engine, anchor: str) -> None:
    AlertStore(engine).save([integrity_alert("custos.chain_gap", "Events missing", "agent-1", anchor=anchor, ts=T0,
                                             summary="Agent agent-1: numbers missing.")])


def seal_now(engine: Engine, ledger: Path, max_records: int = 100_000) -> int:
    blocks = seal(engine, Publisher(str(ledger)), settle=0.0, max_records=max_records)
    return len(blocks)


def seqs(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(s) for s in conn.scalars(select(events.c.seq).order_by(events.c.seq))]


def problems(engine: Engine, ledger: Path | None) -> list[tuple[str, str, int]]:
    return [(p.what, p.kind, p.key) for p in verify(engine, ledger_file=ledger).problems]


@pytest.fixture
def sealed(engine: Engine, tmp_path: Path) -> Path:
    """Three blocks: events 1–4 with an alert, events 5–8 with a gap the store left (seq 6), events 9–10."""
    ledger = tmp_path / "ledger.jsonl"
    store_events(engine, 4)
    store_alert(engine, "a1")
    assert seal_now(engine, ledger) == 1
    store_events(engine, 5)
    with engine.begin() as conn:  # a row gone before it is sealed leaves the kind of gap PostgreSQL sequences do
        conn.execute(delete(events).where(events.c.seq == seqs(engine)[5]))
    assert seal_now(engine, ledger) == 1
    store_events(engine, 2)
    assert seal_now(engine, ledger) == 1
    return ledger


def test_untouched_data_verifies_clean(engine: Engine, sealed: Path) -> None:
    report = verify(engine, ledger_file=sealed)
    assert report.problems == []
    assert (report.blocks, report.records) == (3, 11)  # 10 events, 1 alert
    assert sorted(read_ledger_file(sealed)) == [1, 2, 3]


def test_an_edited_event_is_named_as_changed(engine: Engine, sealed: Path) -> None:
    target = seqs(engine)[1]
    with engine.begin() as conn:  # the insider makes someone else the reader
        conn.execute(update(events).where(events.c.seq == target).values(staff_id="someone-else"))
    assert problems(engine, sealed) == [("changed", "event", target)]


def test_an_event_time_moved_by_one_microsecond_is_named_as_changed(engine: Engine, sealed: Path) -> None:
    target = seqs(engine)[2]
    with engine.begin() as conn:
        conn.execute(update(events).where(events.c.seq == target).values(ts=T0 + dt.timedelta(microseconds=3)))
    assert problems(engine, sealed) == [("changed", "event", target)]


def in_zone(url: str, zone: str) -> Engine:
    """An engine whose sessions show times in `zone` (PostgreSQL gives timestamps in the session's zone)."""
    engine = make_engine(url)

    @sa_event.listens_for(engine, "connect")
    def _zone(dbapi_conn: Any, record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET TIME ZONE '{zone}'")
        dbapi_conn.commit()
    return engine


def test_a_record_sealed_in_one_session_zone_verifies_clean_in_another(pg_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    kolkata, honolulu = in_zone(pg_url, "Asia/Kolkata"), in_zone(pg_url, "Pacific/Honolulu")
    try:
        upgrade(kolkata)
        store_events(kolkata, 3)
        store_alert(kolkata, "a1")
        assert seal_now(kolkata, ledger) == 1
        assert problems(honolulu, ledger) == []
    finally:
        kolkata.dispose()
        honolulu.dispose()


def test_a_deleted_event_is_named(engine: Engine, sealed: Path) -> None:
    target = seqs(engine)[6]
    with engine.begin() as conn:
        conn.execute(delete(events).where(events.c.seq == target))
    assert problems(engine, sealed) == [("deleted", "event", target)]


def test_a_forged_event_inserted_into_a_sealed_range_is_named(engine: Engine, sealed: Path) -> None:
    with engine.connect() as conn:
        block2 = block_of(conn.execute(select(ledger_blocks).where(ledger_blocks.c.block_no == 2)).one())
    free = next(s for s in range(block2.event_after + 1, block2.event_to) if s not in seqs(engine))
    forged = query_event(ts=T0, staff_id="framed")
    with engine.begin() as conn:
        conn.execute(insert(events).values(
            seq=free, event_id=forged.id, kind="db.query", ts=T0, received_at=T0, agent="agent-1", host="db01",
            source_type="proxy", db_user="alice", staff_id="framed", body=ev.encode(forged).decode()))
    assert problems(engine, sealed) == [("inserted", "event", free)]


def test_an_edited_alert_is_named(engine: Engine, sealed: Path) -> None:
    from collector.db import alerts

    with engine.begin() as conn:
        conn.execute(update(alerts).values(severity="low", status="closed"))
    found = problems(engine, sealed)
    assert found == [("changed", "alert", 1)]  # the severity; the triage status is not sealed, it may change


def rewrite_from(engine: Engine, block_no: int) -> None:
    """What an insider with the database to themselves would do: re-seal the edited block and every one after
    it, so that records, leaves, Merkle roots and the chain all agree again."""
    with engine.begin() as conn:
        rows = list(conn.execute(select(ledger_blocks).where(ledger_blocks.c.block_no >= block_no)
                                 .order_by(ledger_blocks.c.block_no)))
        prev = conn.scalar(select(ledger_blocks.c.root).where(ledger_blocks.c.block_no == block_no - 1)) or GENESIS
        for row in rows:
            b = block_of(row)
            leaves = []
            for leaf in unpack_leaves(row.leaves):
                record = conn.execute(select(*EVENT_COLUMNS).where(events.c.seq == leaf.key)).one() \
                    if leaf.kind in (b"e", b"E") else None
                if record is None:
                    leaves.append(leaf)
                    continue
                digest = stored_event_digest(tuple(record))  # the stored digest made to agree as well
                conn.execute(update(events).where(events.c.seq == leaf.key).values(digest=digest))
                leaves.append(digest_leaf(leaf.key, digest))
            merkle = merkle_root([x.digest for x in leaves])
            root = block_root(b.block_no, b.sealed_at, b.event_after, b.event_to, b.alert_after, b.alert_to,
                              len(leaves), merkle, prev)
            conn.execute(update(ledger_blocks).where(ledger_blocks.c.block_no == b.block_no).values(
                leaves=pack_leaves(leaves), merkle_root=merkle, prev_root=prev, root=root))
            prev = root


def test_a_chain_rewritten_after_a_block_is_caught_by_the_ledger_file(engine: Engine, sealed: Path) -> None:
    target = seqs(engine)[5]  # in block 2
    with engine.begin() as conn:
        conn.execute(update(events).where(events.c.seq == target).values(staff_id="someone-else"))
    rewrite_from(engine, 2)
    assert problems(engine, None) == []  # the database agrees with itself again …
    found = problems(engine, sealed)  # … but not with the roots written outside it
    assert found == [("block", "block", 2), ("block", "block", 3)]
    with engine.connect() as conn:
        block2 = block_of(conn.execute(select(ledger_blocks).where(ledger_blocks.c.block_no == 2)).one())
    first = str(verify(engine, ledger_file=sealed).problems[0])
    assert "rewritten" in first and f"events {block2.event_after + 1}–{block2.event_to}" in first
    assert block2.event_after < target <= block2.event_to


def test_deleted_blocks_are_named(engine: Engine, sealed: Path) -> None:
    with engine.begin() as conn:
        conn.execute(delete(ledger_blocks).where(ledger_blocks.c.block_no == 3))
    found = problems(engine, sealed)
    assert ("block", "block", 3) in found


def test_a_backlog_is_sealed_in_blocks_of_the_configured_size(engine: Engine, tmp_path: Path) -> None:
    store_events(engine, 25)
    assert seal_now(engine, tmp_path / "l.jsonl", max_records=10) == 3
    assert verify(engine, ledger_file=tmp_path / "l.jsonl").problems == []


def test_records_younger_than_the_settle_time_wait_for_the_next_block(engine: Engine, tmp_path: Path) -> None:
    store_events(engine, 3)
    assert seal(engine, Publisher(""), settle=3600, max_records=100) == []
    assert [b.records for b in seal(engine, Publisher(""), settle=0, max_records=100)] == [3]


def test_a_block_ends_at_the_last_settled_event_and_the_younger_ones_follow_in_the_next(engine: Engine) -> None:
    store_events(engine, 5)
    first, *_, last = seqs(engine)
    with engine.begin() as conn:  # the first three arrived an hour ago, the last two just now
        conn.execute(events.update().where(events.c.seq <= first + 2)
                     .values(received_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)))
    (older,) = seal(engine, Publisher(""), settle=600, max_records=100)
    assert (older.event_after, older.event_to, older.records) == (0, first + 2, 3)
    assert seal(engine, Publisher(""), settle=600, max_records=100) == []
    (younger,) = seal(engine, Publisher(""), settle=0, max_records=100)
    assert (younger.event_after, younger.event_to, younger.records) == (first + 2, last, 2)


def test_block_roots_go_to_syslog(engine: Engine) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        publisher = Publisher("", f"127.0.0.1:{server.getsockname()[1]}")
        try:
            store_events(engine, 2)
            (block,) = seal(engine, publisher, settle=0, max_records=100)
            message = server.recv(65536).decode()
        finally:
            publisher.close()
    assert "custos-ledger:" in message
    assert json.loads(message.split("custos-ledger: ", 1)[1])["root"] == block.root


def run_verify(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "verify", *args], capture_output=True, text=True,
                          env=base_env(CUSTOS_DATABASE_URL=db_url), timeout=120)


def test_custos_verify_exits_zero_when_clean_and_one_naming_what_changed(engine: Engine, sealed: Path,
                                                                         db_url: str) -> None:
    ok = run_verify(db_url, "--ledger-file", str(sealed))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 blocks, 11 records checked" in ok.stdout and "clean" in ok.stdout
    target = seqs(engine)[2]
    with engine.begin() as conn:
        conn.execute(delete(events).where(events.c.seq == target))
    bad = run_verify(db_url, "--ledger-file", str(sealed))
    assert bad.returncode == 1
    assert f"deleted: event {target} " in bad.stdout
    later = run_verify(db_url, "--ledger-file", str(sealed), "--since", "2999-01-01")
    assert later.returncode == 0  # no block was sealed since then


def test_sealing_runs_in_a_process_of_its_own_on_postgresql_unless_configured_otherwise() -> None:
    from collector.integrity_config import IntegritySection

    auto = IntegritySection()
    assert auto.sealer("postgresql://custos@db/custos") == "process"
    assert auto.sealer("postgresql+psycopg://custos@db/custos") == "process"
    assert auto.sealer("sqlite:///custos.db") == "thread"
    assert IntegritySection(seal_worker="thread").sealer("postgresql://custos@db/custos") == "thread"
    assert IntegritySection(seal_worker="process").sealer("sqlite:///custos.db") == "process"


@pytest.mark.parametrize("worker", ["thread", "process", "auto"])
def test_the_running_collector_seals_what_it_stores_on_schedule(db_url: str, tmp_path: Path, worker: str) -> None:
    from tests.helpers.api import served
    from tests.helpers.procs import wait_for

    ledger = tmp_path / "ledger.jsonl"
    config = tmp_path / "collector.toml"
    config.write_text(f'[integrity]\nseal_every = "1s"\nseal_settle = "0s"\nledger_file = "{ledger}"\n'
                      f'seal_worker = "{worker}"\n')

    def sealed_events() -> int:
        lines = read_ledger_file(ledger)
        return max((line["events"][1] for line in lines.values()), default=0)

    with served(tmp_path / "collector", db_url, config=config) as api:
        assert api.post_events(*(query_event() for _ in range(5))).status_code == 200
        wait_for(lambda: sealed_events() >= 5, 30, "the collector to seal the 5 events it stored")
        if worker == "auto":  # a process of its own on PostgreSQL, none on SQLite
            assert api.collector.proc is not None
            assert len(sealing_children(api.collector.proc.pid)) == (1 if db_url.startswith("postgresql") else 0)
        if worker == "process":  # a sealing process that dies is started again, and sealing goes on
            assert api.collector.proc is not None
            first = sealing_children(api.collector.proc.pid)
            assert len(first) == 1
            first[0].kill()
            assert api.post_events(*(query_event() for _ in range(3))).status_code == 200
            wait_for(lambda: sealed_events() >= 8, 60, "a new sealing process to seal the 3 events stored after")
            second = sealing_children(api.collector.proc.pid)
            assert len(second) == 1 and second[0].pid != first[0].pid
        report = verify(api.engine, ledger_file=ledger)
    assert report.problems == [] and report.records >= 5
    if worker == "process":  # the collector killed, its sealing process ends too
        wait_for(lambda: not second[0].is_running() or second[0].status() == psutil.STATUS_ZOMBIE, 30,
                 "the sealing process to end after its collector was killed")


def sealing_children(pid: int) -> list[psutil.Process]:
    """The processes the collector `pid` spawned (multiprocessing's resource tracker aside)."""
    return [p for p in psutil.Process(pid).children() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and any("spawn_main" in a for a in p.cmdline())]


# -- digests made at ingest ------------------------------------------------------------------------------------


def leaf_kinds(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return [leaf.kind for row in conn.execute(select(ledger_blocks.c.leaves).order_by(ledger_blocks.c.block_no))
                for leaf in unpack_leaves(row.leaves)]


def test_events_are_sealed_from_the_digest_stored_at_ingest(engine: Engine, sealed: Path) -> None:
    with engine.connect() as conn:
        rows = list(conn.execute(select(*EVENT_COLUMNS, events.c.digest).order_by(events.c.seq)))
    assert all(row.digest == stored_event_digest(tuple(row)[:-1]) for row in rows)
    assert leaf_kinds(engine) == [b"E"] * 4 + [b"a"] + [b"E"] * 6


def test_a_stored_digest_edited_alone_is_named(engine: Engine, sealed: Path) -> None:
    target = seqs(engine)[3]
    with engine.begin() as conn:
        conn.execute(update(events).where(events.c.seq == target).values(digest=b"\x01" * 32))
    assert problems(engine, sealed) == [("changed", "event", target)]
    assert "stored digest" in str(verify(engine, ledger_file=sealed).problems[0])


def test_an_event_edited_with_its_digest_made_to_match_is_named(engine: Engine, sealed: Path) -> None:
    target = seqs(engine)[4]
    with engine.begin() as conn:
        conn.execute(update(events).where(events.c.seq == target).values(host="elsewhere"))
        row = conn.execute(select(*EVENT_COLUMNS).where(events.c.seq == target)).one()
        conn.execute(update(events).where(events.c.seq == target).values(digest=stored_event_digest(tuple(row))))
    assert problems(engine, sealed) == [("changed", "event", target)]
    assert "differs from what was sealed" in str(verify(engine, ledger_file=sealed).problems[0])


def test_an_event_edited_before_it_is_sealed_is_named(engine: Engine, tmp_path: Path) -> None:
    """Sealing takes the digest made at ingest, not the row as it is by then: an edit in between shows."""
    ledger = tmp_path / "ledger.jsonl"
    store_events(engine, 3)
    target = seqs(engine)[1]
    with engine.begin() as conn:
        conn.execute(update(events).where(events.c.seq == target).values(staff_id="someone-else"))
    assert seal_now(engine, ledger) == 1
    assert problems(engine, ledger) == [("changed", "event", target)]


def test_two_events_swapped_with_their_leaves_are_named(engine: Engine, sealed: Path) -> None:
    """Each leaf names its event's place (`seq`) as well as its content: two events' rows swapped, and their
    leaves' keys swapped to match (the Merkle root is over the digests, which keep their order), still show."""
    a, b = seqs(engine)[0], seqs(engine)[1]
    names = [c.name for c in events.columns if c.name != "seq"]
    with engine.begin() as conn:
        row_a, row_b = (conn.execute(select(events).where(events.c.seq == s)).one()._mapping for s in (a, b))
        conn.execute(update(events).where(events.c.seq == a).values(event_id="moving"))
        conn.execute(update(events).where(events.c.seq == b).values({n: row_a[n] for n in names}))
        conn.execute(update(events).where(events.c.seq == a).values({n: row_b[n] for n in names}))
        blob = conn.scalar(select(ledger_blocks.c.leaves).where(ledger_blocks.c.block_no == 1))
        leaves = unpack_leaves(blob)
        keyed = {a: b, b: a}
        moved = [replace(leaf, key=keyed.get(leaf.key, leaf.key)) if leaf.kind == b"E" else leaf for leaf in leaves]
        conn.execute(update(ledger_blocks).where(ledger_blocks.c.block_no == 1).values(leaves=pack_leaves(moved)))
    assert problems(engine, sealed) == [("changed", "event", a), ("changed", "event", b)]


def test_a_database_migrated_with_events_stored_before_digests_still_seals_and_verifies(db_url: str,
                                                                                        tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0006")
        old = [query_event(ts=T0 + dt.timedelta(seconds=i)) for i in range(3)]
        with engine.begin() as conn:  # rows as the collector stored them before migration 0007
            for e in old:
                conn.execute(insert(events).values(
                    event_id=e.id, kind="db.query", ts=e.ts, received_at=T0, agent="agent-1", host="db01",
                    source_type="proxy", db_user="alice", body=ev.encode(e).decode()))
        upgrade(engine)
        assert seal_now(engine, ledger) == 1  # their leaves as before: from their columns
        store_events(engine, 2)
        assert seal_now(engine, ledger) == 1
        assert leaf_kinds(engine) == [b"e"] * 3 + [b"E"] * 2
        assert problems(engine, ledger) == []
        store_events(engine, 1)  # a block holding both: an event without a digest sealed from its columns
        with engine.begin() as conn:
            conn.execute(update(events).where(events.c.seq == seqs(engine)[-1]).values(digest=None))
            conn.execute(insert(events).values(
                event_id=query_event().id, kind="db.query", ts=T0, received_at=T0, agent="agent-1", host="db01",
                source_type="proxy", db_user="alice", body=ev.encode(query_event()).decode()))
        assert seal_now(engine, ledger) == 1
        assert problems(engine, ledger) == []
        first = seqs(engine)[0]
        with engine.begin() as conn:
            conn.execute(update(events).where(events.c.seq == first).values(staff_id="someone-else"))
        assert problems(engine, ledger) == [("changed", "event", first)]
    finally:
        engine.dispose()
