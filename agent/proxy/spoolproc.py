"""The proxy's spool writer as a child process, so that SQLite never competes with forwarding for the GIL.

In one process, every row `sqlite3.executemany` inserts hands the GIL back and forth with the event loop; on a
busy machine each hand-over waits for the scheduler, and the clients wait with it. The proxy's writer thread
encodes events and sends them here in batches through a pipe (one `write` per batch); this process puts them
into the spool. Frames on stdin: 4-byte big-endian length, then that many bytes of
`(4-byte id length, id, 4-byte body length, body)*`. EOF ends it after the last batch is stored.

    python -m agent.proxy.spoolproc SPOOL_PATH MAX_EVENTS MAX_BYTES OVERFLOW SYNCHRONOUS
"""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from agent.errors import SpoolFull
from agent.spool import Spool

_LEN = struct.Struct("!I")


def pack(items: list[tuple[str, bytes]]) -> bytes:
    parts = []
    for event_id, body in items:
        raw = event_id.encode()
        parts += (_LEN.pack(len(raw)), raw, _LEN.pack(len(body)), body)
    payload = b"".join(parts)
    return _LEN.pack(len(payload)) + payload


def unpack(payload: bytes) -> list[tuple[str, bytes]]:
    items = []
    pos = 0
    while pos < len(payload):
        (n,) = _LEN.unpack_from(payload, pos)
        event_id = payload[pos + 4:pos + 4 + n].decode()
        pos += 4 + n
        (m,) = _LEN.unpack_from(payload, pos)
        items.append((event_id, payload[pos + 4:pos + 4 + m]))
        pos += 4 + m
    return items


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def main(argv: list[str]) -> int:
    path, max_events, max_bytes, overflow, synchronous = argv
    spool = Spool(path, max_events=int(max_events), max_bytes=int(max_bytes), overflow=overflow,  # type: ignore[arg-type]
                  synchronous=synchronous)  # type: ignore[arg-type]
    stdin = sys.stdin.buffer
    try:
        while True:
            head = _read_exactly(stdin, 4)
            if head is None:
                return 0
            payload = _read_exactly(stdin, _LEN.unpack(head)[0])
            if payload is None:
                return 1
            items = unpack(payload)
            while True:
                try:
                    spool.put(items)
                    break
                except SpoolFull:  # the `block` policy: wait for the shipper to make room
                    threading.Event().wait(0.5)
    finally:
        spool.close()


class SpoolProcess:
    """The parent's side: starts the child, sends batches, restarts it if it died."""

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

    def put(self, items: list[tuple[str, bytes]]) -> None:
        """Send a batch; raises OSError when the child is gone (the batch is not stored then)."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.restarts += 1
                self.close(timeout=1.0)
            self.proc = self._start()
        stdin = self.proc.stdin
        if stdin is None:
            raise OSError("the spool writer process has no input pipe")
        try:
            stdin.write(pack(items))
            stdin.flush()
        except OSError:
            self.close(timeout=1.0)  # died under us: put() restarts it on the next call
            self.restarts += 1
            raise

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
