"""What one statement touches: the proxy's narrow interface to SQL analysis.

`Analyser.analyse(sql)` is the only entry point the proxy uses. It redacts first (agent.proxy.redact), caches by
the redacted text, and only then parses, so a statement's literals are never parsed, cached or stored. The
parsing below is a small sqlglot-based stand-in (tables read/written, qualified columns where the statement
says which table they come from, sensitive classes from the configured map) until the project's SQL analysis
library replaces `_parse`; the cache, the redaction and the `Analysis` shape stay.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.proxy.redact import fingerprint, redact, statement_type

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
        self._tables_with_classes: dict[str, set[str]] = {}
        for col, cls in self.sensitive.items():
            self._tables_with_classes.setdefault(col.rsplit(".", 1)[0], set()).add(cls)
        self.default_schema = default_schema
        self.cache_size = cache_size
        self._cache: dict[str, Analysis] = {}
        self.parse_failures = 0

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
        stype = statement_type(text)
        fp = fingerprint(text)
        if stype == "DECLARE":
            m = _DECLARE.match(text)
            if m:
                inner = self.analyse_redacted(m.group(2).rstrip("; "))
                return Analysis(text, fp, stype, inner.tables_read, (), inner.columns, inner.sensitive_classes,
                                inner.unknown, "DECLARE", ident(m.group(1)), inner)
        if stype in ("FETCH", "MOVE"):
            m = _FETCH.match(text)
            if m:
                return Analysis(text, fp, stype, cursor_op=stype, cursor=ident(m.group(2)))
        if stype == "CLOSE":
            m = _CLOSE.match(text)
            if m:
                return Analysis(text, fp, stype, cursor_op="CLOSE", cursor=ident(m.group(1)))
        if stype in _NOT_DATA:
            return Analysis(text, fp, stype)
        return self._parse(text, fp, stype)

    def _parse(self, text: str, fp: str, stype: str) -> Analysis:
        import sqlglot
        from sqlglot import exp

        try:
            tree = sqlglot.parse_one(text, read="postgres")
        except Exception:  # noqa: BLE001 - any parser failure leaves the statement unparsed, never fatal
            self.parse_failures += 1
            return Analysis(text, fp, stype, unknown=("tables", "columns"))
        if stype == "WITH":
            stype = {exp.Select: "SELECT", exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE"}.get(
                type(tree), stype)
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        written: list[str] = []
        target = None
        if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create)) or (
            isinstance(tree, exp.Copy) and tree.args.get("kind")  # COPY … FROM
        ):
            target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            if isinstance(target, exp.Table):
                written.append(self._qualify(target))
        aliases: dict[str, str] = {}
        read: list[str] = []
        for t in tree.find_all(exp.Table):
            if not t.name or (not t.db and t.name.lower() in ctes):
                continue
            name = self._qualify(t)
            aliases[(t.alias or t.name).lower()] = name
            if t is not target and name not in read:
                read.append(name)
        columns: list[str] = []
        only = read[0] if len(read) == 1 else (written[0] if not read and written else None)
        for c in tree.find_all(exp.Column):
            owner = aliases.get(c.table.lower()) if c.table else only
            if owner and c.name:
                full = f"{owner}.{c.name.lower()}"
                if full not in columns:
                    columns.append(full)
        for star in tree.find_all(exp.Star):
            parent = star.parent
            owner = aliases.get(parent.table.lower()) if isinstance(parent, exp.Column) and parent.table else only
            if owner and f"{owner}.*" not in columns:
                columns.append(f"{owner}.*")
        if isinstance(tree, exp.Copy) and not tree.args.get("kind") and isinstance(tree.this, exp.Table):
            cols = tree.this.expressions if hasattr(tree.this, "expressions") else []
            if not cols:
                columns.append(f"{self._qualify(tree.this)}.*")
        return Analysis(text, fp, stype, tuple(read), tuple(written), tuple(columns[:2048]),
                        self._classes(columns))

    def _qualify(self, t: object) -> str:
        db = getattr(t, "db", "") or self.default_schema
        return f"{db.lower()}.{t.name.lower()}"  # type: ignore[attr-defined]

    def _classes(self, columns: list[str]) -> tuple[str, ...]:
        found: set[str] = set()
        for col in columns:
            if col.endswith(".*"):
                found |= self._tables_with_classes.get(col[:-2], set())
            elif col in self.sensitive:
                found.add(self.sensitive[col])
        return tuple(sorted(found))


_NOT_DATA = frozenset({
    "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET", "RESET", "SHOW", "DISCARD",
    "DEALLOCATE", "LISTEN", "UNLISTEN", "NOTIFY", "PREPARE", "EMPTY", "UNKNOWN", "ABORT",
})
