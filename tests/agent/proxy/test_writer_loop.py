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
from agent.proxy.spoolproc import unpack
from agent.proxy.writer import AuditWriter
from agent.spool import Spool

EVENTS = 3000  # about 2 MB of events: far more than a pipe holds, so the writer must wait for it to drain


class PipeSink:
    """The spool process's protocol (`fileno`, `send`, `put`, `close`) over a plain pipe this test reads."""

    restarts = 0

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.w, False)
        self.sends = 0

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
