"""pgAudit's db.query payloads straight to JSON bytes, as msgspec writes the DbQueryPayload of the same fields.

What a session (`Who`) and a statement (`StatementFacts`) contribute is encoded once and kept per object (both are
shared by many lines); per event only the group's own fields are written: time, tables, rows, what is unknown.
Field order and omissions follow the schema (agent/events.py DbQueryPayload, `omit_defaults`); tests compare the
bytes with the Struct's encoding.
"""

from __future__ import annotations

from agent.event_bytes import fields
from agent.event_bytes import json as encode_json
from agent.tailers._sql import StatementFacts
from agent.tailers.emit import MAX_COLUMNS
from agent.tailers.pgaudit_sessions import Who

_CACHE_MAX = 8192


def _leading(pairs: list[tuple[str, object]]) -> bytes:
    """`,"k":v…` for the pairs the schema writes (not None, not empty), or nothing."""
    frag = fields([(k, v) for k, v in pairs if v != []])
    return b"," + frag if frag else b""


class QueryPayloads:
    """Encodes the db.query payloads of one pgAudit source."""

    def __init__(self, server: str | None) -> None:
        self._server = _leading([("server", server)])
        # id(object) → (object, fragments): holding the object keeps its id from being reused while cached
        self._who: dict[int, tuple[Who, bytes, bytes]] = {}
        self._facts: dict[int, tuple[StatementFacts, bytes, bytes, bytes]] = {}
        self._types: dict[str, bytes] = {}
        self._unknown: dict[int, tuple[list[str], bytes]] = {}

    def _who_parts(self, who: Who) -> tuple[bytes, bytes]:
        hit = self._who.get(id(who))
        if hit is None or hit[0] is not who:
            if len(self._who) >= _CACHE_MAX:
                self._who.clear()
            head = b'{"session_id":' + encode_json(who.session)
            tail = _leading([("database", who.database), ("application_name", who.application_name),
                             ("client_addr", who.client_addr), ("client_port", who.client_port)])
            hit = self._who[id(who)] = (who, head, tail)
        return hit[1], hit[2]

    def _facts_parts(self, f: StatementFacts) -> tuple[bytes, bytes, bytes]:
        hit = self._facts.get(id(f))
        if hit is None or hit[0] is not f:
            if len(self._facts) >= _CACHE_MAX:
                self._facts.clear()
            text = b',"fingerprint":' + encode_json(f.fingerprint) + b',"statement":' + encode_json(f.redacted)
            touched = _leading([("columns", list(f.columns[:MAX_COLUMNS])),
                                ("sensitive_classes", list(f.sensitive_classes[:64]))])
            hit = self._facts[id(f)] = (f, text, touched, _leading([("cursor", f.cursor_name)]))
        return hit[1], hit[2], hit[3]

    def encode(self, who: Who, f: StatementFacts, statement_type: str, started_at: bytes | None, read: list[str],
               written: list[str], rows: int | None, system: bool, unknown: list[str]) -> bytes:
        """The payload; `started_at` already encoded (the envelope's time), tables already cut to the bound."""
        head, who_tail = self._who_parts(who)
        text, touched, cursor = self._facts_parts(f)
        kind = self._types.get(statement_type)
        if kind is None:
            if len(self._types) >= _CACHE_MAX:
                self._types.clear()
            kind = self._types[statement_type] = b',"statement_type":' + encode_json(statement_type)
        parts = [head, kind, text, who_tail, self._server]
        if started_at is not None:
            parts += (b',"started_at":', started_at)
        if read:
            parts += (b',"tables_read":', encode_json(read))
        if written:
            parts += (b',"tables_written":', encode_json(written))
        parts.append(touched)
        if rows is not None:
            parts.append(b',"rows":%d' % rows)
        parts.append(cursor)
        if system:
            parts.append(b',"system":true')
        if unknown:  # the parser's few shared lists, never modified
            done = self._unknown.get(id(unknown))
            if done is None or done[0] is not unknown:
                if len(self._unknown) >= _CACHE_MAX:
                    self._unknown.clear()
                done = self._unknown[id(unknown)] = (unknown, b',"unknown":' + encode_json(unknown))
            parts.append(done[1])
        parts.append(b"}")
        return b"".join(parts)

