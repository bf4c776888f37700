"""Events straight to JSON bytes, byte for byte as `agent.events.encode` writes them, for sources that spool many.

Building an Envelope Struct tree for every event and encoding it costs more than the event's own facts. What is
the same for all of a source's events (host, source, agent id) is encoded once; actors once per user; a time
once per distinct value. A payload is encoded by msgspec (or assembled from fragments msgspec encoded), so every
value is escaped exactly as the schema's encoder would. Tests compare the bytes with `encode(new_event(...))`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from agent.events import Actor, Envelope, Source
from agent.ids import uuid7

json = msgspec.json.Encoder().encode
_CACHE_MAX = 20_000
MAX_NAME = 256  # the schema's `Name` bound


def fields(pairs: list[tuple[str, Any]]) -> bytes:
    """`"k":v,…` for the pairs whose value is not None/empty (the schema's defaults, which it omits)."""
    return b",".join(b'"' + k.encode() + b'":' + json(v) for k, v in pairs if v is not None and v != ())


def tag_of(kind: type[Envelope]) -> bytes:
    """`{"kind":"…","payload":` — how an event of `kind` begins (msgspec writes the tag, then required fields)."""
    return b'{"kind":' + json(kind.__struct_config__.tag) + b',"payload":'  # type: ignore[attr-defined]


class EnvelopeBytes:
    """The envelope of one source's events: fixed parts encoded once, actors and times cached."""

    def __init__(self, source: Source, host: str, agent_id: str = "") -> None:
        tail = b',"host":' + json(host) + b',"source":' + json(source)
        if agent_id:
            tail += b',"agent_id":' + json(agent_id)
        self.tail = tail + b',"actor":'
        self._actors: dict[tuple[str | None, str | None], bytes] = {}
        self._last_ts: dt.datetime | None = None
        self._last_time: tuple[int, bytes] = (0, b"")

    def actor(self, db_user: str | None, end_user: str | None) -> bytes:
        """The encoded actor; empty names are left out, long ones cut to the schema's bound."""
        key = (db_user, end_user)
        frag = self._actors.get(key)
        if frag is None:
            if len(self._actors) >= _CACHE_MAX:
                self._actors.clear()
            actor = Actor(db_user=db_user[:MAX_NAME] if db_user else None,
                          end_user=end_user[:MAX_NAME] if end_user else None)
            frag = self._actors[key] = json(actor)
        return frag

    def time(self, ts: dt.datetime) -> tuple[int, bytes]:
        """(nanoseconds since the epoch, the JSON string) of `ts`; log lines share times, so the last is kept."""
        if ts is not self._last_ts:
            self._last_ts = ts
            self._last_time = (int(ts.timestamp() * 1_000_000_000), json(ts))
        return self._last_time

    def event(self, tag: bytes, payload: bytes, ts: dt.datetime, actor: bytes) -> tuple[str, bytes]:
        """(id, encoded event) for a payload already encoded; `tag` from `tag_of`, `actor` from `actor()`."""
        ns, when = self.time(ts)
        event_id = uuid7(ns)
        return event_id, b"".join((tag, payload, b',"id":"', event_id.encode(), b'","ts":', when, self.tail, actor,
                                   b"}"))
