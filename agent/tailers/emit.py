"""Building the tailers' events: bounds of the event schema respected, parse errors counted and capped."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from agent.events import (
    Actor,
    DbQuery,
    DbQueryPayload,
    DbSession,
    DbSessionPayload,
    Envelope,
    ParseError,
    ParseErrorPayload,
    Source,
    new_event,
)

MAX_NAME = 256
MAX_TABLES = 512
MAX_COLUMNS = 2048
# Fields no audit log carries; each db.query from a tailer lists them in `unknown`.
NEVER_LOGGED = ("duration_ms", "bytes", "customer_keys")
PARSE_ERROR_EVENTS_PER_BATCH = 50


def name(value: str | None, limit: int = MAX_NAME) -> str | None:
    """A `Name` field: None for empty, cut to the schema's bound."""
    if not value:
        return None
    return value if len(value) <= limit else value[:limit]


def names(values: list[str] | tuple[str, ...], limit: int) -> list[str]:
    out: list[str] = []
    for v in values:
        n = name(v)
        if n is not None and n not in out:
            out.append(n)
            if len(out) == limit:
                break
    return out


class Emitter:
    """Collects the events of one read; the source spools them with the position they lead to."""

    def __init__(self, source_type: str, source_name: str, *, agent_id: str = "", host: str | None = None) -> None:
        self.source = Source(type=source_type, name=source_name)
        self.agent_id = agent_id
        self.host = host
        self.location = ""  # the file being read, for parse errors
        self.events: list[Envelope] = []
        self.counts: Counter[str] = Counter()
        self._actors: dict[tuple[str | None, str | None], Actor] = {}
        self._batch_errors = 0
        self._suppressed: tuple[int, int | None, int | None, str] | None = None

    def _actor(self, db_user: str | None, end_user: str | None) -> Actor:
        key = (db_user, end_user)
        actor = self._actors.get(key)
        if actor is None:
            if len(self._actors) >= 4096:
                self._actors.clear()
            actor = self._actors[key] = Actor(db_user=name(db_user), end_user=name(end_user))
        return actor

    def query(self, payload: DbQueryPayload, ts: dt.datetime, db_user: str | None, end_user: str | None) -> None:
        self.counts["db.query"] += 1
        self.events.append(new_event(DbQuery, payload, source=self.source, actor=self._actor(db_user, end_user),
                                     host=self.host, ts=ts, agent_id=self.agent_id))

    def session(self, payload: DbSessionPayload, ts: dt.datetime, db_user: str | None) -> None:
        self.counts["db.session"] += 1
        self.events.append(new_event(DbSession, payload, source=self.source, actor=self._actor(db_user, None),
                                     host=self.host, ts=ts, agent_id=self.agent_id))

    def parse_error(self, offset: int | None, line: int | None, reason: str, *, location: str | None = None) -> None:
        """A line that could not be read: counted always; an event for the first few of each read, then one
        event that says how many more there were."""
        self.counts["parse_error"] += 1
        where = location or self.location or "?"
        if self._batch_errors < PARSE_ERROR_EVENTS_PER_BATCH:
            self._batch_errors += 1
            self._error_event(where, offset, line, reason)
        elif self._suppressed is None:
            self._suppressed = (1, offset, line, where)
        else:
            n, off, ln, loc = self._suppressed
            self._suppressed = (n + 1, off, ln, loc)

    def gap(self, reason: str) -> None:
        """Lines that may be lost to rotation: an event saying so, and a count."""
        self.counts["gap"] += 1
        self._error_event(self.location or "?", None, None, reason)

    def _error_event(self, where: str, offset: int | None, line: int | None, reason: str) -> None:
        payload = ParseErrorPayload(location=where[:4096], offset=offset, line=line, reason=reason[:1024])
        self.events.append(new_event(ParseError, payload, source=self.source, host=self.host, agent_id=self.agent_id))

    def take(self) -> list[Envelope]:
        """The events collected since the last take (the parse-error summary included)."""
        if self._suppressed is not None:
            n, off, ln, loc = self._suppressed
            self._error_event(loc, off, ln, f"{n} more unreadable lines in this read, the first of them here")
        out, self.events = self.events, []
        self._batch_errors, self._suppressed = 0, None
        return out

    def discard(self) -> None:
        """Forget the events of a read that will be done again (the spool refused it)."""
        self.events = []
        self._batch_errors, self._suppressed = 0, None
