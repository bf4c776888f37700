"""The agent's heartbeat: proof of life with the numbers that show an agent being starved or tampered with."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping

from agent import __version__
from agent.events import AgentHeartbeat, Envelope, HeartbeatPayload, Source, new_event, utcnow
from agent.spool import Spool

try:  # psutil comes with the `agent` extra; without it the heartbeat leaves CPU and memory out
    import psutil
except ImportError:  # pragma: no cover - exercised only by a bare install
    psutil = None


class Heartbeat:
    def __init__(
        self,
        spool: Spool,
        *,
        agent_id: str,
        config_text: bytes = b"",
        counters: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float | None = None,
    ) -> None:
        self.spool = spool
        self.agent_id = agent_id
        self.config_hash = hashlib.sha256(config_text).hexdigest()[:16]
        self._counters = counters
        self.interval = interval if interval is not None and interval > 0 else None
        self._clock = clock
        self._started = clock()
        self._process = psutil.Process() if psutil else None
        if self._process is not None:
            self._process.cpu_percent(None)  # the first call only starts the measurement

    def make(self) -> Envelope:
        stats = self.spool.stats()
        extra = dict(self._counters() if self._counters else {})
        cpu = rss = None
        if self._process is not None:
            cpu = self._process.cpu_percent(None)
            rss = self._process.memory_info().rss
        payload = HeartbeatPayload(
            version=__version__,
            uptime_s=round(self._clock() - self._started, 3),
            spool_depth=stats.depth,
            spool_bytes=stats.bytes,
            dropped=stats.dropped,
            dead_lettered=stats.dead,
            monotonic=self.spool.next_heartbeat_number(),
            agent_clock=utcnow(),
            interval_s=self.interval,
            watches=sum(extra["watches"].values()) if extra.get("watches") else None,
            cpu_percent=cpu,
            rss_bytes=rss,
            config_hash=self.config_hash,
            errors=dict(extra.get("errors", {})),
            excluded=dict(extra.get("excluded", {})),
            shed=dict(extra.get("shed", {})),
            activity=dict(extra.get("activity", {})),
        )
        return new_event(AgentHeartbeat, payload, source=Source(type="agent"), agent_id=self.agent_id)
