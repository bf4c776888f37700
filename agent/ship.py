"""The shipper: takes the spool's oldest events to the collector in batches and deletes them once acknowledged.

A batch goes when it is full (`batch_max_events` or `batch_max_bytes`) or when its oldest event has waited
`batch_max_age`. The body is `{"events": [...]}` built from the spooled bytes as they are, gzip-compressed.

On the answer:
- 200: the acknowledged events (stored now, or stored before) leave the spool; events the collector refused as
  malformed move to the spool's dead table with the collector's reason, counted in heartbeats. Nothing is dropped.
- 413: the batch is split in two and each half sent; a single event still too large is dead-lettered.
- 429 / 503: wait as long as Retry-After says (at least), then the same batch again.
- 401 / 403: the credential is wrong or revoked; keep everything and retry slowly, loudly.
- anything else, or no answer: exponential backoff with full jitter, up to `backoff_max`, for as long as it takes.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import msgspec

from agent import __version__
from agent.spool import Spool, SpooledEvent

log = logging.getLogger("custos.agent.ship")

EVENTS_PATH = "/api/v1/events"


@dataclass(frozen=True)
class ShipConfig:
    url: str  # the collector's base URL, e.g. https://custos.bank.internal:8600
    token: str
    batch_max_events: int = 1000
    batch_max_bytes: int = 4 << 20
    batch_max_age: float = 1.0
    timeout: float = 30.0
    backoff_base: float = 0.5
    backoff_max: float = 300.0
    ca_file: str | None = None
    gzip_level: int = 1


class _Rejected(msgspec.Struct):
    index: int
    reason: str
    id: str | None = None


class _Ack(msgspec.Struct):
    accepted: int
    duplicates: int
    rejected: list[_Rejected] = []


@dataclass
class ShipStats:
    batches: int = 0
    shipped: int = 0
    dead_lettered: int = 0
    failures: int = 0
    last_error: str | None = None
    last_success: float | None = None
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Attempt:
    """What one `ship_once` did, and how long the loop should wait before the next."""

    sent: int
    acked: int
    wait: float
    status: int | None = None


class Shipper:
    def __init__(
        self,
        spool: Spool,
        config: ShipConfig,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.spool = spool
        self.config = config
        self.stats = ShipStats()
        self._clock = clock
        self._rng = rng
        self._failures = 0
        self._client = client or httpx.Client(
            base_url=config.url.rstrip("/"),
            timeout=config.timeout,
            verify=config.ca_file if config.ca_file else True,
            headers={
                "Authorization": f"Bearer {config.token}",
                "User-Agent": f"custos-agent/{__version__}",
            },
        )

    # -- one step -------------------------------------------------------------------------------------------

    def ship_once(self, *, force: bool = False) -> Attempt:
        """Send at most one batch (more requests when a 413 splits it). `force` ignores the batch age."""
        batch = self.spool.peek(self.config.batch_max_events, self.config.batch_max_bytes)
        if not batch:
            return Attempt(0, 0, self.config.batch_max_age)
        if not force and len(batch) < self.config.batch_max_events:
            age = self._clock() - batch[0].queued_at
            if age < self.config.batch_max_age:
                return Attempt(0, 0, self.config.batch_max_age - age)
        return self._send(batch)

    def _send(self, batch: list[SpooledEvent]) -> Attempt:
        body = b'{"events":[' + b",".join(e.body for e in batch) + b"]}"
        try:
            response = self._client.post(
                EVENTS_PATH,
                content=gzip.compress(body, self.config.gzip_level),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
        except httpx.HTTPError as e:
            return self._failed(len(batch), None, f"{type(e).__name__}: {e}", None)
        status = response.status_code
        if status == 200:
            return self._acknowledged(batch, response)
        if status == 413:
            return self._split(batch)
        retry_after = _retry_after(response.headers.get("Retry-After"), self._clock())
        if status in (401, 403):
            log.error(
                "the collector refused this agent's credential (%s); events stay in the spool. "
                "Enroll the agent again with `custos agents enroll NAME` and set its token",
                status,
            )
            return self._failed(len(batch), status, f"credential refused ({status})", retry_after, slow=True)
        return self._failed(len(batch), status, f"HTTP {status}: {response.text[:200]}", retry_after)

    def _acknowledged(self, batch: list[SpooledEvent], response: httpx.Response) -> Attempt:
        try:
            ack = msgspec.json.decode(response.content, type=_Ack)
        except msgspec.DecodeError as e:
            # A 200 we cannot read is not an acknowledgement we can trust: keep the events, send again.
            return self._failed(len(batch), 200, f"unreadable acknowledgement: {e}", None)
        refused: dict[int, str] = {}
        for r in ack.rejected:
            if 0 <= r.index < len(batch):
                refused[batch[r.index].seq] = r.reason
        self.spool.dead_letter(list(refused.items()))
        self.spool.ack([e.seq for e in batch if e.seq not in refused])
        if refused:
            log.warning(
                "collector refused %d malformed events (kept in the spool's dead table), first: %s",
                len(refused),
                next(iter(refused.values())),
            )
        self._failures = 0
        self.stats.batches += 1
        self.stats.shipped += len(batch) - len(refused)
        self.stats.dead_lettered += len(refused)
        self.stats.last_success = self._clock()
        return Attempt(len(batch), len(batch) - len(refused), 0.0, 200)

    def _split(self, batch: list[SpooledEvent]) -> Attempt:
        if len(batch) == 1:
            reason = "collector refused the event as too large (413)"
            self.spool.dead_letter([(batch[0].seq, reason)])
            self.stats.dead_lettered += 1
            log.warning("%s: %s", reason, batch[0].event_id)
            return Attempt(1, 0, 0.0, 413)
        half = len(batch) // 2
        first = self._send(batch[:half])
        if first.status != 200 and first.status != 413:
            return first
        second = self._send(batch[half:])
        return Attempt(first.sent + second.sent, first.acked + second.acked, second.wait, second.status)

    def _failed(
        self, n: int, status: int | None, message: str, retry_after: float | None, *, slow: bool = False
    ) -> Attempt:
        self._failures += 1
        self.stats.failures += 1
        self.stats.last_error = message
        key = f"http_{status}" if status else "connect"
        self.stats.errors[key] = self.stats.errors.get(key, 0) + 1
        ceiling = min(self.config.backoff_max, self.config.backoff_base * 2 ** min(self._failures, 30))
        if slow:
            ceiling = self.config.backoff_max
        wait = self._rng() * ceiling  # full jitter: agents that lost the collector together do not return together
        if retry_after is not None:
            wait = max(wait, retry_after)
        log.warning("shipping %d events failed (%s); next try in %.1fs", n, message, wait)
        return Attempt(n, 0, wait, status)

    # -- the loop -------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Ship until `stop` is set; never raises (a fault is logged, counted and retried)."""
        while not stop.is_set():
            try:
                attempt = self.ship_once()
            except Exception as e:  # noqa: BLE001 - the shipper must outlive any single fault
                log.exception("shipper fault; retrying")
                attempt = self._failed(0, None, f"{type(e).__name__}: {e}", None)
            if attempt.wait > 0:
                self.spool.new_data.clear()
                if attempt.status in (None, 200) and attempt.sent == 0:
                    # Waiting for a batch to fill or age: wake early when events arrive.
                    self.spool.new_data.wait(min(attempt.wait, 1.0))
                else:
                    stop.wait(attempt.wait)

    def drain(self, deadline: float) -> bool:
        """Ship everything now (on shutdown); True when the spool is empty before `deadline` (clock time)."""
        while self._clock() < deadline:
            attempt = self.ship_once(force=True)
            if attempt.sent == 0:
                return True
            if attempt.status != 200:
                return False
        return False

    def close(self) -> None:
        self._client.close()


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
