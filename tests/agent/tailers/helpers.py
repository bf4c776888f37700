"""Running a tailer source over a file into a real spool, and reading back what it spooled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.events import Envelope, decode
from agent.sources import SOURCE_TYPES
from agent.spool import Spool
from agent.tailers.source import TailerSource

DATA = Path(__file__).parent / "data"
SAMPLE_PREFIX = "%m [%p] %q%u@%d %r "  # the log_line_prefix of data/pgaudit.log


class Clock:
    """An injected wall clock the tests move by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_source(kind: str, path: Path | None, spool: Spool | None = None, *, clock: Clock | None = None,
                **section: Any) -> TailerSource:
    sec: dict[str, Any] = {"type": kind, **section}
    if path is not None:
        sec["path"] = str(path)
    if kind == "pgaudit":
        sec.setdefault("format", "stderr")
        if sec["format"] == "stderr":
            sec.setdefault("log_line_prefix", SAMPLE_PREFIX)
    else:
        sec.setdefault("timezone", "UTC")
    source = SOURCE_TYPES[kind]("t", sec, AgentConfig(agent_id="test-agent"))
    assert isinstance(source, TailerSource)
    if clock is not None:
        source.clock = clock
    if spool is not None:
        source.open(spool)
    return source


def spooled(spool: Spool) -> list[Envelope]:
    return [decode(e.body) for e in spool.peek(1_000_000)]


def of_kind(events: list[Envelope], kind: str) -> list[Any]:
    return [e for e in events if e.__struct_config__.tag == kind]  # type: ignore[attr-defined]


def poll_until_idle(source: TailerSource, limit: int = 10_000) -> None:
    for _ in range(limit):
        if source.poll_once() == 0:
            return
    raise AssertionError("the source kept reading")


def read_all(kind: str, path: Path, tmp_path: Path, **section: Any) -> list[Envelope]:
    """Every event the source makes from `path`, its open groups flushed (group_wait 0)."""
    with Spool(tmp_path / "spool.sqlite3") as spool:
        source = make_source(kind, path, spool, group_wait="0s", **section)
        poll_until_idle(source)
        source.poll_once()
        source.follower.close()
        return spooled(spool)
