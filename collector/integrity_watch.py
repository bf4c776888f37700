"""The collector's tamper evidence, wired into ingest and the scheduler: each agent's hash chain and heartbeats
judged as batches arrive, and on schedule the ledger sealed, silent agents and database-proxy bypass looked for.

`checks` runs in the transaction that stores a batch (the chain head and newest heartbeat commit with the events,
in one commit) and never fails it: a check that fails is rolled back to its savepoint, logged and counted (an
agent that sends again is judged again, as its events then arrive as duplicates past the chain's head). Their
alerts are stored once the batch committed (`after`). SQLite has one writer, so batches of one agent are judged
one after the other; PostgreSQL locks the agent's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from agent.events import AgentHeartbeat, Envelope
from collector import bypass, chain, heartbeats
from collector.alerts import AlertStore
from collector.config import CollectorConfig
from collector.ledger import Publisher, seal
from collector.ledger_process import SealProcess
from collector.scheduler import IntervalJobs
from collector.store_write import Then
from rules.alerts import Alert

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
        # Each agent's chain head as this process last stored it: a batch that goes on from it is judged with one
        # conditional UPDATE (collector/chain.py `go_on`). A head that is stale (another collector moved it on,
        # or the batch's transaction rolled back) does not match the stored row, and the batch is judged in full.
        self.heads: dict[str, chain.Head] = {}

    def start(self) -> None:
        cfg = self.config
        self.publisher = Publisher(cfg.ledger_file, cfg.syslog)
        self.jobs = IntervalJobs("integrity")
        if cfg.sealer(self.url) == "process":
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

    def checks(self, agent: str, pieces: Sequence[bytes] | None, events: Sequence[tuple[int, Envelope]],
               refused: int = 0) -> Then:
        """The checks of a batch sent by the credential `agent`, to run in the transaction that stores it
        (`EventStore.insert(then=…)`), so that the agent's chain head and newest heartbeat commit with its events:
        `events` as (index in the batch, event), `pieces` each event's bytes as sent (None when the batch was
        read leniently), `refused` how many were refused. Each event's hash is taken here, before the write."""
        batch = chain.chained(pieces, events)
        skew = self.config.seconds("max_clock_skew")
        beats = any(isinstance(e, AgentHeartbeat) for _, e in events)

        def judge(conn: Connection, inserted: set[str]) -> list[Any]:
            try:
                head = self.heads.get(agent)
                # Almost every batch: one statement, without a savepoint (an error in that UPDATE is one the
                # batch's own write would meet in the same transaction).
                if head is not None and not beats:
                    moved = chain.go_on(conn, agent, head, batch, inserted)
                    if moved is not None:
                        self.heads[agent] = moved
                        return []
                # in a savepoint: a check that fails rolls back its own writes, never the batch's
                with conn.begin_nested():
                    head, found = chain.judge(conn, agent, batch, inserted, refused)
                    found += heartbeats.judge_batch(conn, agent, events, inserted, skew)
                if head is not None:
                    self.heads[agent] = head
                return found
            except Exception:  # noqa: BLE001 - the batch is stored; a check that fails must not fail the agent
                self.heads.pop(agent, None)
                self.failures += 1
                log.exception("integrity checks of a batch from %s failed", agent)
                return []
        return judge

    def after(self, agent: str, found: Sequence[Alert], *, sent_at: str | None = None) -> None:
        """Once the batch committed: store the alerts its checks found, and judge the agent's clock by
        `sent_at` (its Custos-Sent-At header)."""
        try:
            if found:
                self.alerts += len(AlertStore(self.engine).save(list(found)))
            self.alerts += len(heartbeats.skewed(self.engine, agent, sent_at, self.config.seconds("max_clock_skew")))
        except Exception:  # noqa: BLE001 - the batch is stored; a check that fails must not fail the agent
            self.failures += 1
            log.exception("integrity alerts of a batch from %s could not be stored", agent)

    def look_for_silence(self) -> None:
        self.alerts += len(heartbeats.silent(self.engine, self.config.silent_after_beats))

    def look_for_bypass(self) -> None:
        self.alerts += len(bypass.look(self.engine, grace=self.config.seconds("bypass_grace"),
                                       configured=self.config.upstreams))
