"""What one statement touches: the proxy's narrow interface to SQL analysis.

`Analyser.analyse(sql)` is the only entry point the proxy uses. It redacts first (agent.proxy.redact), caches by
the redacted text, and only then parses, so a statement's literals are never parsed, cached or stored. Tables,
columns, sensitive classes, the fingerprint and the stored text come from `agent.sqlaudit`, the library the log
tailers use too; cursor bookkeeping (DECLARE / FETCH / CLOSE) is the proxy's own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.proxy.redact import redact, statement_type
from agent.sqlaudit import Analyser as LibraryAnalyser
from agent.sqlaudit import SensitiveMap

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its warnings quote statement text


@dataclass(frozen=True, slots=True)
class Analysis:
    statement: str  # redacted
    fingerprint: str
    statement_type: str
    tables_read: tuple[str, ...] = ()
    tables_written: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    sensitive_classes: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    cursor_op: str | None = None  # DECLARE, FETCH, MOVE, CLOSE
    cursor: str | None = None
    declared: Analysis | None = None  # the query a DECLARE names


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_\x80-\uffff][\w$\x80-\uffff]*)'
_DECLARE = re.compile(
    rf"^declare\s+({_IDENT})\s+(?:(?:binary|asensitive|insensitive|no\s+scroll|scroll)\s+)*cursor\s+"
    rf"(?:(?:with|without)\s+hold\s+)?for\s+(.+)$",
    re.I | re.S,
)
_FETCH = re.compile(rf"^(fetch|move)\b.*?({_IDENT})\s*;?\s*$", re.I | re.S)
_CLOSE = re.compile(rf"^close\s+({_IDENT})\s*;?\s*$", re.I | re.S)


def ident(name: str) -> str:
    """An SQL identifier as PostgreSQL folds it: unquoted to lower case, quoted as written."""
    if name.startswith('"'):
        return name[1:-1].replace('""', '"')
    return name.lower()


class Analyser:
    def __init__(self, sensitive: Mapping[str, str] | None = None, cache_size: int = 10000,
                 default_schema: str = "public") -> None:
        self.sensitive = {k.lower(): v for k, v in (sensitive or {}).items()}
        self.default_schema = default_schema
        self.cache_size = cache_size
        self._cache: dict[str, Analysis] = {}
        self.parse_failures = 0
        self._lib = LibraryAnalyser(
            "postgres", sensitive=SensitiveMap.of(self.sensitive) if self.sensitive else None,
            default_schema=default_schema,
        )

    def analyse(self, sql: str) -> Analysis:
        return self.analyse_redacted(redact(sql))

    def analyse_redacted(self, text: str) -> Analysis:
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        result = self._analyse(text)
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[text] = result
        return result

    def _analyse(self, text: str) -> Analysis:
        # Tables, columns, classes, fingerprint and the stored text come from the shared library, as for the
        # log tailers, so one statement looks the same whichever sensor saw it. Cursor bookkeeping stays here.
        a = self._lib.analyse(text)
        stype = statement_type(text)
        unknown = () if a.parse_ok else ("tables", "columns")
        if stype == "DECLARE":
            m = _DECLARE.match(text)
            if m:
                inner = self.analyse_redacted(m.group(2).rstrip("; "))
                return Analysis(a.redacted, a.fingerprint, stype, inner.tables_read, (), inner.columns,
                                inner.sensitive_classes, inner.unknown, "DECLARE", ident(m.group(1)), inner)
        if stype in ("FETCH", "MOVE"):
            m = _FETCH.match(text)
            if m:
                return Analysis(a.redacted, a.fingerprint, stype, cursor_op=stype, cursor=ident(m.group(2)))
        if stype == "CLOSE":
            m = _CLOSE.match(text)
            if m:
                return Analysis(a.redacted, a.fingerprint, stype, cursor_op="CLOSE", cursor=ident(m.group(1)))
        if stype in _NOT_DATA:
            return Analysis(a.redacted, a.fingerprint, stype)
        if not a.parse_ok:
            self.parse_failures += 1
        kind = a.statement_type if a.statement_type not in ("OTHER", "MULTI") else stype
        return Analysis(a.redacted, a.fingerprint, kind, tuple(a.tables_read), tuple(a.tables_written),
                        tuple(a.columns[:2048]), tuple(a.sensitive_classes), unknown)


_NOT_DATA = frozenset({
    "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET", "RESET", "SHOW", "DISCARD",
    "DEALLOCATE", "LISTEN", "UNLISTEN", "NOTIFY", "PREPARE", "EMPTY", "UNKNOWN", "ABORT",
})
