"""The rule runtime in a child process (`[rules] worker = "process"`): evaluation then runs beside ingest on
another core instead of sharing the collector's interpreter lock with it.

Ingest's `on_stored` sets a cross-process event (cheap, never blocks); the child reads new events from the store
by `seq` as the thread runtime does. A supervisor thread restarts a child that died.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("custos.rules")


def _child(url: str, rule_dirs: list[str], wake: Any, stop: Any) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[rules]: %(message)s")
    from collector.db import make_engine
    from collector.rules_runtime import RuleRuntime
    from rules.parse import load_rules_strict

    engine = make_engine(url)
    runtime = RuleRuntime(engine, load_rules_strict(rule_dirs))
    try:
        runtime.serve(wake, stop)
    finally:
        runtime.checkpoint()
        engine.dispose()


class RuleProcess:
    def __init__(self, url: str, rule_dirs: list[str | Path], *, supervise_every: float = 2.0) -> None:
        self.url = url
        self.rule_dirs = [str(d) for d in rule_dirs]
        self._mp = mp.get_context("spawn")
        self._wake = self._mp.Event()
        self._stop = self._mp.Event()
        self._proc: Any = None
        self._closing = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.supervise_every = supervise_every
        self.restarts = 0

    def on_stored(self, count: int = 1) -> None:
        """Wake the child. Never blocks, never raises."""
        if count:
            try:
                self._wake.set()
            except (OSError, ValueError):  # shutting down
                pass

    def _spawn(self) -> None:
        self._proc = self._mp.Process(target=_child, args=(self.url, self.rule_dirs, self._wake, self._stop),
                                      name="custos-rules", daemon=True)
        self._proc.start()

    def _supervise(self) -> None:
        while not self._closing.wait(self.supervise_every):
            if self._proc is not None and not self._proc.is_alive():
                self.restarts += 1
                log.error("rule worker process exited with %s; starting it again", self._proc.exitcode)
                self._spawn()

    def start(self) -> None:
        if self._proc is None:
            self._stop.clear()
            self._spawn()
            self._supervisor = threading.Thread(target=self._supervise, name="custos-rules-supervisor",
                                                daemon=True)
            self._supervisor.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._closing.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        self._stop.set()
        self._wake.set()
        if self._proc is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
            self._proc = None
