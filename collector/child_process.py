"""A collector job in a child process of its own (the rules with `[rules] worker = "process"`, the ledger with
`[integrity] seal_worker = "process"`), so that its CPU work runs beside ingest on another core instead of
sharing the collector's interpreter lock. The child is spawned with a `wake` and a `stop` event after its own
arguments; a supervisor thread starts it again when it dies."""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("custos.child")


class SupervisedChild:
    def __init__(self, name: str, target: Callable[..., None], args: tuple[Any, ...], *,
                 supervise_every: float = 2.0) -> None:
        self.name = name
        self.target = target
        self.args = args
        self._mp = mp.get_context("spawn")
        self._wake = self._mp.Event()
        self._stop = self._mp.Event()
        self._proc: Any = None
        self._closing = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.supervise_every = supervise_every
        self.restarts = 0

    def _spawn(self) -> None:
        self._proc = self._mp.Process(target=self.target, args=(*self.args, self._wake, self._stop),
                                      name=self.name, daemon=True)
        self._proc.start()

    def _supervise(self) -> None:
        while not self._closing.wait(self.supervise_every):
            if self._proc is not None and not self._proc.is_alive():
                self.restarts += 1
                log.error("%s process exited with %s; starting it again", self.name, self._proc.exitcode)
                self._spawn()

    def start(self) -> None:
        if self._proc is None:
            self._stop.clear()
            self._closing.clear()
            self._spawn()
            self._supervisor = threading.Thread(target=self._supervise, name=f"{self.name}-supervisor", daemon=True)
            self._supervisor.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._closing.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
            self._supervisor = None
        self._stop.set()
        self._wake.set()
        if self._proc is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
            self._proc = None
