"""Finished statements and session changes → events → the spool.

db.query events are encoded by `QueryEncoder` (cached fragments) and put into the spool as
`agent.runtime.spool_events` would; db.session events go through `agent.events.encode`.

The event loop appends each record to a deque. Two ways on from there:
- With a spool process (`sink`, how the agent runs the proxy): the event loop itself encodes the queue when it
  holds `batch_loop` records or `interval` has passed since the first, and writes the batch to the child's
  non-blocking pipe; what the pipe does not take now is written when it drains (`add_writer`). No thread: a
  writer thread costs a GIL hand-over with the event loop for every batch slice, which on a busy machine costs
  more than the encoding itself.
- Without one (tests, embedding): a thread wakes every `interval` and puts the events into the spool itself.

Either way a slow disk never stalls forwarding, and the queue is bounded: past `max_pending` records new ones are
shed and counted (reported in heartbeats), never silently lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Union

from agent.errors import SpoolFull
from agent.events import Actor, DbSession, DbSessionPayload, Envelope, Source, encode, new_event
from agent.proxy.audit import QueryRecord, SessionInfo
from agent.proxy.encode import QueryEncoder
from agent.proxy.pgwire import Outbox
from agent.proxy.analysis import Analysis
from agent.proxy.spoolproc import Packed, SpoolProcess
from agent.proxy.spoolproc import frame as frame_of
from agent.spool import Spool, pack_items, unpack_items

log = logging.getLogger("custos.proxy")
HOST = socket.gethostname()
Item = Union[QueryRecord, "tuple[SessionInfo, str, str | None]", Packed]


class FastIds:
    """UUIDv7 ids for a stream of events, cheaper than one `uuid7()` each (about 4 µs, mostly os.urandom).

    RFC 9562's "monotonic random" method: one random draw, then increments of it; the millisecond comes from
    each event's own time, so ids still sort by time. Used by the writer thread only.
    """

    __slots__ = ("_rand", "_n", "_high", "_high_text")

    def __init__(self) -> None:
        self._rand = 0
        self._n = 1 << 20  # draw on first use
        self._high = -1  # the first 64 bits of the last id, and their text: they change once a millisecond
        self._high_text = ""

    def next(self, when: float) -> str:
        self._n += 1
        if self._n >= 1 << 20:
            self._rand = int.from_bytes(os.urandom(8), "big") & ((1 << 60) - 1)
            self._n = 0
        rand = self._rand + self._n
        high = (int(when * 1000) & ((1 << 48) - 1)) << 16 | 0x7 << 12 | ((rand >> 62) & 0xFFF)
        if high != self._high:
            self._high = high
            h = f"{high:016x}"
            self._high_text = f"{h[:8]}-{h[8:12]}-{h[12:]}-"
        low = f"{0b10 << 62 | (rand & ((1 << 62) - 1)):016x}"
        return f"{self._high_text}{low[:4]}-{low[4:]}"


class AuditWriter:
    def __init__(self, spool: Spool, source: Source, *, agent_id: str = "", interval: float = 0.1,
                 batch: int = 2000, max_pending: int = 200_000, exclude_objects: Iterable[str] = (),
                 sink: SpoolProcess | None = None, batch_loop: int = 256) -> None:
        self.spool = spool
        self.source = source
        self.agent_id = agent_id
        self.interval = interval
        self.batch = batch
        self.max_pending = max_pending
        self.exclude_objects = frozenset(o.lower() if "." in o else f"public.{o.lower()}" for o in exclude_objects)
        self._queue: deque[Item] = deque()
        self._stop = threading.Event()
        self._flushing = threading.Lock()  # one drain at a time: the writer thread, or stop(), or a test
        self._thread: threading.Thread | None = None
        self.written = 0
        self.shed = 0
        self.excluded: dict[str, int] = {}
        self.errors = 0
        self.sink = sink  # a child process that writes to the spool (see spoolproc), or None: this thread does
        self._ids = FastIds()
        self._encoder = QueryEncoder(source, HOST, agent_id)
        self.batch_loop = batch_loop
        self._loop: asyncio.AbstractEventLoop | None = None  # set when the event loop writes to the sink
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False  # a flush is scheduled for the next loop iteration
        self._frame: memoryview | None = None  # the rest of a frame the pipe did not take yet
        self._frame_items: list[bytes] = []  # its parts, to send again to a new child
        self._watched: int | None = None  # the pipe the event loop watches for room, while a frame waits
        # Where the lanes (agent/proxy/_framer.c) write their events; None without the C extension.
        self.outbox = Outbox(self._wake, batch_loop, max_pending) if Outbox is not None else None

    # -- called on the event loop ---------------------------------------------------------------------------

    def query(self, rec: QueryRecord) -> None:
        self._drain()
        q = self._queue
        if len(q) >= self.max_pending:
            self.shed += 1
            return
        q.append(rec)
        if self._loop is not None:
            if self._timer is None:
                self._timer = self._loop.call_later(self.interval, self._tick)
            elif len(q) >= self.batch_loop and not self._soon and self._frame is None:
                self._soon = True
                self._loop.call_soon(self._tick)

    def session(self, info: SessionInfo, phase: str, error_code: str | None = None) -> None:
        self._drain()
        if len(self._queue) >= self.max_pending:
            self.shed += 1
            return
        self._queue.append((info, phase, error_code))
        if self._loop is not None and self._timer is None:
            self._timer = self._loop.call_later(self.interval, self._tick)

    def _wake(self, soon: bool) -> None:
        """The outbox holds events (a full batch when `soon`): take them at the next tick."""
        loop = self._loop
        if loop is None:
            return
        if soon:
            if not self._soon and self._frame is None:
                self._soon = True
                loop.call_soon(self._tick)
        elif self._timer is None:
            self._timer = loop.call_later(self.interval, self._tick)

    def _drain(self) -> None:
        """The lanes' events into the queue, before anything queued after them."""
        outbox = self.outbox
        if outbox is None or not outbox.count:
            return
        got = outbox.take()
        if got is not None:
            if len(self._queue) >= self.max_pending:
                self.shed += got[1]
            else:
                self._queue.append(Packed(*got))

    def template(self, info: SessionInfo, analysis: Analysis, end_user: str | None) -> tuple[bytes, bytes] | None:
        """The event template of a statement a lane may write events of (into `outbox`); None for one excluded
        by object (its events are counted as excluded, which the Python path does)."""
        if self.exclude_objects and self._excluded(analysis, analysis) is not None:
            return None
        return self._encoder.template(info, info.application_name, analysis, analysis, end_user)

    @property
    def pending(self) -> int:
        return len(self._queue)

    # -- the writer thread ----------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """With a sink and the event loop the records come from: that loop writes them (see above); otherwise
        a thread of this writer's own."""
        if self.sink is not None and loop is not None:
            self._loop = loop
            return
        self._thread = threading.Thread(target=self._run, name="custos-proxy-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """After the event loop has stopped: write everything still queued, then close the sink."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._loop = None
        self.flush()
        if self.sink is not None:
            self.sink.close()

    # -- the event loop writes to the sink --------------------------------------------------------------------

    def _tick(self) -> None:
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unwatch()  # _send_rest watches the pipe again if a frame still waits for room
        if not self._flushing.acquire(blocking=False):  # another thread flushes: look again shortly
            if self._loop is not None:
                self._timer = self._loop.call_later(self.interval, self._tick)
            return
        try:
            self._pump()
        except Exception:  # noqa: BLE001 - the loop must go on; the count shows in heartbeats
            self.errors += 1
            log.error("proxy audit writer failed a batch", exc_info=False)
        finally:
            self._flushing.release()
        self._rearm()

    def _rearm(self) -> None:
        if self._loop is not None and self._queue and self._timer is None and self._frame is None:
            self._timer = self._loop.call_later(self.interval, self._tick)

    def _pump(self) -> None:
        """Encode and send batches until the queue is empty or the pipe is full (then wait for it to drain)."""
        q = self._queue
        while True:
            self._drain()  # into the bounded queue, even while a frame waits for the pipe
            if self._frame is not None:
                if not self._send_rest():
                    return
            if not q:
                return
            items = [q.popleft() for _ in range(min(len(q), self.batch))]
            parts, count = self._parts(items)
            if count:
                self._frame_items = parts
                self._frame = memoryview(frame_of(parts))
                self.written += count

    def _send_rest(self) -> bool:
        """Write what the pipe takes of the pending frame; True once it is all written."""
        sink = self.sink
        frame = self._frame
        if sink is None or frame is None:
            return True
        self._unwatch()  # a child that dies below takes its pipe's descriptor with it
        for attempt in range(3):
            try:
                if sink.ensure():  # a new child reads from a frame's start
                    frame = memoryview(frame_of(self._frame_items))
                n = sink.send(frame)
                break
            except OSError:
                self.errors += 1
                log.error("proxy spool writer process failed (attempt %d); restarting it", attempt + 1)
        else:
            self.shed += len(self._frame_items)
            self._frame = None
            return True
        frame = frame[n:]
        if frame:
            self._frame = frame
            if self._loop is not None:
                self._watched = sink.fileno()
                self._loop.add_writer(self._watched, self._tick)
            return False
        self._frame = None
        self._frame_items = []
        return True

    def _unwatch(self) -> None:
        if self._watched is not None:
            if self._loop is not None:
                self._loop.remove_writer(self._watched)
            self._watched = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - keep the thread alive; the count shows in heartbeats
                self.errors += 1
                log.error("proxy audit writer failed a batch", exc_info=False)

    def flush(self) -> int:
        """Write what is queued; returns how many events were written. Safe to call from any thread."""
        done = 0
        q = self._queue
        with self._flushing:
            self._drain()
            if self._frame is not None and self.sink is not None:  # the rest of the event loop's last batch
                rest, parts = bytes(self._frame), self._frame_items
                self._frame, self._frame_items = None, []
                try:
                    if self.sink.ensure():  # a new child reads from a frame's start
                        rest = frame_of(parts)
                    self.sink.send_all(rest)
                except OSError:
                    self._send(unpack_items(b"".join(parts)))
            while q:
                items = []
                while q and len(items) < self.batch:
                    items.append(q.popleft())
                events = []
                for n, item in enumerate(items, 1):
                    if isinstance(item, Packed):
                        events += unpack_items(item.blob)
                        continue
                    event = self._item(item)
                    if event is not None:
                        events.append(event)
                    if n % 32 == 0:
                        time.sleep(0)  # hand the GIL back to the event loop: forwarding must not wait on us
                if self.sink is not None:
                    self._send(events)
                    done += len(events)
                    self.written += len(events)
                    continue
                try:
                    self.spool.put(events)
                except SpoolFull:
                    q.extendleft(reversed(items))  # the spool's `block` policy: wait for the shipper
                    return done
                done += len(events)
                self.written += len(events)
        return done

    def _send(self, events: list[tuple[str, bytes]]) -> None:
        """To the spool process; a batch it died on is sent again (same ids: stored once by the collector)."""
        for attempt in range(3):
            try:
                self.sink.put(events)  # type: ignore[union-attr]
                return
            except OSError:
                self.errors += 1
                log.error("proxy spool writer process failed (attempt %d); restarting it", attempt + 1)
        self.shed += len(events)

    def _parts(self, items: list[Item]) -> tuple[list[bytes], int]:
        """The items as parts of a spool-process frame (see `frame`), and how many events they hold."""
        parts: list[bytes] = []
        events: list[tuple[str, bytes]] = []
        count = 0
        for item in items:
            if type(item) is Packed:
                if events:
                    parts.append(pack_items(events))
                    count += len(events)
                    events = []
                parts.append(item.blob)
                count += item.count
                continue
            event = self._item(item)  # type: ignore[arg-type]
            if event is not None:
                events.append(event)
        if events:
            parts.append(pack_items(events))
            count += len(events)
        return parts, count

    def _excluded(self, data: Analysis, analysis: Analysis) -> str | None:
        touched = set(data.tables_read) | set(analysis.tables_written)
        if touched and touched <= self.exclude_objects:
            return f"object.{sorted(touched)[0]}"[:256]
        return None

    def _item(self, item: QueryRecord | tuple[SessionInfo, str, str | None]) -> tuple[str, bytes] | None:
        """(event id, encoded event) for the spool, or None for an excluded statement."""
        if isinstance(item, tuple):
            event = self._session_event(*item)
            return event.id, encode(event)
        if self.exclude_objects:
            key = self._excluded(item.data, item.analysis)
            if key is not None:
                self.excluded[key] = self.excluded.get(key, 0) + 1
                return None
        event_id = self._ids.next(item.started)
        return event_id, self._encoder.encode(item, event_id)

    def _session_event(self, info: SessionInfo, phase: str, error_code: str | None) -> Envelope:
        payload = DbSessionPayload(
            session_id=info.session_id,
            phase=phase,  # type: ignore[arg-type]
            database=info.database,
            application_name=info.application_name,
            client_addr=info.client_addr,
            client_port=info.client_port,
            server_addr=info.server_addr,
            server_port=info.server_port,
            auth_method=info.auth_method,
            tls=False,
            error_code=error_code,
        )
        actor = Actor(db_user=info.user or None, end_user=info.end_user or None)
        return new_event(DbSession, payload, source=self.source, actor=actor, agent_id=self.agent_id)
