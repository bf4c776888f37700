"""The event loop's side of the audit writer: batches to a non-blocking pipe, none lost or repeated when it fills."""

from __future__ import annotations

import asyncio
import os
import select
import threading
from pathlib import Path

from agent.events import DbQuery, Source, decode
from agent.proxy.analysis import Analyser
from agent.proxy.audit import QueryRecord, SessionInfo
from agent.spool import unpack_items as unpack
from agent.proxy.writer import AuditWriter
from agent.spool import Spool

EVENTS = 3000  # about 2 MB of events: far more than a pipe holds, so the writer must wait for it to drain


class PipeSink:
    """The spool process's protocol (`ensure`, `fileno`, `send`, `put`, `close`) over a pipe this test reads."""

    restarts = 0

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.w, False)
        self.sends = 0

    def ensure(self) -> bool:
        return False  # never dies

    def fileno(self) -> int:
        return self.w

    def send(self, data: bytes | memoryview) -> int:
        self.sends += 1
        try:
            return os.write(self.w, data)
        except BlockingIOError:
            return 0

    def send_all(self, frame: bytes) -> None:
        view = memoryview(frame)
        while view:
            view = view[self.send(view):]
            if view:
                select.select([], [self.w], [], 1.0)

    def close(self) -> None:
        os.close(self.w)


def read_frames(fd: int, out: list[tuple[str, bytes]], frames: list[int]) -> None:
    data = bytearray()
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out += unpack(bytes(data[pos + 4:pos + 4 + n]))
        frames.append(n)
        pos += 4 + n


def test_batches_wait_for_a_full_pipe_and_arrive_once_in_order(tmp_path: Path) -> None:
    sink = PipeSink()
    writer = AuditWriter(Spool(tmp_path / "spool.sqlite3"), Source(type="proxy", name="pg"), interval=0.01,
                         sink=sink, batch_loop=64)  # type: ignore[arg-type]
    info = SessionInfo("01a21b00-9886-714f-a9a3-fe5ba6c96e4e", "pg", "127.0.0.1", 5000, "127.0.0.1", 5432,
                       database="bank", user="teller")
    analysis = Analyser({}).analyse("SELECT full_name FROM customers WHERE customer_id = $1")
    loop = asyncio.new_event_loop()
    writer.start(loop)
    got: list[tuple[str, bytes]] = []
    frames: list[int] = []
    reader = threading.Thread(target=read_frames, args=(sink.r, got, frames))

    async def produce() -> None:
        for i in range(EVENTS):
            rec = QueryRecord(info, analysis, None)
            rec.rows = i
            writer.query(rec)
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the loop run its ticks, as it does between connections' reads
        while writer._frame is None:  # noqa: SLF001 - the pipe must have filled for this test to mean anything
            await asyncio.sleep(0.005)
        reader.start()  # now drain it
        while writer.pending or writer._frame is not None:  # noqa: SLF001
            await asyncio.sleep(0.005)

    try:
        loop.run_until_complete(asyncio.wait_for(produce(), 60))
    finally:
        loop.close()
        writer.stop()  # closes the sink: the reader sees the end
        reader.join(30)
    rows = [e.payload.rows for e in (decode(body) for _, body in got) if isinstance(e, DbQuery)]
    assert rows == list(range(EVENTS))  # every statement once, in order
    assert len({event_id for event_id, _ in got}) == EVENTS and writer.written == EVENTS
    assert sink.sends > len(frames)  # some batch was written in pieces, as the pipe drained


def test_a_spool_process_killed_while_its_pipe_is_full_is_replaced_and_later_events_are_stored(
        tmp_path: Path) -> None:
    import signal

    from agent.proxy.spoolproc import SpoolProcess

    spool = Spool(tmp_path / "spool.sqlite3", synchronous="NORMAL")
    sink = SpoolProcess(spool, "NORMAL")
    writer = AuditWriter(spool, Source(type="proxy", name="pg"), interval=0.01, sink=sink, batch_loop=64)
    info = SessionInfo("01a21b00-9886-714f-a9a3-fe5ba6c96e4e", "pg", "127.0.0.1", 5000, "127.0.0.1", 5432,
                       database="bank", user="teller")
    analysis = Analyser({}).analyse("SELECT full_name FROM customers WHERE customer_id = $1")
    loop = asyncio.new_event_loop()
    writer.start(loop)

    def record(rows: int) -> QueryRecord:
        rec = QueryRecord(info, analysis, None)
        rec.rows = rows
        return rec

    async def produce() -> None:
        writer.query(record(0))
        while sink.proc is None:  # the first batch starts the child
            await asyncio.sleep(0.005)
        sink.proc.send_signal(signal.SIGSTOP)  # it reads nothing more: the pipe fills
        i = 1
        while writer._frame is None:  # noqa: SLF001
            for _ in range(100):
                writer.query(record(i))
                i += 1
            await asyncio.sleep(0)
        sink.proc.kill()  # dies with a batch half-written into its pipe
        while writer.pending or writer._frame is not None:  # noqa: SLF001 - a new child takes the rest
            await asyncio.sleep(0.005)
        writer.query(record(10**9))  # after the new child took over
        while writer.pending:
            await asyncio.sleep(0.005)

    try:
        loop.run_until_complete(asyncio.wait_for(produce(), 60))
    finally:
        loop.close()
        writer.stop()  # waits for the child to store what it was sent
    rows = [e.payload.rows for e in (decode(x.body) for x in spool.peek(1_000_000)) if isinstance(e, DbQuery)]
    spool.close()
    assert sink.restarts == 1
    assert rows[-1] == 10**9 and len(rows) == len(set(rows))  # the new child stored whole batches, each once
    assert len(rows) > 64  # the batch the old child died on was sent again, whole, to the new one
