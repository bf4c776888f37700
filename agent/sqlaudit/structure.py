"""The literal-free facts of one statement: kind, fingerprint, tables, columns, sensitive classes.

These depend only on the statement's shape, never on its values, so they are computed once per cache key (the
redacted statement) and shared by every execution of it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, replace

import sqlglot
from sqlglot import exp

from agent.sqlaudit.catalog import Knowledge
from agent.sqlaudit.extract import Access, extract
from agent.sqlaudit.lexer import fold_parse_form, parse_form
from agent.sqlaudit.statements import PARSED_KINDS, fallback_tables, shape_of, split_qualified

# Statements longer than this are not handed to sqlglot (its time grows with them); they get the fallback.
MAX_PARSE_CHARS = 64_000


class _DropSqlglotWarnings(logging.Filter):
    """sqlglot warns when it falls back to an opaque Command; we report that as parse_ok=False instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


logging.getLogger("sqlglot").addFilter(_DropSqlglotWarnings())

_FP_TOKEN = re.compile(r'"(?:[^"]|"")*"|`(?:[^`]|``)*`|\$[0-9]+|[\w$]+|\S')


def fingerprint_of(key: str) -> str:
    """Hex digest of a cache key with spacing, keyword case and parameter style normalised away.

    Unquoted words are lower-cased: keywords ignore case, and so do PostgreSQL's unquoted names (MySQL table names
    that differ only in case therefore share a fingerprint).
    """
    tokens: list[str] = []
    for token in _FP_TOKEN.findall(key):
        first = token[0]
        if first == '"' or first == "`":
            tokens.append(token)
        elif first == "?" or (first == "$" and token[1:].isdigit()):
            if not tokens or tokens[-1] != "?":  # 'a' 'b' is one literal in PostgreSQL; never two values
                tokens.append("?")
        else:
            tokens.append(token.lower())
    return hashlib.blake2b(" ".join(tokens).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Structure:
    statement_type: str
    fingerprint: str
    tables_read: tuple[str, ...] = ()
    tables_written: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    sensitive_classes: tuple[str, ...] = ()
    sensitive_columns: tuple[str, ...] = ()
    cursor_name: str | None = None
    statement_name: str | None = None
    export: bool = False
    parse_ok: bool = True


def _parse(body: str, dialect: str) -> exp.Expression | None:
    if len(body) > MAX_PARSE_CHARS:
        return None
    try:
        trees = sqlglot.parse(body, read=dialect)
    except Exception:  # sqlglot raises ParseError, TokenError and, on deep nesting, RecursionError
        return None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1 or isinstance(trees[0], exp.Command):
        return None
    return trees[0]


def _sensitivity(access: Access, know: Knowledge) -> tuple[set[str], set[str], set[str]]:
    """(columns, sensitive classes, sensitive columns) with stars expanded where the columns are known."""
    columns = set(access.columns)
    classes: set[str] = set()
    hits: set[str] = set()
    for table in access.stars:
        listed = know.catalogue.columns_of(table)
        sensitive = know.sensitive.columns_of(table)
        if listed is not None:
            columns.update(f"{table}.{c}" for c in listed)
        else:
            columns.add(f"{table}.*")
            columns.update(f"{table}.{c}" for c in sensitive)
    for column in columns:
        table, _, name = column.rpartition(".")
        if table:
            found = know.sensitive.class_of(table, name)
            if found is not None:
                classes.add(found)
                hits.add(column)
    return columns, classes, hits


def build_structure(text: str, key: str, know: Knowledge, dialect: str) -> Structure:
    """Analyse one statement (`text`, the original) whose cache key is `key`."""
    form = fold_parse_form(parse_form(text, know.mysql))
    shape = shape_of(form, know.mysql)
    base = Structure(
        shape.kind,
        fingerprint_of(key),
        tables_written=tuple(sorted({_qualify(t, know) for t in shape.written})),
        cursor_name=shape.cursor_name,
        statement_name=shape.statement_name,
        export=shape.export,
    )
    if shape.body is None:
        return base
    tree = _parse(shape.body, dialect)
    try:
        access = None if tree is None else extract(tree, know, dialect)
    except Exception:  # a tree sqlglot built but we cannot walk (say, nested too deep): keyword fallback
        access = None
    if access is None:
        return _fallback(base, shape.body, know)
    access.written.update(base.tables_written)
    columns, classes, hits = _sensitivity(access, know)
    return replace(
        base,
        tables_read=tuple(sorted(access.read)),
        tables_written=tuple(sorted(access.written)),
        columns=tuple(sorted(columns)),
        sensitive_classes=tuple(sorted(classes)),
        sensitive_columns=tuple(sorted(hits)),
    )


def _qualify(text: str, know: Knowledge) -> str:
    parts = split_qualified(text, know.mysql)
    return know.qualify(parts[-2] if len(parts) >= 2 else None, parts[-1])


_FALLBACK_KINDS = (PARSED_KINDS - {"OTHER"}) | {"DECLARE", "PREPARE", "EXPLAIN"}


def _fallback(base: Structure, body: str, know: Knowledge) -> Structure:
    """sqlglot could not parse: tables from keywords, and every sensitive class of those tables (conservative)."""
    if base.statement_type not in _FALLBACK_KINDS:
        return replace(base, parse_ok=False)
    read, written = fallback_tables(body, base.statement_type, know.mysql)
    read_names = {know.qualify(p[-2] if len(p) >= 2 else None, p[-1]) for p in read}
    written_names = {know.qualify(p[-2] if len(p) >= 2 else None, p[-1]) for p in written}
    classes = set()
    for table in read_names | written_names:
        classes.update(know.sensitive.columns_of(table).values())
    return replace(
        base,
        tables_read=tuple(sorted(read_names)),
        tables_written=tuple(sorted(written_names | set(base.tables_written))),
        sensitive_classes=tuple(sorted(classes)),
        parse_ok=False,
    )
