"""Real file watchers on real directories, writing to a real spool; events read back from the spool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.events import Envelope, decode
from agent.files.config import FileWatchConfig
from agent.files.watch import FileWatchSource
from agent.governor import Limits, ResourceGovernor
from agent.spool import Spool
from tests.helpers.procs import wait_for

NO_CEILINGS = Limits(cpu_percent=None, memory_bytes=None)


class Watched:
    def __init__(self, source: FileWatchSource, spool: Spool) -> None:
        self.source = source
        self.spool = spool

    def events(self, kind: str | None = None) -> list[Envelope]:
        evs = [decode(e.body) for e in self.spool.peek(1_000_000)]
        return [e for e in evs if kind is None or e.__struct_config__.tag == kind]

    def exports(self) -> list[Any]:
        return self.events("file.export")

    def settle(self, timeout: float = 60) -> None:
        """Wait until nothing is queued, pending or being classified."""
        pipeline = self.source.pipeline
        assert pipeline is not None
        wait_for(pipeline.idle, timeout, "the file pipeline to be idle")

    def wait_exports(self, n: int, timeout: float = 60) -> list[Any]:
        wait_for(lambda: len(self.exports()) >= n, timeout, f"{n} file.export events")
        self.settle(timeout)
        return self.exports()


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[Callable[..., Watched]]:
    started: list[Watched] = []

    def start(paths: list[Path], *, governor: ResourceGovernor | None = None, **config: Any) -> Watched:
        config.setdefault("quiet", "300ms")
        config.setdefault("sync_paths", [])
        config.setdefault("supervise_interval", "200ms")
        cfg = FileWatchConfig(paths=[str(p) for p in paths], **config)
        spool = Spool(tmp_path / f"spool{len(started)}" / "spool.sqlite3")
        source = FileWatchSource("files", cfg, governor=governor or ResourceGovernor(NO_CEILINGS), env={})
        source.start(spool)
        w = Watched(source, spool)
        started.append(w)
        return w

    yield start
    for w in started:
        w.source.stop()
        w.spool.close()
