"""The ledger sealed in a child process (`[integrity] seal_worker = "process"`): reading every stored record back
and hashing it then runs beside ingest on another core instead of sharing the collector's interpreter lock."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from collector.child_process import SupervisedChild
from collector.integrity_config import IntegritySection

log = logging.getLogger("custos.ledger")


def _child(url: str, every: float, settle: float, max_records: int, ledger_file: str, syslog: str, wake: Any,
           stop: Any) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[ledger]: %(message)s")
    from collector.db import make_engine
    from collector.ledger import Publisher, seal

    parent = os.getppid()
    engine = make_engine(url)
    publisher = Publisher(ledger_file, syslog)
    due = time.monotonic() + every
    try:
        # woken at least every second to notice a collector that was killed (this process then ends too)
        while not stop.wait(max(0.0, min(1.0, due - time.monotonic()))) and os.getppid() == parent:
            if time.monotonic() < due:
                continue
            due = time.monotonic() + every
            try:
                seal(engine, publisher, settle=settle, max_records=max_records)
            except Exception:  # noqa: BLE001 - a database error now is retried at the next tick
                log.exception("sealing the ledger failed")
    finally:
        publisher.close()
        engine.dispose()


class SealProcess(SupervisedChild):
    def __init__(self, url: str, cfg: IntegritySection) -> None:
        super().__init__("custos-ledger", _child, (url, cfg.seconds("seal_every"), cfg.seconds("seal_settle"),
                                                   cfg.block_max_records, cfg.ledger_file, cfg.syslog))
