"""`analyse(sql)`: the one entry point the proxy and the audit-log tailers share.

Two caches make repeated statements cheap. The exact text of recent statements maps straight to their finished
Analysis (prepared statements and ORM queries repeat verbatim). Otherwise the fast lexer redacts the text, and
its redacted form, with value lists folded, keys the cache of literal-free structure; only a new statement shape
reaches sqlglot.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any

from agent.errors import ConfigError
from agent.sqlaudit.catalog import EMPTY_CATALOGUE, EMPTY_SENSITIVE, Catalogue, Knowledge, SensitiveMap
from agent.sqlaudit.commenter import END_USER_TAG
from agent.sqlaudit.lexer import cache_key, scan
from agent.sqlaudit.structure import Structure, build_structure, fingerprint_of

_DIALECTS = {"postgres": "postgres", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}

Tags = tuple[tuple[str, str], ...]

# Bounds of the event schema (agent/events.py DbQueryPayload) that payload_fields() respects.
MAX_STATEMENT_CHARS = 65536
MAX_TABLES = 512
MAX_COLUMNS = 2048
TRUNCATED_MARK = " …"


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one SQL text does, without any of its values.

    For a text of several statements `multi` is True, `parts` holds each statement's own Analysis, the type is
    MULTI and the table, column and class fields are their union.
    """

    statement_type: str
    fingerprint: str
    redacted: str
    tables_read: tuple[str, ...] = ()
    tables_written: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    sensitive_classes: tuple[str, ...] = ()
    sensitive_columns: tuple[str, ...] = ()
    end_user: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    cursor_name: str | None = None
    statement_name: str | None = None
    export: bool = False
    multi: bool = False
    parts: tuple[Analysis, ...] = ()
    parse_ok: bool = True
    truncated: bool = False

    def tag(self, name: str) -> str | None:
        for key, value in self.tags:
            if key == name:
                return value
        return None

    def payload_fields(self) -> dict[str, Any]:
        """The DbQueryPayload fields this analysis fills, cut to the event schema's bounds."""
        statement = self.redacted
        if len(statement) > MAX_STATEMENT_CHARS:
            statement = statement[: MAX_STATEMENT_CHARS - len(TRUNCATED_MARK)] + TRUNCATED_MARK
        return {
            "statement_type": self.statement_type,
            "fingerprint": self.fingerprint,
            "statement": _utf8(statement),
            "tables_read": [_utf8(t)[:256] for t in self.tables_read[:MAX_TABLES]],
            "tables_written": [_utf8(t)[:256] for t in self.tables_written[:MAX_TABLES]],
            "columns": [_utf8(c)[:256] for c in self.columns[:MAX_COLUMNS]],
            "sensitive_classes": list(self.sensitive_classes[:64]),
            "cursor": None if self.cursor_name is None else _utf8(self.cursor_name)[:256],
        }


def _utf8(text: str) -> str:
    """Text an event can carry: a proxy that decodes with surrogateescape can leave lone surrogates in names."""
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


