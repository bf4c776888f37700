"""PostgreSQL's stderr log format: each message starts with the configured `log_line_prefix`, and the lines of a
message that spans several lines after the first begin with a TAB.

A pgAudit message quotes (CSV) every field holding a newline, so a message is complete exactly when its double
quotes are balanced: no waiting on the clock is needed to know a record is whole.

The recommended prefix gives every field the events use (time with milliseconds and zone, pid, session id, user,
database, client host and port, application name):

    log_line_prefix = '%m [%p] %c %q%u@%d %r %a '

`%a` (the application name) is chosen by the client and may contain spaces, so it is best last in the prefix;
an application name made to look like the end of a prefix can make its own lines unreadable (they are then
reported as parse errors, never dropped silently). The csvlog format has no such ambiguity.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import itemgetter

from agent.errors import ConfigError
from agent.tailers._time import LogTimes
from agent.tailers.emit import name
from agent.tailers.pgaudit import AUDIT, PgAuditParser
from agent.tailers.pgaudit_sessions import Who

RECOMMENDED_PREFIX = "%m [%p] %c %q%u@%d %r %a "
SEVERITIES = "LOG|ERROR|FATAL|PANIC|WARNING|NOTICE|INFO|DEBUG[1-5]?|DETAIL|HINT|CONTEXT|STATEMENT|QUERY|LOCATION"
_TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
_ESCAPES = {
    "a": r".*?", "u": r".*?", "d": r".*?", "b": r".*?", "i": r".*?",
    "r": r"\[local\]|\S*?\(\d+\)|\S*?", "h": r"\S*?",
    "p": r"\d+", "P": r"\d*", "l": r"\d+", "x": r"\d+", "Q": r"-?\d+", "e": r"[0-9A-Z]{5}", "v": r"\S*?",
    "c": r"[0-9a-f]+\.[0-9a-f]+", "n": r"\d+\.\d+",
    "m": _TS + r"\.\d+ \S+", "t": _TS + r" \S+", "s": _TS + r" \S+",
}
_ESCAPE = re.compile(r"%(-?\d+)?(.)", re.DOTALL)
_CLIENT = re.compile(r"^(.*)\((\d+)\)$")


def compile_prefix(prefix: str, where: str = "log_line_prefix") -> re.Pattern[str]:
    """A regular expression for one stderr line: the prefix's fields as named groups, then severity and message."""
    parts: list[str] = []
    seen: set[str] = set()
    optional_from: int | None = None
    pos = 0
    for m in _ESCAPE.finditer(prefix):
        parts.append(re.escape(prefix[pos : m.start()]))
        pos = m.end()
        pad, esc = m.group(1), m.group(2)
        if esc == "%":
            parts.append("%")
        elif esc == "q":
            optional_from = len(parts)
        elif esc in _ESCAPES:
            body = _ESCAPES[esc]
            group = f"(?P<{esc}>{body})" if esc not in seen else f"(?:{body})"
            seen.add(esc)
            parts.append(rf"\s*{group}\s*" if pad else group)
        # PostgreSQL prints nothing for an escape it does not know; so do we.
    parts.append(re.escape(prefix[pos:]))
    if optional_from is not None:
        parts[optional_from:] = ["(?:" + "".join(parts[optional_from:]) + ")?"]
    if "m" not in seen and "t" not in seen and "n" not in seen:
        raise ConfigError(f"{where}: must contain %m, %t or %n (the time of each line); recommended: "
                          f"{RECOMMENDED_PREFIX!r}")
    pattern = "".join(parts) + rf"(?P<severity>{SEVERITIES}):  (?P<message>.*)"
    return re.compile(pattern, re.DOTALL)


def prefix_unknown(prefix: str) -> tuple[str, ...]:
    """Event fields the prefix does not give."""
    escapes = {m.group(2) for m in _ESCAPE.finditer(prefix)}
    missing: list[str] = []
    if "a" not in escapes:
        missing.append("application_name")
    if "r" not in escapes and "h" not in escapes:
        missing.append("client_addr")
    if "r" not in escapes:
        missing.append("client_port")
    return tuple(missing)


