"""The collector's tamper evidence, wired into ingest and the scheduler: each agent's hash chain and heartbeats
judged as batches arrive, and on schedule the ledger sealed, silent agents and database-proxy bypass looked for.

`on_ingest` runs after a batch is durable and never fails it: what it cannot judge now is logged and counted
(an agent that sends again is judged again, as its events then arrive as duplicates past the chain's head).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from sqlalchemy import Engine

from agent.events import Envelope
from collector import chain
from collector.config import CollectorConfig

log = logging.getLogger("custos.integrity")


class IntegrityWatch:
    def __init__(self, engine: Engine, config: CollectorConfig) -> None:
        self.engine = engine
        self.config = config.integrity
        self.failures = 0  # checks that could not run (database errors); each logged
        self.alerts = 0

    def on_ingest(self, agent: str, body: bytes, events: Sequence[tuple[int, Envelope]], inserted: Collection[str],
                  refused: int = 0) -> None:
        """Judge a stored batch sent by the credential `agent`: `events` as (index in the batch, event), `body` the
        batch as received (decompressed), `inserted` the ids new to the store, `refused` how many were refused."""
        try:
            self.alerts += len(chain.check(self.engine, agent, chain.links(body, events, inserted), refused))
        except Exception:  # noqa: BLE001 - the batch is stored; a check that fails must not fail the agent
            self.failures += 1
            log.exception("integrity checks of a batch from %s failed", agent)
