"""The rule runtime in a child process (`[rules] worker = "process"`): evaluation then runs beside ingest on
another core instead of sharing the collector's interpreter lock with it.

Ingest's `on_stored` sets a cross-process event (cheap, never blocks); the child reads new events from the store
by `seq` as the thread runtime does. A supervisor thread restarts a child that died.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from collector.child_process import SupervisedChild

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


class RuleProcess(SupervisedChild):
    def __init__(self, url: str, rule_dirs: list[str | Path], *, supervise_every: float = 2.0) -> None:
        self.url = url
        self.rule_dirs = [str(d) for d in rule_dirs]
        super().__init__("custos-rules", _child, (url, self.rule_dirs), supervise_every=supervise_every)

    def on_stored(self, count: int = 1) -> None:
        """Wake the child. Never blocks, never raises."""
        if count:
            try:
                self._wake.set()
            except (OSError, ValueError):  # shutting down
                pass
