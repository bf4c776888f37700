"""The collector's tamper evidence, wired into ingest and the scheduler: each agent's hash chain and heartbeats
judged as batches arrive, and on schedule the ledger sealed, silent agents and database-proxy bypass looked for.

`on_ingest` runs after a batch is durable and never fails it: what it cannot judge now is logged and counted
(an agent that sends again is judged again, as its events then arrive as duplicates past the chain's head).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Engine

from agent.events import Envelope
from collector import bypass, chain, heartbeats
from collector.config import CollectorConfig
from collector.ledger import Publisher, seal
from collector.ledger_process import SealProcess
from collector.scheduler import IntervalJobs

log = logging.getLogger("custos.integrity")


class IntegrityWatch:
    def __init__(self, engine: Engine, config: CollectorConfig) -> None:
        self.engine = engine
        self.config = config.integrity
        self.url = config.database.url
        self.sealer: SealProcess | None = None
        self.failures = 0  # checks that could not run (database errors); each logged
        self.alerts = 0
        self.jobs: IntervalJobs | None = None
        self.publisher: Publisher | None = None
        # PostgreSQL locks an agent's row while its batch is judged; SQLite has no row locks, so batches of one
        # agent arriving at once (a resend after a timeout) are judged one after the other here.
        self._judging: Any = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    def start(self) -> None:
        cfg = self.config
        self.publisher = Publisher(cfg.ledger_file, cfg.syslog)
        self.jobs = IntervalJobs("integrity")
        if cfg.seal_worker == "process":
            self.sealer = SealProcess(self.url, cfg)
            self.sealer.start()
        else:
            self.jobs.add("ledger-seal", self.seal, cfg.seconds("seal_every"))
        self.jobs.add("silent-agents", self.look_for_silence, cfg.seconds("check_every"))
        self.jobs.add("proxy-bypass", self.look_for_bypass, cfg.seconds("check_every"))
        self.jobs.start()

    def stop(self) -> None:
        if self.sealer is not None:
            self.sealer.stop()
            self.sealer = None
        if self.jobs is not None:
            self.jobs.stop()
            self.jobs = None
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None

    def seal(self) -> None:
        """Seal what was stored since the last block (collector/ledger.py)."""
        if self.publisher is not None:
            seal(self.engine, self.publisher, settle=self.config.seconds("seal_settle"),
                 max_records=self.config.block_max_records)

    def on_ingest(self, agent: str, pieces: Sequence[bytes] | None, events: Sequence[tuple[int, Envelope]],
                  inserted: Collection[str], refused: int = 0, *, sent_at: str | None = None) -> None:
        """Judge a stored batch sent by the credential `agent`: `events` as (index in the batch, event), `pieces`
        each event's bytes as sent (None when the batch was read leniently), `inserted` the ids new to the store, `refused` how many were refused,
        `sent_at` the agent's clock when it sent the batch (its Custos-Sent-At header)."""
        skew = self.config.seconds("max_clock_skew")
        try:
            with self._judging:
                self.alerts += len(chain.check(self.engine, agent, chain.links(pieces, events, inserted), refused))
                self.alerts += len(heartbeats.observe(self.engine, agent, events, inserted, skew))
            self.alerts += len(heartbeats.skewed(self.engine, agent, sent_at, skew))
        except Exception:  # noqa: BLE001 - the batch is stored; a check that fails must not fail the agent
            self.failures += 1
            log.exception("integrity checks of a batch from %s failed", agent)

    def look_for_silence(self) -> None:
        self.alerts += len(heartbeats.silent(self.engine, self.config.silent_after_beats))

    def look_for_bypass(self) -> None:
        self.alerts += len(bypass.look(self.engine, grace=self.config.seconds("bypass_grace"),
                                       configured=self.config.upstreams))
