"""Statement kinds, and the statements sqlglot does not model (cursors, PREPARE, EXPLAIN, MySQL exports).

Everything here works on the parse form (literals already neutralised, comments gone), so nothing it extracts can
carry a value. It also holds the fallback used when sqlglot cannot parse: table names found after FROM/JOIN/INTO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Possessive `*+`: a name never gives back characters, so `generate_series(` cannot match as `generate_serie`.
NAME = r'(?:"(?:[^"]|"")+"|`(?:[^`]|``)+`|[^\W\d][\w$]*+)'
QNAME = rf"{NAME}(?:\s*\.\s*{NAME}){{0,2}}"
_NAME = re.compile(NAME)

# Statement kinds by leading keyword. Kinds that name tables or columns are parsed with sqlglot; the others are
# understood from their keyword alone.
_KINDS = {
    "SELECT": "SELECT", "VALUES": "SELECT", "TABLE": "SELECT", "WITH": "SELECT",
    "INSERT": "INSERT", "REPLACE": "INSERT", "UPDATE": "UPDATE", "DELETE": "DELETE", "MERGE": "MERGE",
    "COPY": "COPY", "DECLARE": "DECLARE", "FETCH": "FETCH", "MOVE": "MOVE", "CLOSE": "CLOSE",
    "PREPARE": "PREPARE", "EXECUTE": "EXECUTE", "DEALLOCATE": "DEALLOCATE", "EXPLAIN": "EXPLAIN",
    "BEGIN": "BEGIN", "START": "BEGIN", "COMMIT": "COMMIT", "END": "COMMIT", "ROLLBACK": "ROLLBACK",
    "ABORT": "ROLLBACK", "SAVEPOINT": "SAVEPOINT", "RELEASE": "SAVEPOINT",
    "SET": "SET", "RESET": "SET", "SHOW": "SHOW", "USE": "USE",
    "CREATE": "DDL", "ALTER": "DDL", "DROP": "DDL", "COMMENT": "DDL", "RENAME": "DDL", "REFRESH": "DDL",
    "IMPORT": "DDL", "SECURITY": "DDL", "TRUNCATE": "TRUNCATE",
    "GRANT": "GRANT", "REVOKE": "REVOKE", "VACUUM": "VACUUM", "ANALYZE": "ANALYZE", "ANALYSE": "ANALYZE",
    "CLUSTER": "CLUSTER", "REINDEX": "REINDEX", "CHECKPOINT": "CHECKPOINT", "LISTEN": "LISTEN",
    "NOTIFY": "NOTIFY", "UNLISTEN": "LISTEN", "DISCARD": "DISCARD", "LOCK": "LOCK", "UNLOCK": "LOCK",
    "CALL": "CALL", "DO": "DO", "LOAD": "LOAD", "DESCRIBE": "DESCRIBE", "DESC": "DESCRIBE",
    "HANDLER": "HANDLER", "FLUSH": "FLUSH", "KILL": "KILL", "OPTIMIZE": "MAINTENANCE", "REPAIR": "MAINTENANCE",
    "CHECK": "MAINTENANCE", "CHECKSUM": "MAINTENANCE", "INSTALL": "PLUGIN", "UNINSTALL": "PLUGIN", "XA": "XA",
}  # fmt: skip
PARSED_KINDS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "DDL", "TRUNCATE"})

_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")
_DECLARE = re.compile(
    rf"DECLARE\s+({NAME})\s+(?:(?:BINARY|ASENSITIVE|INSENSITIVE|NO\s+SCROLL|SCROLL)\s+)*CURSOR\s+"
    r"(?:(?:WITH|WITHOUT)\s+HOLD\s+)?FOR\s+(.+)",
    re.I | re.S,
)
_MY_DECLARE = re.compile(rf"DECLARE\s+({NAME})\s+CURSOR\s+FOR\s+(.+)", re.I | re.S)
_LAST_NAME = re.compile(rf"({NAME})\s*$")
_CLOSE = re.compile(rf"CLOSE\s+({NAME})\s*$", re.I)
_PREPARE = re.compile(rf"PREPARE\s+({NAME})\s*(?:\([^)]*\))?\s+AS\s+(.+)", re.I | re.S)
_PREPARE_FROM = re.compile(rf"PREPARE\s+({NAME})\s+FROM\b", re.I)
_EXECUTE = re.compile(rf"EXECUTE\s+({NAME})", re.I)
_DEALLOCATE = re.compile(rf"(?:DEALLOCATE|DROP)\s+(?:PREPARE\s+)?({NAME})", re.I)
_EXPLAIN = re.compile(r"EXPLAIN\s+(\([^)]*\)\s*)?((?:(?:ANALYZE|ANALYSE|VERBOSE|EXTENDED)\s+)*)(.*)", re.I | re.S)
_OUTFILE = re.compile(r"\bINTO\s+(?:OUTFILE|DUMPFILE)\s+''(?:(?!\bFROM\b).)*", re.I | re.S)
_INTO_VARS = re.compile(r"\bINTO\s+@[\w$.]+(?:\s*,\s*@[\w$.]+)*", re.I)
_REPLACE = re.compile(r"^\s*REPLACE\b", re.I)
_LOAD_DATA = re.compile(
    r"LOAD\s+(?:DATA|XML)\s+(?:(?:LOW_PRIORITY|CONCURRENT|LOCAL)\s+)*INFILE\s+''\s+(?:(?:REPLACE|IGNORE)\s+)?"
    rf"INTO\s+TABLE\s+({QNAME})",
    re.I,
)
_ANALYZE_ON = re.compile(r"\bANALY[SZ]E\b(?!\s+(?:false|off|0)\b)", re.I)
_MAIN_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"})
_WORD_OR_PAREN = re.compile(r'"(?:[^"]|"")*"|`(?:[^`]|``)*`|[A-Za-z_][\w$]*|[()]')


@dataclass(frozen=True, slots=True)
class Shape:
    """What the keyword-level reading of a statement found."""

    kind: str
    body: str | None = None  # the text to give sqlglot, or None when the keyword says it all
    cursor_name: str | None = None
    statement_name: str | None = None
    export: bool = False
    written: tuple[str, ...] = ()  # qualified-name texts found without sqlglot (LOAD DATA … INTO TABLE t)


def unquote_name(name: str, fold: bool = True) -> str:
    """An identifier as the server resolves it: quoted ones verbatim, unquoted ones case-folded when `fold`."""
    if len(name) >= 2 and name[0] == name[-1] and name[0] in '"`':
        return name[1:-1].replace(name[0] * 2, name[0])
    return name.lower() if fold else name


def split_qualified(text: str, mysql: bool) -> list[str]:
    """The parts of a table name; MySQL table names keep their case (they are case-sensitive on Linux)."""
    return [unquote_name(p, fold=not mysql) for p in _NAME.findall(text)]


def _with_main_verb(text: str) -> str:
    """The statement a WITH clause leads to: the first DML keyword outside every parenthesis."""
    depth = 0
    for m in _WORD_OR_PAREN.finditer(text):
        token = m.group()
        if token == "(":
            depth += 1
        elif token == ")":
            depth = max(0, depth - 1)
        elif depth == 0 and token.upper() in _MAIN_VERBS:
            verb = token.upper()
            return "SELECT" if verb in ("VALUES", "TABLE") else verb
    return "SELECT"


def shape_of(text: str, mysql: bool) -> Shape:
    """Classify a parse-form statement and pull out what sqlglot cannot: cursor and prepared-statement names."""
    m = _FIRST_WORD.match(text)
    if m is None:
        return Shape("OTHER")
    word = m.group(1).upper()
    kind = _KINDS.get(word, "OTHER")
    if word == "WITH":
        kind = _with_main_verb(text)
    if kind in ("SELECT", "INSERT"):
        body = text
        export = False
        if mysql:
            body, outfiles = _OUTFILE.subn(" ", body)
            body = _INTO_VARS.sub(" ", body)
            export = outfiles > 0
            if word == "REPLACE":
                body = _REPLACE.sub("INSERT", body)
        return Shape(kind, body, export=export)
    if kind in PARSED_KINDS or kind == "OTHER":
        # OTHER: an expression pgAudit logs out of a DO block (`NOT EXISTS (SELECT …)`) still names tables.
        return Shape(kind, text, export=kind == "COPY" and _copy_is_export(text))
    if kind == "DECLARE":
        d = _DECLARE.match(text) or _MY_DECLARE.match(text)
        if d is None:
            return Shape(kind)
        inner = shape_of(d.group(2), mysql)
        return Shape(kind, inner.body, cursor_name=unquote_name(d.group(1)))
    if kind in ("FETCH", "MOVE"):
        last = _LAST_NAME.search(text)
        name = unquote_name(last.group(1)) if last else None
        return Shape(kind, cursor_name=name if name and name.upper() not in _DIRECTIONS else None)
    if kind == "CLOSE":
        c = _CLOSE.match(text)
        name = unquote_name(c.group(1)) if c else None
        return Shape(kind, cursor_name=None if name is None or name == "all" else name)
    if kind == "PREPARE":
        p = _PREPARE.match(text)
        if p is not None:
            inner = shape_of(p.group(2), mysql)
            return Shape(kind, inner.body, statement_name=unquote_name(p.group(1)), export=inner.export)
        f = _PREPARE_FROM.match(text)
        return Shape(kind, statement_name=unquote_name(f.group(1)) if f else None)
    if kind in ("EXECUTE", "DEALLOCATE"):
        e = (_EXECUTE if kind == "EXECUTE" else _DEALLOCATE).match(text)
        name = unquote_name(e.group(1)) if e else None
        return Shape(kind, statement_name=None if name in (None, "all", "prepare") else name)
    if kind == "EXPLAIN":
        x = _EXPLAIN.match(text)
        # Only EXPLAIN ANALYZE runs the statement; a plain EXPLAIN reads no data.
        if x is not None and _ANALYZE_ON.search((x.group(1) or "") + x.group(2)):
            inner = shape_of(x.group(3), mysql)
            return Shape(kind, inner.body, export=inner.export)
        return Shape(kind)
    if kind == "LOAD":
        load = _LOAD_DATA.match(text)
        return Shape(kind, written=(load.group(1),) if load else ())
    return Shape(kind)


_DIRECTIONS = frozenset({"NEXT", "PRIOR", "FIRST", "LAST", "ALL", "FORWARD", "BACKWARD", "ABSOLUTE", "RELATIVE"})
_COPY_TO = re.compile(rf"COPY\s+(?:\(.*\)|{QNAME}(?:\s*\([^)]*\))?)\s+TO\b", re.I | re.S)


def _copy_is_export(text: str) -> bool:
    return _COPY_TO.match(text) is not None


# Fallback: when sqlglot cannot parse, table names are taken from the keywords that introduce them.
_FROM_LIKE = re.compile(rf"\b(?:FROM|JOIN|USING)\s+(?:ONLY\s+)?({QNAME})(?!\s*\()", re.I)
_TARGET = re.compile(
    r"\b(?:INSERT\s+(?:(?:IGNORE|LOW_PRIORITY|DELAYED|HIGH_PRIORITY)\s+)*INTO|REPLACE\s+INTO|UPDATE"
    rf"|DELETE\s+FROM|MERGE\s+INTO|TRUNCATE(?:\s+TABLE)?|INTO\s+TABLE)\s+(?:ONLY\s+)?({QNAME})",
    re.I,
)
_COPY_TABLE = re.compile(rf"COPY\s+({QNAME})", re.I)
_CTE_NAMES = re.compile(
    rf"(?:\bWITH\s+(?:RECURSIVE\s+)?|,\s*)({NAME})\s*(?:\([^)]*\)\s*)?AS\s*(?:NOT\s+)?(?:MATERIALIZED\s*)?\(", re.I
)
_KEYWORDS = frozenset({"select", "lateral", "values", "unnest", "rows", "table", "where", "set"})


def fallback_tables(text: str, kind: str, mysql: bool) -> tuple[list[list[str]], list[list[str]]]:
    """Best-effort (read, written) table names as lists of name parts, for statements sqlglot rejected."""
    ctes = {unquote_name(m.group(1), fold=not mysql) for m in _CTE_NAMES.finditer(text)}
    written = [split_qualified(m.group(1), mysql) for m in _TARGET.finditer(text)]
    read = [split_qualified(m.group(1), mysql) for m in _FROM_LIKE.finditer(text)]
    if kind == "COPY":
        c = _COPY_TABLE.match(text)
        if c is not None:
            (read if _copy_is_export(text) else written).append(split_qualified(c.group(1), mysql))
    if kind == "DELETE":  # DELETE FROM t is a write; the FROM rule read it too
        read = [r for r in read if r not in written]

    def keep(parts: list[str]) -> bool:
        return bool(parts) and not (len(parts) == 1 and (parts[0] in ctes or parts[0] in _KEYWORDS))

    return [r for r in read if keep(r)], [w for w in written if keep(w)]
