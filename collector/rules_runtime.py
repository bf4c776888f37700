"""Running the rules beside ingest: a worker thread evaluates stored events in `seq` order and stores alerts.

Ingest calls `on_stored(n)` after its commit; that only wakes the worker, so it can neither fail nor slow an
acknowledgement. The worker reads new events from the store by `seq` (so nothing is missed, and a restart
resumes where the last checkpoint left off), evaluates them, stores their alerts at once, and checkpoints the
rule state with its cursor every `checkpoint_every` seconds: the changed slots are copied between two batches
and encoded and written by a thread of their own while evaluation goes on.

On PostgreSQL, sequence values are taken before commit, so a lower `seq` can become visible after a higher one.
Seqs skipped over are kept as *holes* and looked for again for `hole_ttl` seconds before they are given up
(a rolled-back insert, or a duplicate that `ON CONFLICT DO NOTHING` discarded, never appears).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Engine, or_, select
from sqlalchemy.exc import InterfaceError, OperationalError

from agent.events import Envelope, Event
from collector.alerts import AlertStore
from collector.db import events
from collector.config import CollectorConfig
from collector.rules_state import Snapshot as StateSnapshot
from collector.rules_state import StoreState, directory_version, load_assignments, load_directory, merged_directory
from rules.engine import Engine as RuleEngine
from rules.identity import Directory
from rules.parse import RuleSet, load_rules

log = logging.getLogger("custos.rules")
_decoder: msgspec.json.Decoder[Envelope] = msgspec.json.Decoder(Event)  # type: ignore[arg-type]


@dataclass
class RuntimeStats:
    evaluated: int = 0
    alerts: int = 0
    failures: int = 0  # worker loop errors (database down …), each retried
    checkpoints: int = 0
    last_seq: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds from event stored to its alert stored


class RuleRuntime:
    def __init__(self, engine: Engine, ruleset: RuleSet, *, checkpoint_every: float = 30.0, batch: int = 1000,
                 poll: float = 0.5, hole_ttl: float = 30.0, tick_every: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = engine
        self.ruleset = ruleset
        self.checkpoint_every = checkpoint_every
        self.batch = batch
        self.poll = poll
        self.hole_ttl = hole_ttl
        self.tick_every = tick_every
        self.clock = clock
        self.state = StoreState(engine)
        self.alert_store = AlertStore(engine)
        self._base_directory: Directory = ruleset.context.directory
        self._directory_version = -1
        self.engine = RuleEngine(ruleset.rules, ruleset.context, self.state)
        self.max_seq = self.state.last_seq
        self.holes: dict[int, float] = {h: time.monotonic() for h in self.state.holes}
        self.stats = RuntimeStats(last_seq=self.max_seq)
        self.suppress = {r.id: r.suppress for r in ruleset.rules}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one evaluation pass at a time (worker, or a caller's drain())
        self.started = clock()
        self._last_checkpoint = time.monotonic()
        self._last_tick = 0.0
        self._writer: threading.Thread | None = None  # the checkpoint being written while evaluation goes on
        self.refresh_directory()

    @classmethod
    def from_dirs(cls, engine: Engine, rule_dirs: list[str | Path] | None = None, **kwargs: object) -> RuleRuntime:
        return cls(engine, load_rules(rule_dirs or []), **kwargs)  # type: ignore[arg-type]

    # -- the ingest side --------------------------------------------------------------------------------------

    def on_stored(self, count: int = 1) -> None:
        """Tell the worker that new events are durable. Never blocks, never raises."""
        if count:
            self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="custos-rules", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        try:
            self.checkpoint()
        except Exception:  # noqa: BLE001 - shutting down: the next start re-evaluates from the last checkpoint
            log.exception("final rule-state checkpoint failed")

    def _run(self) -> None:
        self.serve(self._wake, self._stop)

    def serve(self, wake: Any, stop: Any) -> None:
        """The worker loop: wait for `wake` (or the poll interval), evaluate, tick, checkpoint; until `stop`.
        Both are threading or multiprocessing events."""
        backoff = 0.5
        while not stop.is_set():
            wake.wait(self.poll)
            wake.clear()
            try:
                while not stop.is_set() and self.drain_once():
                    pass
                self.maybe_tick()
                if time.monotonic() - self._last_checkpoint >= self.checkpoint_every:
                    self.checkpoint(wait=False)
                backoff = 0.5
            except (OperationalError, InterfaceError) as e:  # the store unreachable: say so in one line
                self.stats.failures += 1
                log.warning("rule evaluation paused: the database is unreachable (%s); retrying in %.1fs",
                            str(e.orig or e).splitlines()[0][:200], backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception:  # noqa: BLE001 - the worker must not die
                self.stats.failures += 1
                log.exception("rule evaluation pass failed; retrying in %.1fs", backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    # -- work --------------------------------------------------------------------------------------------------

    def refresh_directory(self) -> None:
        version = directory_version(self.db)
        if version != self._directory_version:
            self.ruleset.context.set_directory(merged_directory(self._base_directory, load_directory(self.db)))
            self.state.set_assignments(load_assignments(self.db))
            self._directory_version = version

    def _fetch(self) -> list[tuple[int, float, str]]:
        now = time.monotonic()
        for h in [h for h, seen in self.holes.items() if now - seen > self.hole_ttl]:
            del self.holes[h]
        cond = events.c.seq > self.max_seq
        if self.holes:
            cond = or_(cond, events.c.seq.in_(sorted(self.holes)[:1000]))
        q = select(events.c.seq, events.c.received_at, events.c.body).where(cond).order_by(events.c.seq).limit(
            self.batch)
        with self.db.connect() as conn:
            return [(int(s), r.timestamp(), b) for s, r, b in conn.execute(q)]

    def drain_once(self) -> int:
        """Evaluate one batch of stored events not yet seen; returns how many there were."""
        with self._lock:
            rows = self._fetch()
            if not rows:
                return 0
            now = time.monotonic()
            out = []
            received: dict[str, float] = {}
            for seq, received_at, body in rows:
                if seq in self.holes:
                    del self.holes[seq]
                elif seq > self.max_seq:
                    if seq > self.max_seq + 1 and len(self.holes) < 100_000:
                        for missing in range(self.max_seq + 1, min(seq, self.max_seq + 10_001)):
                            self.holes[missing] = now
                    self.max_seq = seq
                try:
                    event = _decoder.decode(body)
                except msgspec.DecodeError:
                    log.warning("stored event seq %d cannot be decoded; skipped", seq)
                    continue
                alerts = self.engine.evaluate(event)
                if alerts:
                    out.extend(alerts)
                    received[event.id] = received_at
            if out:
                saved = set(self.alert_store.save(out, origin="stream"))
                stored_at = self.clock()
                for a in out:
                    if a.alert_id in saved:
                        self.stats.alerts += 1
                        trigger = next((e for e in reversed(a.evidence) if e in received), None)
                        if trigger is not None and len(self.stats.latencies) < 1_000_000:
                            self.stats.latencies.append(stored_at - received[trigger])
            # Only now: what /metrics reports as evaluated has its alerts stored.
            self.stats.evaluated += len(rows)
            self.stats.last_seq = self.max_seq
            return len(rows)

    def maybe_tick(self) -> None:
        now = self.clock()
        if now - self._last_tick < self.tick_every:
            return
        self._last_tick = now
        self.refresh_directory()
        with self._lock:
            alerts = self.engine.tick(now, started=self.started)
            if alerts:
                self.stats.alerts += len(self.alert_store.save(alerts, origin="stream"))

    def checkpoint(self, *, wait: bool = True) -> None:
        """Write the rule state and its cursor as of the last evaluated batch, in one transaction.

        Evaluation is held only while the changed slots are copied (`StoreState.snapshot`); with `wait=False`
        the write runs in a thread of its own while evaluation goes on. Checkpoints are written one at a time,
        in order: each first waits for the previous write. A failed write marks its slots changed again, so the
        next checkpoint writes them (with its own, later cursor)."""
        self.wait_checkpoint()
        began = time.monotonic()
        with self._lock:
            snap = self.state.snapshot(self.max_seq, self.holes)
        self._last_checkpoint = time.monotonic()
        held = self._last_checkpoint - began
        if wait:
            self._write_checkpoint(snap, held, raising=True)
        else:
            self._writer = threading.Thread(target=self._write_checkpoint, args=(snap, held),
                                            name="custos-rules-checkpoint", daemon=True)
            self._writer.start()

    def wait_checkpoint(self) -> None:
        """Wait until the checkpoint being written (if any) is written or has failed."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def _write_checkpoint(self, snap: StateSnapshot, held: float, raising: bool = False) -> None:
        began = time.monotonic()
        try:
            size = self.state.write(snap)
        except Exception as e:
            with self._lock:
                self.state.unwritten(snap)
            self.stats.failures += 1
            if raising:
                raise
            log.warning("rule-state checkpoint failed (%s); its slots are written at the next one",
                        str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
            return
        self.stats.checkpoints += 1
        if len(snap):
            log.info("rule-state checkpoint as of seq %d: %d slots, %.1f MB; evaluation held %.3fs, written in %.2fs",
                     snap.last_seq, len(snap), size / 1e6, held, time.monotonic() - began)

    def drain(self, timeout: float = 60.0) -> None:
        """Evaluate everything stored so far (for commands and tests); bounded by `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.drain_once() and time.monotonic() < deadline:
            pass


def rule_runtime(config: CollectorConfig, engine: Engine) -> RuleRuntime | Any | None:
    """The collector's rule runtime: built-in rules plus the site's (`[rules] dir`), as a thread (default) or a
    process of its own (`[rules] worker = "process"`), or None when disabled. Invalid rule files stop the
    collector here, listing every problem."""
    if not config.rules.enabled:
        return None
    from rules.parse import load_rules_strict

    dirs = [config.rules.dir] if config.rules.dir else []
    ruleset = load_rules_strict(dirs)
    if config.rules.worker == "process":
        from collector.rules_process import RuleProcess

        return RuleProcess(config.database.url, dirs)
    return RuleRuntime(engine, ruleset)
