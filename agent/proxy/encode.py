"""db.query events straight to JSON bytes, the way `agent.events.encode` would write them, at a third of the cost.

A busy proxy spools one event per statement, so building a msgspec Struct tree per event (about 10 µs) is the
largest part of its CPU. What repeats is encoded once and cached: the statement's fields per Analysis, the
session's per connection, the envelope's and the actor's as for every bulk source (`agent.event_bytes`), and
from those one template per (session, statement, end user): the bytes before `started_at` and after `ts`. Per
event only times, counts, codes and key hashes are written, with one formatting operation. Every value still
goes through msgspec's encoder (escaping), and tests decode the bytes with `agent.events.decode` and compare them
with the Struct-built event.
"""

from __future__ import annotations

import datetime as dt

from agent.event_bytes import EnvelopeBytes
from agent.event_bytes import fields as _fields
from agent.event_bytes import json as _j
from agent.events import Source
from agent.proxy.analysis import Analysis
from agent.proxy.audit import QueryRecord, SessionInfo

_UTC = dt.timezone.utc
MAX_STATEMENT = 65536
_CACHE_MAX = 20_000


class QueryEncoder:
    def __init__(self, source: Source, host: str, agent_id: str = "") -> None:
        self._envelope = EnvelopeBytes(source, host, agent_id)
        # id(object) → (object, bytes): the object is held so that its id cannot be reused while cached.
        self._statements: dict[int, tuple[Analysis, bytes]] = {}
        self._data: dict[int, tuple[Analysis, bytes]] = {}
        self._sessions: dict[tuple[int, str | None], tuple[SessionInfo, bytes]] = {}
        # (session, application name, statement, data, end user) → (the objects, head, tail): see the docstring
        self._templates: dict[tuple[int, str | None, int, int, str | None],
                              tuple[SessionInfo, Analysis, Analysis, bytes, bytes]] = {}

    def _statement(self, a: Analysis) -> bytes:
        hit = self._statements.get(id(a))
        if hit is not None and hit[0] is a:
            return hit[1]
        frag = _fields([("statement_type", a.statement_type), ("fingerprint", a.fingerprint),
                        ("statement", a.statement[:MAX_STATEMENT]), ("tables_written", a.tables_written)])
        if len(self._statements) >= _CACHE_MAX:
            self._statements.clear()
        self._statements[id(a)] = (a, frag)
        return frag

    def _tables(self, d: Analysis) -> bytes:
        hit = self._data.get(id(d))
        if hit is not None and hit[0] is d:
            return hit[1]
        frag = _fields([("tables_read", d.tables_read), ("columns", d.columns),
                        ("sensitive_classes", d.sensitive_classes), ("unknown", d.unknown)])
        frag = b"," + frag if frag else b""
        if len(self._data) >= _CACHE_MAX:
            self._data.clear()
        self._data[id(d)] = (d, frag)
        return frag

    def _session(self, info: SessionInfo, app: str | None) -> bytes:
        key = (id(info), app)  # application_name changes with SET application_name
        hit = self._sessions.get(key)
        if hit is not None and hit[0] is info:
            return hit[1]
        frag = _fields([("session_id", info.session_id), ("database", info.database),
                        ("application_name", app), ("client_addr", info.client_addr),
                        ("client_port", info.client_port), ("server", f"{info.server_addr}:{info.server_port}")])
        if len(self._sessions) >= _CACHE_MAX:
            self._sessions.clear()
        self._sessions[key] = (info, frag)
        return frag

    def _template(self, rec: QueryRecord) -> tuple[bytes, bytes]:
        return self.template(rec.session, rec.application_name, rec.analysis, rec.data, rec.end_user)

    def template(self, info: SessionInfo, app: str | None, a: Analysis, d: Analysis,
                 end_user: str | None) -> tuple[bytes, bytes]:
        """(head, tail): an event of this statement is head + started_at, duration, rows, bytes (and error, cursor,
        keys) + `},"id":…,"ts":…` + tail. The lane (agent/proxy/_framer.c) writes events from these too."""
        key = (id(info), app, id(a), id(d), end_user)
        hit = self._templates.get(key)
        if hit is not None and hit[0] is info and hit[1] is a and hit[2] is d:
            return hit[3], hit[4]
        head = b"".join((b'{"kind":"db.query","payload":{', self._session(info, app), b",", self._statement(a),
                         self._tables(d), b',"started_at":'))
        envelope = self._envelope
        tail = envelope.tail + envelope.actor(info.user, end_user) + b"}"
        if len(self._templates) >= _CACHE_MAX:
            self._templates.clear()
        self._templates[key] = (info, a, d, head, tail)
        return head, tail

    def encode(self, rec: QueryRecord, event_id: str) -> bytes:
        head, tail = self._template(rec)
        ts = _j(dt.datetime.fromtimestamp(rec.started, _UTC))
        extra = b""
        if rec.error is not None or rec.cursor is not None or rec.keys or rec.keys_total:
            parts = []
            if rec.error is not None:
                parts += (b',"error_code":', _j(rec.error))
            if rec.cursor is not None:
                parts += (b',"cursor":', _j(rec.cursor))
            if rec.keys:
                parts += (b',"customer_keys":["', '","'.join(rec.keys).encode(), b'"]')
            if rec.keys_total:
                parts += (b',"customer_keys_total":', b"%d" % rec.keys_total)
            extra = b"".join(parts)
        return b'%b%b,"duration_ms":%b,"rows":%d,"bytes":%d%b},"id":"%b","ts":%b%b' % (
            head, ts, _j(round(rec.duration * 1000, 3)), rec.rows or rec.counted or 0, rec.bytes, extra,
            event_id.encode(), ts, tail)
