"""The running agent: one spool, one shipper, the heartbeat, and whatever sources are configured.

Only one process ships a given spool at a time (an exclusive lock on `ship.lock` beside it); other processes
that write to the same spool (a database proxy started separately, `custos-agent emit`) only write.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Protocol

from agent.config import AgentConfig
from agent.events import Envelope, encode
from agent.heartbeat import Heartbeat
from agent.ship import ShipConfig, Shipper
from agent.spool import Spool
from agent.units import parse_duration, parse_size

log = logging.getLogger("custos.agent")


class Source(Protocol):
    """A sensor: started with the spool it writes to, stopped on shutdown. Counters go into heartbeats."""

    name: str

    def start(self, spool: Spool) -> None: ...

    def stop(self) -> None: ...

    def counters(self) -> dict[str, dict[str, int]]: ...


def spool_events(spool: Spool, events: Iterable[Envelope], *, cursor: tuple[str, str] | None = None) -> int:
    """Encode and queue events (and a source cursor) in one spool transaction."""
    return spool.put(((e.id, encode(e)) for e in events), cursor=cursor)


def open_spool(config: AgentConfig) -> Spool:
    return Spool(
        config.spool_path,
        max_events=config.spool.max_events,
        max_bytes=parse_size(config.spool.max_bytes),
        overflow=config.spool.overflow,
        synchronous=config.spool.synchronous,
    )


def ship_config(config: AgentConfig) -> ShipConfig:
    return ShipConfig(
        url=config.collector.url,
        token=config.token(),
        batch_max_events=config.ship.batch_max_events,
        batch_max_bytes=parse_size(config.ship.batch_max_bytes),
        batch_max_age=parse_duration(config.ship.batch_max_age),
        timeout=parse_duration(config.collector.timeout),
        backoff_base=parse_duration(config.ship.backoff_base),
        backoff_max=parse_duration(config.ship.backoff_max),
        ca_file=config.collector.ca_file,
    )


class ShipLock:
    """An exclusive, non-blocking lock on the spool's shipping; released when the process dies."""

    def __init__(self, spool_dir: Path) -> None:
        self.path = spool_dir / "ship.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        sources: Iterable[Source] = (),
        config_text: bytes = b"",
        ship: bool = True,
        lock_retry: float = 5.0,
    ) -> None:
        self.config = config
        self.spool = open_spool(config)
        self.sources = list(sources)
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ship = ship
        self._lock = ShipLock(Path(config.spool.dir))
        self._lock_retry = lock_retry
        self.shipper: Shipper | None = None
        self.heartbeat = Heartbeat(
            self.spool, agent_id=config.agent_id, config_text=config_text, counters=self._counters,
            interval=parse_duration(config.heartbeat.interval),
        )

    def _counters(self) -> dict[str, dict[str, int]]:
        merged: dict[str, dict[str, int]] = {"errors": {}, "excluded": {}, "shed": {}, "activity": {}}
        for source in self.sources:
            try:
                for group, values in source.counters().items():
                    for k, v in values.items():
                        merged.setdefault(group, {})[f"{source.name}.{k}"] = v
            except Exception:  # noqa: BLE001 - a broken source must not stop the heartbeat
                log.exception("source %s could not report its counters", source.name)
        if self.shipper is not None:
            for k, v in self.shipper.stats.errors.items():
                merged["errors"][f"ship.{k}"] = v
        return merged

    def start(self) -> None:
        if self._ship:
            if self._lock.acquire():
                self._start_shipping()
            else:
                log.warning("another process ships %s; this one only writes to it until that one stops",
                            self.config.spool_path)
                self._spawn("ship-lock", self._wait_for_ship_lock)
        for source in self.sources:
            source.start(self.spool)
            log.info("source %s started", source.name)
        # After the sources: the first heartbeat tells the collector that every sensor is up.
        interval = parse_duration(self.config.heartbeat.interval)
        if interval > 0:
            self._spawn("heartbeat", self._beat, interval)

    def _start_shipping(self) -> None:
        self.shipper = Shipper(self.spool, ship_config(self.config))
        self._spawn("shipper", self.shipper.run, self.stop_event)

    def _wait_for_ship_lock(self) -> None:
        """Take over shipping when the process that held the lock is gone (an old agent still draining when
        this one started), so that a spool is never left without a shipper."""
        while not self.stop_event.wait(self._lock_retry):
            if self._lock.acquire():
                log.info("this process now ships %s", self.config.spool_path)
                self._start_shipping()
                return

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=f"custos-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def _beat(self, interval: float) -> None:
        while not self.stop_event.is_set():
            try:
                spool_events(self.spool, [self.heartbeat.make()])
            except Exception:  # noqa: BLE001 - keep beating; a missing heartbeat is itself an alarm
                log.exception("heartbeat failed")
            self.stop_event.wait(interval)

    def stop(self, drain_seconds: float = 5.0) -> None:
        for source in self.sources:
            try:
                source.stop()
            except Exception:  # noqa: BLE001
                log.exception("source %s did not stop cleanly", source.name)
        self.stop_event.set()
        self.spool.new_data.set()  # wake an idle shipper now rather than at its next poll
        for t in self._threads:
            t.join(timeout=max(drain_seconds, 1.0) + 35)
        if self.shipper is not None:
            self.shipper.drain(time.time() + drain_seconds)
            self.shipper.close()
        self._lock.release()
        self.spool.close()

    def run_forever(self) -> None:
        """Start, then wait for SIGTERM or SIGINT and stop cleanly."""
        done = threading.Event()

        def _signal(signum: int, frame: object) -> None:
            log.info("signal %d: stopping", signum)
            done.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        self.start()
        log.info("custos agent %s running; spool %s", self.config.agent_id, self.config.spool_path)
        while not done.wait(1.0):
            pass
        self.stop()
