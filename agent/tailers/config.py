"""The `[sources.NAME]` sections of the tailers (`type = "pgaudit"` and `type = "mariadb_audit"`), validated, and
the sources built from them. docs/native-audit-logs.md describes every key."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from agent.config import AgentConfig, _readable
from agent.errors import ConfigError
from agent.tailers._time import LogTimes, load_zone
from agent.tailers.emit import Emitter
from agent.tailers.follow import Follower
from agent.tailers.mariadb import MariaDbAuditFormat
from agent.tailers.pgaudit import PgAuditParser
from agent.tailers.pgaudit_csv import CsvFormat
from agent.tailers.pgaudit_stderr import RECOMMENDED_PREFIX, StderrFormat, compile_prefix, prefix_unknown
from agent.tailers.source import TailerSource
from agent.units import parse_duration, parse_size

Duration = int | float | str
Size = int | str


class TailerSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: str
    path: str | None = None
    rotated: list[str] | None = None  # globs of rotated files; default: PATH.* and PATH-*
    timezone: str | None = None
    server: str | None = None  # how events name the database server ("db-core-01:5432")
    sensitive: dict[str, str] = msgspec.field(default_factory=dict)  # schema.table.column -> class
    start_at: Literal["beginning", "end"] = "beginning"
    poll_interval: Duration = "200ms"
    group_wait: Duration = "1s"
    max_record_bytes: Size = "16MiB"
    batch_events: int = 5000

    def __post_init__(self) -> None:
        for key in ("poll_interval", "group_wait"):
            try:
                parse_duration(getattr(self, key))
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
        try:
            parse_size(self.max_record_bytes)
        except ValueError as e:
            raise ValueError(f"max_record_bytes: {e}") from None
        if not 1 <= self.batch_events <= 100_000:
            raise ValueError("batch_events: must be between 1 and 100000")


class PgAuditSection(TailerSection):
    format: Literal["stderr", "csvlog"] = "stderr"
    log_line_prefix: str | None = None
    current_logfiles: str | None = None  # PostgreSQL's data_directory/current_logfiles, instead of `path`

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.path is None) == (self.current_logfiles is None):
            raise ValueError("path: give either path (the log file) or current_logfiles (PostgreSQL's file that "
                             "names the current log), not both or neither")
        if self.format == "stderr" and not self.log_line_prefix:
            raise ValueError(f"log_line_prefix: required for format = \"stderr\": copy the server's "
                             f"log_line_prefix (recommended: {RECOMMENDED_PREFIX!r})")


class MariaDbAuditSection(TailerSection):
    query_log_limit: int = 1024  # the server's server_audit_query_log_limit

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            raise ValueError("path: required: the server's server_audit_file_path")
        if not self.timezone:
            raise ValueError("timezone: required: the MariaDB server's local time zone (its log times have none), "
                             "such as \"Europe/Berlin\" or \"UTC\"")


def _section(cls: type[Any], name: str, section: Mapping[str, Any]) -> Any:
    try:
        return msgspec.convert(dict(section), cls, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"sources -> {name} -> {_readable(cls, str(e), {})}") from e


def _fixed(path: str) -> Callable[[], str | None]:
    return lambda: path


def _current_logfile(path: str, kind: str) -> Callable[[], str | None]:
    """The file PostgreSQL names in current_logfiles ("stderr log/postgresql-….log")."""
    base = os.path.dirname(os.path.abspath(path))

    def locate() -> str | None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return None
        for line in text.splitlines():
            what, _, where = line.partition(" ")
            if what == kind and where:
                return where if os.path.isabs(where) else os.path.join(base, where)
        return None

    return locate


def _rotated(
    globs: list[str] | None, locate: Callable[[], str | None], *, sibling_suffix: str | None = None
) -> Callable[[], list[str]]:
    """Where rotated files may be: the configured globs; by default PATH.* and PATH-* (logrotate, MariaDB), or,
    for a log PostgreSQL names itself, every file with its suffix beside the current one."""

    def rotated() -> list[str]:
        patterns = globs
        if patterns is None:
            current = locate()
            if current is None:
                return []
            if sibling_suffix is not None:
                patterns = [os.path.join(glob.escape(os.path.dirname(current)), "*" + sibling_suffix)]
            else:
                patterns = [glob.escape(current) + ".*", glob.escape(current) + "-*"]
        return sorted({p for pattern in patterns for p in glob.glob(pattern)})

    return rotated


def _follower(s: TailerSection, locate: Callable[[], str | None], rotated: Callable[[], list[str]]) -> Follower:
    return Follower(locate, rotated, start_at_end=s.start_at == "end")


def pgaudit_source(name: str, section: Mapping[str, Any], config: AgentConfig) -> TailerSource:
    s: PgAuditSection = _section(PgAuditSection, name, section)
    where = f"sources -> {name}"
    times = LogTimes(load_zone(s.timezone, f"{where} -> timezone"))
    emitter = Emitter("pgaudit", name, agent_id=config.agent_id)
    if s.format == "stderr":
        prefix = s.log_line_prefix or ""
        compile_prefix(prefix, f"{where} -> log_line_prefix")
        unknown = prefix_unknown(prefix)
    else:
        unknown = ()
    parser = PgAuditParser(emitter, server=s.server, sensitive=s.sensitive, group_wait=parse_duration(s.group_wait),
                           context_unknown=unknown)
    limit = parse_size(s.max_record_bytes)
    framer: StderrFormat | CsvFormat
    if s.format == "stderr":
        framer = StderrFormat(parser, s.log_line_prefix or "", times, max_record_bytes=limit)
    else:
        framer = CsvFormat(parser, times, max_record_bytes=limit)
    if s.current_logfiles is not None:
        locate = _current_logfile(s.current_logfiles, "stderr" if s.format == "stderr" else "csvlog")
        rotated = _rotated(s.rotated, locate, sibling_suffix=".log" if s.format == "stderr" else ".csv")
    else:
        locate = _fixed(s.path or "")
        rotated = _rotated(s.rotated, locate)
    return TailerSource(name, emitter, PgFormat(framer, parser), _follower(s, locate, rotated),
                        poll_interval=parse_duration(s.poll_interval), batch_events=s.batch_events)


def mariadb_audit_source(name: str, section: Mapping[str, Any], config: AgentConfig) -> TailerSource:
    s: MariaDbAuditSection = _section(MariaDbAuditSection, name, section)
    times = LogTimes(load_zone(s.timezone, f"sources -> {name} -> timezone"))
    emitter = Emitter("mariadb_audit", name, agent_id=config.agent_id)
    fmt = MariaDbAuditFormat(emitter, times, server=s.server, sensitive=s.sensitive,
                             group_wait=parse_duration(s.group_wait), query_log_limit=s.query_log_limit)
    locate = _fixed(s.path or "")
    return TailerSource(name, emitter, fmt, _follower(s, locate, _rotated(s.rotated, locate)),
                        poll_interval=parse_duration(s.poll_interval), batch_events=s.batch_events)


class PgFormat:
    """A PostgreSQL log format (record framing) joined to the pgAudit parser (events and open groups)."""

    def __init__(self, framer: StderrFormat | CsvFormat, parser: PgAuditParser) -> None:
        self.framer = framer
        self.parser = parser
        self.feed = framer.feed
        self.held = framer.held
        self.reset = framer.reset
        self.end_of_file = framer.end_of_file
        self.flush_due = parser.flush_due
        self.snapshot = parser.snapshot
        self.restore = parser.restore

    @property
    def now(self) -> float:
        return self.parser.now

    @now.setter
    def now(self, value: float) -> None:
        self.parser.now = value
