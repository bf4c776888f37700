"""The shipper: takes the spool's oldest events to the collector in batches and deletes them once acknowledged.

A batch goes when it is full (`batch_max_events` or `batch_max_bytes`) or when its oldest event has waited
`batch_max_age`. The body is `{"events": [...]}` built from the spooled bytes as they are, gzip-compressed.

On the answer:
- 200: the acknowledged events (stored now, or stored before) leave the spool; events the collector refused as
  malformed move to the spool's dead table with the collector's reason, counted in heartbeats. Nothing is dropped.
  An answer whose counts do not add up to the batch is not trusted: everything stays and is sent again.
- 413: the batch is split in two and each half sent; a single event still too large is dead-lettered.
- 400 (the body is not a batch): spooled entries that are not JSON (only a faulty source writes them) are
  dead-lettered, so that one cannot block the spool; otherwise the batch is split the same way, so that a
  collector with a smaller batch limit is served. A single well-formed event refused with 400 is a collector
  problem: it is kept and retried.
- 429 / 503: wait as long as Retry-After says (at least, up to `RETRY_AFTER_MAX`), then the same batch again.
- 401 / 403: the credential is wrong or revoked; keep everything and retry slowly, loudly.
- anything else, or no answer: exponential backoff with full jitter, up to `backoff_max`, for as long as it takes.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import gzip
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import msgspec

from agent import __version__
from agent.errors import ConfigError
from agent.spool import Spool, SpooledEvent

log = logging.getLogger("custos.agent.ship")

EVENTS_PATH = "/api/v1/events"
SENT_AT = "Custos-Sent-At"  # request header: the agent's wall clock when it sent the batch (RFC 3339)
# A Retry-After longer than this (or than backoff_max, if larger) is cut to it, so that a wrong header cannot
# silence an agent for days.
RETRY_AFTER_MAX = 3600.0
# How long an idle shipper waits before looking again when nothing wakes it: events written by another process
# (`custos-agent emit`, a separately started proxy) do not set this process's wake-up event.
IDLE_POLL = 1.0


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


class _Detail(msgspec.Struct):
    detail: str = ""


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

    sent: int  # events put on the wire (0: nothing was due, or the step failed before sending)
    acked: int  # of those, acknowledged by the collector and removed from the spool
    wait: float
    status: int | None = None  # the last HTTP status seen; None when there was no answer
    dead: int = 0  # of those, refused for good and moved to the dead table
    idle: bool = False  # nothing was due: the spool is empty, or its batch is neither full nor old enough

    @property
    def done(self) -> bool:
        """Every event sent was settled (acknowledged or dead-lettered)."""
        return self.sent > 0 and self.acked + self.dead == self.sent


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
            verify=_tls_context(config.ca_file),
            headers={
                "Authorization": f"Bearer {config.token}",
                "User-Agent": f"custos-agent/{__version__}",
            },
        )

    # -- one step -------------------------------------------------------------------------------------------

    def ship_once(self, *, force: bool = False) -> Attempt:
        """Send at most one batch (more requests when a 413/400 splits it). `force` ignores the batch age."""
        cfg = self.config
        if not force:
            # Decide from the counters whether a batch is due before reading any event bodies: an idle agent
            # that is woken by every small put must not re-read a thousand events each time.
            backlog = self.spool.stats()
            if backlog.depth == 0 or backlog.oldest_queued_at is None:
                return Attempt(0, 0, cfg.batch_max_age, idle=True)
            full = backlog.depth >= cfg.batch_max_events or backlog.bytes > cfg.batch_max_bytes
            if not full:
                age = self._clock() - backlog.oldest_queued_at
                if age < cfg.batch_max_age:
                    # A clock that went back (or another process's) must not stretch the wait beyond one age.
                    return Attempt(0, 0, min(cfg.batch_max_age - age, cfg.batch_max_age), idle=True)
        batch = self.spool.peek(cfg.batch_max_events, cfg.batch_max_bytes)
        if not batch:
            return Attempt(0, 0, cfg.batch_max_age, idle=True)
        return self._send(batch)

    def _send(self, batch: list[SpooledEvent]) -> Attempt:
        body = b'{"events":[' + b",".join(e.body for e in batch) + b"]}"
        try:
            response = self._client.post(
                EVENTS_PATH,
                content=gzip.compress(body, self.config.gzip_level),
                # The agent's own clock as it sends: the collector compares it with its own (clock skew).
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip",
                         SENT_AT: dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc).isoformat()},
            )
        except httpx.HTTPError as e:
            # Includes an answer lost after the collector stored the batch: sending it again is safe, since
            # the collector stores each event id once.
            return self._failed(len(batch), None, f"{type(e).__name__}: {e}", None)
        status = response.status_code
        if status == 200:
            return self._acknowledged(batch, response)
        if status in (400, 413):
            return self._refused_batch(batch, status, _detail(response))
        retry_after = _retry_after(response.headers.get("Retry-After"), self._clock())
        if retry_after is not None:
            retry_after = min(retry_after, max(RETRY_AFTER_MAX, self.config.backoff_max))
        if status in (401, 403):
            log.error(
                "the collector refused this agent's credential (%s); events stay in the spool. "
                "Enroll the agent again with `custos agents enroll NAME` and set its token",
                status,
            )
            return self._failed(len(batch), status, f"credential refused ({status})", retry_after, slow=True)
        return self._failed(len(batch), status, f"HTTP {status}: {_detail(response)}", retry_after)

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
        if ack.accepted < 0 or ack.duplicates < 0 or (
            ack.accepted + ack.duplicates + len(refused) != len(batch) or len(refused) != len(ack.rejected)
        ):
            # The collector counted a different batch: a spooled entry that is not one JSON value (`{..},{..}`)
            # shifts the events after it. Set such entries aside; the rest goes again.
            unparseable = self._set_aside_unparseable(batch, "the collector counted a different batch")
            if unparseable:
                return Attempt(len(batch), 0, 0.0, 200, dead=unparseable)
            # Otherwise something other than the collector (a proxy, a maintenance page) answered 200:
            # deleting on such an answer could lose events, resending cannot.
            return self._failed(
                len(batch), 200,
                f"acknowledgement does not match the batch of {len(batch)} (accepted {ack.accepted}, "
                f"duplicates {ack.duplicates}, rejected {len(ack.rejected)})",
                None,
            )
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
        return Attempt(len(batch), len(batch) - len(refused), 0.0, 200, dead=len(refused))

    def _set_aside_unparseable(self, batch: list[SpooledEvent], detail: str) -> int:
        """Dead-letter the entries of `batch` that are not one JSON value each (only a faulty source writes
        them); checked only after the collector refused or miscounted a batch, never on the hot path."""
        bad = [(e.seq, f"the spooled event is not JSON; {detail}") for e in batch if not _is_json(e.body)]
        if bad:
            self.spool.dead_letter(bad)
            self.stats.dead_lettered += len(bad)
            log.warning("set aside %d spooled entries that are not JSON (%s)", len(bad), detail)
        return len(bad)

    def _refused_batch(self, batch: list[SpooledEvent], status: int, detail: str) -> Attempt:
        """413 / 400: split until each part is taken; a single event the collector cannot take is set aside."""
        if status == 400:
            unparseable = self._set_aside_unparseable(batch, f"the collector refused its batch (400): {detail}")
            if unparseable:
                return Attempt(len(batch), 0, 0.0, status, dead=unparseable)
        if len(batch) > 1:
            half = len(batch) // 2
            first = self._send(batch[:half])
            if not first.done:
                return first
            second = self._send(batch[half:])
            return Attempt(
                first.sent + second.sent, first.acked + second.acked, second.wait, second.status,
                dead=first.dead + second.dead,
            )
        event = batch[0]
        if status == 400:
            # The event is one JSON value, so the fault is not in it: keep it and let an operator see the error.
            return self._failed(1, status, f"collector refused a batch of one event (400): {detail}", None)
        reason = f"collector refused the event as too large (413): {detail}"
        self.spool.dead_letter([(event.seq, reason)])
        self.stats.dead_lettered += 1
        self._failures = 0
        log.warning("%s: %s", reason, event.event_id)
        return Attempt(1, 0, 0.0, status, dead=1)

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
            # Cleared before looking, so that a put made while this step runs wakes the wait below.
            self.spool.new_data.clear()
            try:
                attempt = self.ship_once()
            except Exception as e:  # noqa: BLE001 - the shipper must outlive any single fault
                log.exception("shipper fault; retrying")
                attempt = self._failed(0, None, f"{type(e).__name__}: {e}", None)
            if attempt.idle:
                # Waiting for a batch to fill or age: wake early when events arrive.
                self.spool.new_data.wait(min(attempt.wait, IDLE_POLL))
            elif attempt.wait > 0:
                stop.wait(attempt.wait)

    def drain(self, deadline: float) -> bool:
        """Ship everything now (on shutdown); True when the spool is empty before `deadline` (clock time)."""
        while self._clock() < deadline:
            attempt = self.ship_once(force=True)
            if attempt.idle:
                return True
            if not attempt.done and attempt.acked + attempt.dead == 0:
                return False
        return False

    def close(self) -> None:
        self._client.close()


def _tls_context(ca_file: str | None) -> ssl.SSLContext | bool:
    """Verify the collector against `ca_file` when given (a private CA), else against the system's CAs."""
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"collector -> ca_file: cannot use {ca_file} ({e}); give a PEM file of the CA that signed "
            "the collector's certificate"
        ) from e


def _detail(response: httpx.Response) -> str:
    """The collector's `detail`, shortened for logs and the dead table."""
    try:
        text = msgspec.json.decode(response.content, type=_Detail).detail
    except msgspec.DecodeError:
        text = response.text
    return text[:200]


def _is_json(body: bytes) -> bool:
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return True


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP dates are GMT
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, when.timestamp() - now)
