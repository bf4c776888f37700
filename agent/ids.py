"""Event ids that sort by time: UUIDv7 (RFC 9562), monotonic within one process."""

from __future__ import annotations

import os
import struct
import threading
import time
import uuid

_POOL_DRAWS = 512  # random 64-bit words fetched from the OS at a time: one system call per 512 ids
_unpack_pool = struct.Struct(f"<{_POOL_DRAWS}Q").unpack

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_head_ms = -1
_head = ""  # the id's first 15 characters (48-bit millisecond and the version digit) for _head_ms
_pool: tuple[int, ...] = ()
_pool_next = _POOL_DRAWS


def _reset_after_fork() -> None:
    # A child must not hand out the random words its parent also holds, nor inherit a lock held by another thread.
    global _lock, _pool, _pool_next
    _lock = threading.Lock()
    _pool, _pool_next = (), _POOL_DRAWS


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _draw() -> int:
    """The next random 64-bit word; call with _lock held."""
    global _pool, _pool_next
    if _pool_next >= _POOL_DRAWS:
        _pool, _pool_next = _unpack_pool(os.urandom(8 * _POOL_DRAWS)), 0
    _pool_next += 1
    return _pool[_pool_next - 1]


def uuid7(now_ns: int | None = None) -> str:
    """A new UUIDv7 as a string; ids made by one process never go backwards, even within a millisecond.

    Layout (RFC 9562 §5.7): 48-bit Unix milliseconds, version 7, a 12-bit counter (rand_a, started at a random
    value each new millisecond), variant 0b10, 62 random bits from os.urandom (drawn in pools, not per id).
    """
    global _last_ms, _counter, _head_ms, _head
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    with _lock:
        rand = _draw()
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
            _counter = _draw() & 0x3FF  # a random start that leaves room to count up
        counter = _counter
        if ms != _head_ms:
            t = f"{ms & 0xFFFFFFFFFFFF:012x}"
            _head, _head_ms = f"{t[:8]}-{t[8:]}-7", ms
        head = _head
    # One hex() of 0x1 (keeps the counter's leading zeros), the counter, the variant bits 0b10 and 62 random bits.
    h = hex((counter | 0x1000) << 64 | 0x8000000000000000 | rand & 0x3FFFFFFFFFFFFFFF)
    return f"{head}{h[3:6]}-{h[6:10]}-{h[10:]}"


def uuid7_time_ms(event_id: str) -> int:
    """The Unix time in milliseconds that a UUIDv7 carries."""
    return uuid.UUID(event_id).int >> 80
