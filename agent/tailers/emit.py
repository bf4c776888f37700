"""Building the tailers' events: bounds of the event schema respected, parse errors counted and capped.

Events are encoded as they are made (`agent.event_bytes`: the bytes `agent.events.encode` would write, without an
Envelope per event), so a read holds ids and bytes until it is spooled, not thousands of Struct trees.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections import Counter

from agent.event_bytes import EnvelopeBytes, tag_of
from agent.event_bytes import json as encode_json
from agent.events import (
    DbQuery,
    DbQueryPayload,
    DbSession,
    DbSessionPayload,
    ParseError,
    ParseErrorPayload,
    Source,
    utcnow,
)

MAX_NAME = 256
MAX_TABLES = 512
MAX_COLUMNS = 2048
# Fields no audit log carries; each db.query from a tailer lists them in `unknown`.
NEVER_LOGGED = ("duration_ms", "bytes", "customer_keys")
PARSE_ERROR_EVENTS_PER_BATCH = 50
_DB_QUERY, _DB_SESSION, _PARSE_ERROR = tag_of(DbQuery), tag_of(DbSession), tag_of(ParseError)


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
        self.envelope = EnvelopeBytes(self.source, host or socket.gethostname(), agent_id)
        self.location = ""  # the file being read, for parse errors
        self.events: list[tuple[str, bytes]] = []  # (event id, encoded event), as the spool takes them
        self.counts: Counter[str] = Counter()
        self._batch_errors = 0
        self._suppressed: tuple[int, int | None, int | None, str] | None = None

    def query(self, payload: DbQueryPayload, ts: dt.datetime, db_user: str | None, end_user: str | None) -> None:
        self.query_bytes(encode_json(payload), ts, db_user, end_user)

    def query_bytes(self, payload: bytes, ts: dt.datetime, db_user: str | None, end_user: str | None) -> None:
        """A db.query whose payload is already encoded (as msgspec would encode its DbQueryPayload)."""
        self.counts["db.query"] += 1
        envelope = self.envelope
        self.events.append(envelope.event(_DB_QUERY, payload, ts, envelope.actor(db_user, end_user)))

    def session(self, payload: DbSessionPayload, ts: dt.datetime, db_user: str | None) -> None:
        self.counts["db.session"] += 1
        envelope = self.envelope
        self.events.append(envelope.event(_DB_SESSION, encode_json(payload), ts, envelope.actor(db_user, None)))

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
        envelope = self.envelope
        self.events.append(envelope.event(_PARSE_ERROR, encode_json(payload), utcnow(), envelope.actor(None, None)))

    def take(self) -> list[tuple[str, bytes]]:
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
