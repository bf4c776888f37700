"""The proxy's spool writer as a child process, so that SQLite never competes with forwarding for the GIL.

In one process, every row `sqlite3.executemany` inserts hands the GIL back and forth with the event loop; on a
busy machine each hand-over waits for the scheduler, and the clients wait with it. The proxy's event loop
encodes events and sends them here in batches through a non-blocking pipe (`SpoolProcess.send`, one `write` per
batch; what the pipe does not take now waits for it to drain); this process puts them into the spool. Frames on stdin: 4-byte big-endian length, then that many bytes of
`(4-byte id length, id, 4-byte body length, body)*`. EOF ends it after the last batch is stored.

    python -m agent.proxy.spoolproc SPOOL_PATH MAX_EVENTS MAX_BYTES OVERFLOW SYNCHRONOUS
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, NamedTuple

from agent.errors import SpoolFull
from agent.spool import Spool, pack_items

_LEN = struct.Struct("!I")
COALESCE_BYTES = 4 << 20  # bytes of events at most in one spool transaction (about 5,000 db.query events)
GATHER = 0.02  # seconds to wait for the next batch before committing what has arrived


class Packed(NamedTuple):
    """Events already in a frame's item format (`pack_items`), as the lane in agent/proxy/_framer.c writes them."""

    blob: bytes
    count: int


def frame(parts: list[bytes]) -> bytes:
    """One frame of payload parts (each from `pack_items` or the lane)."""
    return _LEN.pack(sum(map(len, parts))) + b"".join(parts)


def pack(items: list[tuple[str, bytes]]) -> bytes:
    return frame([pack_items(items)])


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    """n bytes from an unbuffered stream (which may return fewer per read), or None at EOF."""
    parts = []
    while n > 0:
        data = stream.read(n)
        if not data:
            return None
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def main(argv: list[str]) -> int:
    path, max_events, max_bytes, overflow, synchronous = argv
    spool = Spool(path, max_events=int(max_events), max_bytes=int(max_bytes), overflow=overflow,  # type: ignore[arg-type]
                  synchronous=synchronous)  # type: ignore[arg-type]
    fd = sys.stdin.fileno()
    stdin = open(fd, "rb", buffering=0, closefd=False)  # unbuffered: select() then sees every byte not yet read
    try:
        while True:
            head = _read_exactly(stdin, 4)
            if head is None:
                return 0
            payload = _read_exactly(stdin, _LEN.unpack(head)[0])
            if payload is None:
                return 1
            payloads = [payload]
            size = len(payload)
            # Batches that arrive within GATHER of each other go into the same transaction: one commit (one
            # fsync) for all of them, instead of one per batch the event loop sends.
            while size < COALESCE_BYTES and select.select([fd], [], [], GATHER)[0]:
                head = _read_exactly(stdin, 4)
                if head is None:
                    break
                payload = _read_exactly(stdin, _LEN.unpack(head)[0])
                if payload is None:
                    break
                payloads.append(payload)
                size += len(payload)
            while True:
                try:
                    spool.put_packed(payloads)  # a packed row per batch, all in one transaction
                    break
                except SpoolFull:  # the `block` policy: wait for the shipper to make room
                    threading.Event().wait(0.5)
    finally:
        spool.close()


class SpoolProcess:
    """The parent's side: starts the child, sends batches, restarts it if it died.

    Its pipe is non-blocking: `send` writes what the pipe takes now and never waits (for the event loop);
    `put` waits until a whole batch is written (for shutdown and threads).
    """

    PIPE_SIZE = 1 << 20  # room for a few batches, so that a slow commit in the child rarely pushes back

    def __init__(self, spool: Spool, synchronous: str = "FULL") -> None:
        self.args = [sys.executable, "-m", "agent.proxy.spoolproc", str(spool.path), str(spool.max_events),
                     str(spool.max_bytes), spool.overflow, synchronous]
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen[bytes]:
        env_path = str(Path(__file__).resolve().parents[2])
        import os

        env = dict(os.environ)
        env["PYTHONPATH"] = env_path + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.Popen(self.args, stdin=subprocess.PIPE, env=env)

    def ensure(self) -> bool:
        """Start the child if there is none or it died; True when a new one was started (it must then be sent
        whole frames from their start: the rest of a frame the old one was reading would be misread)."""
        if self.proc is not None and self.proc.poll() is None:
            return False
        if self.proc is not None:
            self.restarts += 1
            self.close(timeout=1.0)
        self.proc = self._start()
        if self.proc.stdin is None:
            raise OSError("the spool writer process has no input pipe")
        fd = self.proc.stdin.fileno()
        os.set_blocking(fd, False)
        try:
            import fcntl

            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), self.PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only means more waits for it to drain
        return True

    def fileno(self) -> int:
        """The pipe to the current child (see `ensure`)."""
        if self.proc is None or self.proc.stdin is None:
            raise OSError("the spool writer process is not running")
        return self.proc.stdin.fileno()

    def send(self, data: bytes | memoryview) -> int:
        """Write as much of `data` as the pipe to the current child takes now; returns how many bytes. Raises
        OSError when that child is gone (never starts another: see `ensure`)."""
        if self.proc is None or self.proc.poll() is not None:
            raise OSError("the spool writer process is gone")
        try:
            return os.write(self.fileno(), data)
        except BlockingIOError:
            return 0
        except OSError:
            self.close(timeout=1.0)  # died under us: the next ensure() starts a new one
            self.restarts += 1
            raise

    def put(self, items: list[tuple[str, bytes]]) -> None:
        """Send a batch, waiting for the pipe as long as needed; raises OSError when the child is gone (the
        batch is not stored then)."""
        frame = pack(items)
        self.ensure()
        self.send_all(frame)

    def send_all(self, frame: bytes) -> None:
        """All of `frame` to the current child, waiting for room; OSError if it dies meanwhile."""
        view = memoryview(frame)
        while view:
            n = self.send(view)
            view = view[n:]
            if view:
                select.select([], [self.fileno()], [], 1.0)

    def close(self, timeout: float = 60.0) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(main(sys.argv[1:]))
