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

from agent.errors import ConfigError
from agent.tailers._time import LogTimes, TimeFormatError
from agent.tailers.pgaudit import AUDIT, PgAuditParser, PgContext

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
        self._held: tuple[PgContext, str, list[str], int, int, int] | None = None  # ctx, severity, parts, off…
        self._quotes = 0
        self._skipping = False  # the rest of an over-long record

    def held(self) -> tuple[int, int] | None:
        """(offset, lines before it) of the first line not yet turned into events."""
        if self._held is None:
            return None
        return self._held[3], self._held[4] - 1

    def reset(self) -> None:
        self._held, self._quotes, self._skipping = None, 0, False

    def feed(self, raw: bytes, offset: int, number: int) -> None:
        text = raw.decode("utf-8", "replace")
        if text.startswith("\t"):
            if self._held is not None:
                self._continue(text[1:])
            return  # a continuation of a message that is not pgAudit's (or of a skipped one)
        self._skipping = False
        if self._held is not None:
            self._broken("an AUDIT message ended before its quoted statement did")
        m = self.regex.match(text)
        if m is None:
            self.parser.emitter.parse_error(offset, number, "the line does not start with the configured "
                                            "log_line_prefix")
            return
        ctx = self._context(m, offset, number)
        if ctx is None:
            return
        message = m.group("message")
        severity = m.group("severity")
        quotes = message.count('"')
        if quotes % 2 and message.startswith(AUDIT):
            self._held = (ctx, severity, [message], offset, number, len(message))
            self._quotes = quotes
            return
        self.parser.message(ctx, severity, message, offset, number)

    def _continue(self, text: str) -> None:
        held = self._held
        if held is None:
            return
        ctx, severity, parts, offset, number, size = held
        parts.append(text)
        size += len(text) + 1
        if size > self.max_record_bytes:
            self._broken("an AUDIT message longer than max_record_bytes")
            self._skipping = True
            return
        self._held = (ctx, severity, parts, offset, number, size)
        self._quotes += text.count('"')
        if self._quotes % 2 == 0:
            self._held = None
            self.parser.message(ctx, severity, "\n".join(parts), offset, number)

    def _broken(self, reason: str) -> None:
        held, self._held = self._held, None
        if held is not None:
            self.parser.emitter.parse_error(held[3], held[4], reason)

    def end_of_file(self) -> None:
        self._broken("the file ended inside an AUDIT message")

    def _context(self, m: re.Match[str], offset: int, number: int) -> PgContext | None:
        groups = m.groupdict()
        try:
            if groups.get("m"):
                ts = self.times.pg(groups["m"])
            elif groups.get("t"):
                ts = self.times.pg(groups["t"])
            else:
                ts = self.times.pg_epoch(groups["n"])
        except (TimeFormatError, KeyError, TypeError) as e:
            self.parser.emitter.parse_error(offset, number, str(e) if isinstance(e, TimeFormatError) else
                                            "the line has no time")
            return None
        addr, port = groups.get("h") or None, None
        remote = groups.get("r")
        if remote:
            cm = _CLIENT.match(remote)
            if cm is not None:
                addr, port = cm.group(1), int(cm.group(2))
            else:
                addr = remote
        session = groups.get("c") or groups.get("p") or "unknown"
        user, database = groups.get("u"), groups.get("d")
        return PgContext(
            ts=ts,
            session=session,
            user=None if not user or user == "[unknown]" else user,
            database=None if not database or database == "[unknown]" else database,
            application_name=None if groups.get("a") in (None, "", "[unknown]") else groups.get("a"),
            client_addr=addr,
            client_port=port,
        )
