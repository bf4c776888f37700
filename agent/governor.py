"""The agent's resource ceilings: above them, optional work (content classification) is shed, never events.

CPU is this process's share of one core over a sliding window (100 = one core busy), memory its resident set.
Both come from psutil through `agent.procinfo`. Sampling is cheap and rate-limited, so callers may ask before
every file; a shed is counted by the caller under the reason returned ("cpu" or "memory").
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.procinfo import Usage, self_usage
from agent.units import parse_duration, parse_size


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_percent: float | None = 50.0  # of one core, averaged over `window` seconds; None: no ceiling
    memory_bytes: int | None = 200 * 1024 * 1024  # resident set; None: no ceiling
    window: float = 10.0

    @classmethod
    def from_config(cls, section: object) -> Limits:
        cpu = getattr(section, "cpu_percent", 50.0)
        memory = getattr(section, "memory", "200MiB")
        return cls(
            cpu_percent=float(cpu) if cpu else None,
            memory_bytes=parse_size(memory) if memory not in (0, "0", "", None) else None,
            window=parse_duration(getattr(section, "window", "10s")),
        )


class ResourceGovernor:
    def __init__(
        self,
        limits: Limits,
        *,
        usage: Callable[[], Usage] = self_usage,
        clock: Callable[[], float] = time.monotonic,
        sample_every: float = 0.5,
    ) -> None:
        self.limits = limits
        self._usage = usage
        self._clock = clock
        self._sample_every = sample_every
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, float]] = deque()  # (time, cpu seconds)
        self._last_sample = float("-inf")
        self.cpu_percent = 0.0
        self.rss_bytes = 0

    def _sample(self) -> None:
        now = self._clock()
        if now - self._last_sample < self._sample_every:
            return
        self._last_sample = now
        u = self._usage()
        self.rss_bytes = u.rss_bytes
        self._samples.append((now, u.cpu_seconds))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.limits.window:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        self.cpu_percent = 100.0 * (u.cpu_seconds - c0) / (now - t0) if now > t0 else 0.0

    def over(self) -> str | None:
        """"cpu" or "memory" when the agent is above a ceiling now, else None."""
        with self._lock:
            self._sample()
            if self.limits.memory_bytes is not None and self.rss_bytes > self.limits.memory_bytes:
                return "memory"
            if self.limits.cpu_percent is not None and self.cpu_percent > self.limits.cpu_percent:
                return "cpu"
            return None


_shared: dict[Limits, ResourceGovernor] = {}
_shared_lock = threading.Lock()


def shared_governor(limits: Limits) -> ResourceGovernor:
    """One governor per process and ceiling: every source measures the same process."""
    with _shared_lock:
        if limits not in _shared:
            _shared[limits] = ResourceGovernor(limits)
        return _shared[limits]