class StderrFormat:
    """Feeds complete stderr records to a PgAuditParser; holds the lines of a record not yet complete."""

    def __init__(self, parser: PgAuditParser, prefix: str, times: LogTimes, *, max_record_bytes: int) -> None:
        self.parser = parser
        self.regex = compile_prefix(prefix)
        self.times = times
        self.max_record_bytes = max_record_bytes
        groups = self.regex.groupindex
        self._time_group = "m" if "m" in groups else "t" if "t" in groups else "n"
        self._who_groups = tuple(g for g in ("c", "p", "u", "d", "r", "h", "a") if g in groups)
        # positions in m.groups(): one call instead of one per field
        self._at_time = groups[self._time_group] - 1
        self._at_who = tuple(groups[g] - 1 for g in self._who_groups)
        at_who = self._at_who
        self._who_key: Callable[[tuple[str | None, ...]], tuple[str | None, ...]] = (
            itemgetter(*at_who) if len(at_who) > 1 else lambda values: tuple(values[i] for i in at_who)
        )
        self._at_severity, self._at_message = groups["severity"] - 1, groups["message"] - 1
        self._who: dict[tuple[str | None, ...], Who] = {}
        parser.parse_time = times.pg_epoch if self._time_group == "n" else times.pg
        # the first line of a record not yet complete: time, who, severity, message parts, offset, number, size
        self._held: tuple[str, Who, str, list[str], int, int, int] | None = None
        self._quotes = 0

    def held(self) -> tuple[int, int] | None:
        """(offset, lines before it) of the first line not yet turned into events."""
        if self._held is None:
            return None
        return self._held[4], self._held[5] - 1

    def reset(self) -> None:
        self._held, self._quotes = None, 0

    def feed(self, raw: bytes, offset: int, number: int) -> None:
        text = raw.decode("utf-8", "replace")
        if text.startswith("\t"):
            if self._held is not None:
                self._continue(text[1:])
            return  # a continuation of a message that is not pgAudit's (or of one given up on)
        if self._held is not None:
            self._broken("an AUDIT message ended before its quoted statement did")
        m = self.regex.match(text)
        if m is None:
            self.parser.emitter.parse_error(offset, number, "the line does not start with the configured "
                                            "log_line_prefix")
            return
        values = m.groups()
        ts = values[self._at_time]
        key = self._who_key(values)
        who = self._who.get(key)
        if who is None:
            who = self._make_who(dict(zip(self._who_groups, key)))
            if len(self._who) >= 4096:
                self._who.clear()
            self._who[key] = who
        message = values[self._at_message]
        severity = values[self._at_severity]
        quotes = message.count('"')
        if quotes % 2 and message.startswith(AUDIT):
            self._held = (ts, who, severity, [message], offset, number, len(message))
            self._quotes = quotes
            return
        self.parser.message(ts, who, severity, message, offset, number)

    def _continue(self, text: str) -> None:
        held = self._held
        if held is None:
            return
        ts, who, severity, parts, offset, number, size = held
        parts.append(text)
        size += len(text) + 1
        if size > self.max_record_bytes:
            self._broken("an AUDIT message longer than max_record_bytes")
            return
        self._held = (ts, who, severity, parts, offset, number, size)
        self._quotes += text.count('"')
        if self._quotes % 2 == 0:
            self._held = None
            self.parser.message(ts, who, severity, "\n".join(parts), offset, number)

    def _broken(self, reason: str) -> None:
        held, self._held = self._held, None
        if held is not None:
            self.parser.emitter.parse_error(held[4], held[5], reason)

    def end_of_file(self) -> None:
        self._broken("the file ended inside an AUDIT message")

    @staticmethod
    def _make_who(groups: dict[str, str | None]) -> Who:
        addr, port = groups.get("h") or None, None
        remote = groups.get("r")
        if remote:
            cm = _CLIENT.match(remote)
            if cm is not None:
                addr, port = cm.group(1), int(cm.group(2))
            else:
                addr = remote
        user, database, app = groups.get("u"), groups.get("d"), groups.get("a")
        return Who(
            session=name(groups.get("c") or groups.get("p")) or "unknown",
            user=None if user == "[unknown]" else name(user),
            database=None if database == "[unknown]" else name(database),
            application_name=None if app == "[unknown]" else name(app, 1024),
            client_addr=name(addr, 64),
            client_port=port if port is not None and port <= 65535 else None,
        )