class _Cache:
    """A bounded map kept as two generations: new entries go to the young one, which becomes the old one when
    full (the old one is dropped). Lookups and inserts are single dict operations, atomic under the GIL, so the
    proxy's event loop and tailer threads can share one without a lock; a race at worst loses an entry."""

    def __init__(self, size: int) -> None:
        self.half = max(1, size // 2)
        self.young: dict[Hashable, Any] = {}
        self.old: dict[Hashable, Any] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def get(self, key: Hashable) -> Any:
        value = self.young.get(key)
        if value is None:
            value = self.old.get(key)
            if value is None:
                self.misses += 1
                return None
            self.put(key, value)  # still in use: keep it when the old generation goes
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        young = self.young
        young[key] = value
        if len(young) >= self.half:
            self.old, self.young = young, {}


class Analyser:
    """One configuration's analyser with its caches; build one per (dialect, maps) and keep it.

    `database` qualifies unqualified MySQL tables; `default_schema` those of PostgreSQL (default `public`).
    `max_statement_chars` bounds the work on a huge text: only its beginning is analysed (`truncated`).
    """

    def __init__(
        self,
        dialect: str = "postgres",
        *,
        sensitive: SensitiveMap | None = None,
        catalogue: Catalogue | None = None,
        database: str | None = None,
        default_schema: str | None = None,
        text_cache_size: int = 4096,
        text_cache_max_chars: int = 4096,
        structure_cache_size: int = 8192,
        max_statement_chars: int = 1_000_000,
    ) -> None:
        if dialect not in _DIALECTS:
            raise ConfigError(f"SQL dialect {dialect!r} is not known; use one of {sorted(_DIALECTS)}")
        self.dialect = _DIALECTS[dialect]
        mysql = self.dialect == "mysql"
        schema = default_schema if default_schema is not None else (database if mysql else "public")
        self.knowledge = Knowledge(
            mysql=mysql,
            default_schema=schema.lower() if schema and not mysql else schema,
            sensitive=sensitive or EMPTY_SENSITIVE,
            catalogue=catalogue or EMPTY_CATALOGUE,
        )
        self.texts = _Cache(text_cache_size)
        self.structures = _Cache(structure_cache_size)
        self.text_cache_max_chars = text_cache_max_chars
        self.max_statement_chars = max_statement_chars
        self.errors = 0  # texts the analyser failed on (a defect to report); shown in heartbeats by the caller
        self._knowledge: dict[str, Knowledge] = {}

    def analyse(self, sql: str, *, schema: str | None = None) -> Analysis:
        """Analyse `sql`; never raises on any text and never returns a literal of it.

        `schema` is where this statement's unqualified tables live when it differs from the analyser's default:
        the session's current database (MySQL, a tailer's `database` field) or first search_path schema.
        """
        if not isinstance(sql, str):
            raise TypeError("analyse() takes the statement as str; decode the bytes first")
        cacheable = len(sql) <= self.text_cache_max_chars
        text_key: Hashable = sql if schema is None else (schema, sql)
        if cacheable:
            done = self.texts.get(text_key)
            if done is not None:
                return done
        try:
            result = self._analyse(sql, schema)
        except Exception:  # a defect here must not stop a sensor; nothing of the text is kept
            self.errors += 1
            return _UNANALYSABLE
        if cacheable:
            self.texts.put(text_key, result)
        return result

    def _knowledge_for(self, schema: str | None) -> Knowledge:
        if schema is None:
            return self.knowledge
        know = self._knowledge.get(schema)
        if know is None:
            if len(self._knowledge) >= 256:
                self._knowledge.clear()
            folded = schema if self.knowledge.mysql else schema.lower()
            know = self._knowledge[schema] = replace(self.knowledge, default_schema=folded or None)
        return know

    def statement(self, text: str, redacted: str, tags: Tags, end_user: str | None, truncated: bool,
                  schema: str | None = None) -> Analysis:
        """One statement's Analysis: the cached one of its shape when nothing but literal values differ."""
        key = cache_key(redacted)
        structure_key: Hashable = key if schema is None else (schema, key)
        shared = self.structures.get(structure_key)
        if shared is None:
            know = self._knowledge_for(schema)
            shared = _combine(build_structure(text, key, know, self.dialect), redacted, (), None, False)
            self.structures.put(structure_key, shared)
        if shared.redacted == redacted and not tags and not truncated:
            return shared  # the common case costs no new object
        return _combine(shared, redacted, tags, end_user, truncated)

    def _analyse(self, sql: str, schema: str | None) -> Analysis:
        truncated = len(sql) > self.max_statement_chars
        if truncated:
            sql = sql[: self.max_statement_chars]
        scanned = scan(sql, self.knowledge.mysql)
        tags = scanned.tags
        end_user = (dict(tags).get(END_USER_TAG) or None) if tags else None
        if not scanned.parts:
            return Analysis("EMPTY", fingerprint_of(""), "", tags=tags, end_user=end_user, truncated=truncated)
        parts = [
            self.statement(sql[p.start : p.end], p.redacted, tags, end_user, truncated, schema)
            for p in scanned.parts
        ]
        if len(parts) == 1:
            return parts[0]
        return _union(parts, tags, end_user, truncated)


def _combine(s: Structure | Analysis, redacted: str, tags: Tags, end_user: str | None, truncated: bool) -> Analysis:
    return Analysis(
        s.statement_type, s.fingerprint, redacted, s.tables_read, s.tables_written, s.columns,
        s.sensitive_classes, s.sensitive_columns, end_user, tags, s.cursor_name, s.statement_name, s.export,
        False, (), s.parse_ok, truncated,
    )  # fmt: skip


def _union(parts: list[Analysis], tags: Tags, end_user: str | None, truncated: bool) -> Analysis:
    def merged(field: str) -> tuple[str, ...]:
        return tuple(sorted({v for p in parts for v in getattr(p, field)}))

    return Analysis(
        "MULTI",
        fingerprint_of(" ; ".join(p.fingerprint for p in parts)),
        "; ".join(p.redacted for p in parts),
        merged("tables_read"),
        merged("tables_written"),
        merged("columns"),
        merged("sensitive_classes"),
        merged("sensitive_columns"),
        end_user,
        tags,
        next((p.cursor_name for p in parts if p.cursor_name), None),
        next((p.statement_name for p in parts if p.statement_name), None),
        any(p.export for p in parts),
        True,
        tuple(parts),
        all(p.parse_ok for p in parts),
        truncated,
    )


_UNANALYSABLE = Analysis("OTHER", fingerprint_of("\x00unanalysable"), "", parse_ok=False)

_ANALYSERS: dict[tuple[object, ...], tuple[object, object, Analyser]] = {}
_ANALYSERS_LOCK = threading.Lock()


def analyse(
    sql: str,
    *,
    dialect: str = "postgres",
    sensitive: SensitiveMap | None = None,
    catalogue: Catalogue | None = None,
    database: str | None = None,
    schema: str | None = None,
) -> Analysis:
    """Analyse one SQL text with a shared analyser for this configuration (maps are matched by identity).

    `database` qualifies MySQL tables, `schema` PostgreSQL ones (default `public`). A sensor analysing every
    statement should build its own Analyser once instead.
    """
    key = (dialect, id(sensitive), id(catalogue))
    entry = _ANALYSERS.get(key)
    if entry is None or entry[0] is not sensitive or entry[1] is not catalogue:
        analyser = Analyser(dialect, sensitive=sensitive, catalogue=catalogue)
        with _ANALYSERS_LOCK:
            if len(_ANALYSERS) >= 64:
                _ANALYSERS.clear()
            _ANALYSERS[key] = entry = (sensitive, catalogue, analyser)
    override = database if entry[2].knowledge.mysql else schema
    return entry[2].analyse(sql, schema=override)
