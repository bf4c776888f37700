"""Event ids that sort by time: UUIDv7 (RFC 9562), monotonic within one process."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7(now_ns: int | None = None) -> str:
    """A new UUIDv7 as a string; ids made by one process never go backwards, even within a millisecond."""
    global _last_ms, _counter
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    with _lock:
        if ms <= _last_ms:
            # Same millisecond (or the clock stepped back): keep order with the 12-bit counter,
            # borrowing the next millisecond when it runs out.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))


def uuid7_time_ms(event_id: str) -> int:
    """The Unix time in milliseconds that a UUIDv7 carries."""
    return uuid.UUID(event_id).int >> 80
