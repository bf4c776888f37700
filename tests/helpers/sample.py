"""Events for delivery tests: valid ones of a chosen size, and spool entries the collector must refuse."""

from __future__ import annotations

import os

import msgspec

from agent.events import Actor, DbQuery, DbQueryPayload, Envelope, Source, encode, new_event
from agent.ids import uuid7


def query_event(statement_len: int = 40, *, agent_id: str = "") -> Envelope:
    """A `db.query` event whose statement is `statement_len` incompressible characters (hex), so that its
    gzip size grows with it."""
    statement = os.urandom(statement_len // 2 + 1).hex()[:statement_len]
    return new_event(
        DbQuery,
        DbQueryPayload(session_id="s1", statement_type="SELECT", fingerprint="f" * 16, statement=statement,
                       tables_read=["customers"], rows=1),
        source=Source(type="proxy", name="test"),
        actor=Actor(db_user="alice"),
        agent_id=agent_id,
    )


def spooled(event: Envelope) -> tuple[str, bytes]:
    """The `(event_id, body)` pair the agent puts into its spool."""
    return event.id, encode(event)


def malformed_entry() -> tuple[str, bytes]:
    """Well-formed JSON that breaks the schema (a count given as text): the collector refuses it with a reason."""
    event_id = uuid7()
    body = msgspec.json.encode({
        "kind": "db.query", "id": event_id, "ts": "2026-01-01T00:00:00Z", "host": "h",
        "source": {"type": "proxy"},
        "payload": {"session_id": "s", "statement_type": "SELECT", "fingerprint": "f", "statement": "x",
                    "rows": "many"},
    })
    return event_id, body


def not_json_entry() -> tuple[str, bytes]:
    """Bytes that are not JSON at all, as a faulty source could spool them."""
    event_id = uuid7()
    return event_id, b'{"kind": "db.query", "id": "' + event_id.encode() + b'", '
