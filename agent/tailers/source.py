"""The tailer sources: a Follower, a log format, and the spool, with the read position and the format's open
groups committed in the same spool transaction as the events they produced.

`poll_once()` is one step: read what is new (bounded), turn complete records into events, flush groups that
waited long enough, and spool it all with the new cursor. A crash before the commit loses nothing (the next
start reads the same lines again from the committed cursor); a crash after it repeats nothing. When the spool
refuses the write (`overflow = "block"` and full, or a disk error) the source rewinds to its committed cursor
and tries again later, so a full spool makes it wait rather than skip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec

from agent.errors import SpoolFull
from agent.spool import Spool
from agent.tailers.emit import Emitter
from agent.tailers.follow import Chunk, Follower, Position

log = logging.getLogger("custos.tailers")
MAX_CHUNKS_PER_POLL = 16


class LogFormat(Protocol):
    now: float

    def feed(self, raw: bytes, offset: int, number: int) -> None: ...

    def held(self) -> tuple[int, int] | None: ...

    def reset(self) -> None: ...

    def end_of_file(self) -> None: ...

    def flush_due(self, now: float) -> None: ...

    def snapshot(self) -> dict[str, object]: ...

    def restore(self, state: Mapping[str, object] | None) -> None: ...


class _Cursor(msgspec.Struct, kw_only=True):
    v: int = 1
    pos: dict[str, Any] | None = None
    state: dict[str, Any] = msgspec.field(default_factory=dict)


class TailerSource:
    """An agent Source that tails one audit log."""

    def __init__(
        self,
        name: str,
        emitter: Emitter,
        fmt: LogFormat,
        follower: Follower,
        *,
        poll_interval: float = 0.2,
        batch_events: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.emitter = emitter
        self.format = fmt
        self.follower = follower
        self.poll_interval = poll_interval
        self.batch_events = batch_events
        self.clock = clock
        self.cursor_name = f"tailer:{name}"
        self.spool: Spool | None = None
        self._position: Position | None = None
        self._backlog: tuple[Chunk, int] | None = None
        self._counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the agent's Source protocol ----------------------------------------------------------------------------

    def start(self, spool: Spool) -> None:
        self.open(spool)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"custos-tail-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.follower.close()

    def counters(self) -> dict[str, dict[str, int]]:
        c = self._counts
        return {"errors": {k: c[k] for k in ("parse_error", "gap", "read_error") if c[k]}}

    def stats(self) -> dict[str, int]:
        """Everything counted and committed so far: events by kind, parse errors, gaps."""
        return dict(self._counts)

    # -- stepping ---------------------------------------------------------------------------------------------

    def open(self, spool: Spool) -> None:
        """Take the committed cursor from `spool` and position the follower and the format there."""
        self.spool = spool
        self._rewind()

    def poll_once(self) -> int:
        """Read, parse and spool what is new; returns the number of lines read (0: nothing new)."""
        if self.spool is None:
            raise RuntimeError("call open(spool) or start(spool) before poll_once()")
        try:
            return self._step(self.spool)
        except BaseException:
            self._rewind()
            raise

    def _step(self, spool: Spool) -> int:
        now = self.clock()
        self.format.now = now
        position: Position | None = None
        read = 0
        for _ in range(MAX_CHUNKS_PER_POLL):
            if self._backlog is not None:  # the rest of a chunk a full batch left unread
                chunk, start = self._backlog
                self._backlog = None
            else:
                chunk, start = self.follower.read(), 0
                self._take_gap()
                if chunk is None:
                    break
            self.emitter.location = chunk.end.path
            lines = chunk.lines
            i, n = start, len(lines)
            feed, events, batch = self.format.feed, self.emitter.events, self.batch_events  # the same all chunk long
            while i < n:
                raw, offset, number = lines[i]
                i += 1
                try:
                    feed(raw, offset, number)
                except Exception:  # noqa: BLE001 - one line must never stop the tailer
                    log.exception("%s: reading line %d of %s failed", self.name, number, chunk.end.path)
                    self.emitter.parse_error(offset, number, "the line could not be read (internal error, logged)")
                if len(events) >= batch and i < n:
                    break
            read += i - start
            held = self.format.held()
            if i < len(lines):
                self._backlog = (chunk, i)
                position = chunk.at(*held) if held is not None else chunk.at(lines[i][1], lines[i][2] - 1)
                break
            if chunk.final:
                self.format.end_of_file()
                held = None
            position = chunk.at(*held) if held is not None else chunk.end
            if len(self.emitter.events) >= self.batch_events:
                break
        self.format.flush_due(now)
        events = self.emitter.take()
        if position is None and not events:
            return 0
        if position is None:
            position = self._position
        cursor = _Cursor(pos=None if position is None else position.to_dict(), state=self.format.snapshot())
        spool.put(events, cursor=(self.cursor_name, msgspec.json.encode(cursor).decode()))
        self._position = position
        self._counts = Counter(self.emitter.counts)
        return read

    def _take_gap(self) -> None:
        gap = self.follower.take_gap()
        if gap is not None:
            self.emitter.location = self.follower.current_path or self.emitter.location
            self.emitter.gap(gap)

    def _rewind(self) -> None:
        """Back to the committed cursor: the follower's position, the format's open groups, the counters."""
        if self.spool is None:
            return
        raw = self.spool.cursor(self.cursor_name)
        cursor = _Cursor() if raw is None else msgspec.json.decode(raw, type=_Cursor)
        self._position = None if cursor.pos is None else Position.from_dict(cursor.pos)
        self.follower.restore(self._position)
        self._backlog = None
        self.format.reset()
        self.format.restore(cursor.state)
        self.emitter.discard()
        self.emitter.counts = Counter(self._counts)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.poll_once()
            except SpoolFull:
                log.warning("%s: the spool is full; waiting for the shipper before reading on", self.name)
                self._stop.wait(max(self.poll_interval, 1.0))
                continue
            except Exception:  # noqa: BLE001 - keep tailing; the error is logged and counted
                log.exception("%s: reading the log failed; retrying from the committed position", self.name)
                self._counts["read_error"] += 1
                self.emitter.counts["read_error"] += 1
                self._stop.wait(max(self.poll_interval, 1.0))
                continue
            if n == 0:
                self._stop.wait(self.poll_interval)
