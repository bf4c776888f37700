"""The one door through which the tailers analyse SQL: `analyse_statement(sql, dialect, sensitive)`.

The proxy and the tailers must fingerprint and redact a statement identically, so this function is meant to call
the shared analysis library. Until that library is wired in, it uses a deliberately crude fallback that errs on
the side of hiding: EVERY quoted string (single-, double- or dollar-quoted for MariaDB/PostgreSQL as their
dialects quote strings), every number and every comment body is replaced, and an unterminated quote hides
everything after it. The fallback cannot tell tables or columns (the tailers take relations from the audit logs
themselves) nor sensitive classes.

Results are cached by the exact statement text (in memory only): servers log the same statements over and over.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import NamedTuple

MAX_STATEMENT_CHARS = 65536  # the event schema's bound on `statement`
_CACHE_SIZE = 8192
_CACHE_MAX_CHARS = 8192


class StatementFacts(NamedTuple):
    """What a statement does, without any of its values."""

    statement_type: str  # "" when the analysis cannot tell; the caller may know better (pgAudit's COMMAND)
    fingerprint: str
    redacted: str
    tables_read: tuple[str, ...] = ()
    tables_written: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    sensitive_classes: tuple[str, ...] = ()
    end_user: str | None = None
    cursor_name: str | None = None  # the cursor a DECLARE declares

    def to_dict(self) -> dict[str, object]:
        return self._asdict()

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> StatementFacts:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})  # type: ignore[arg-type]


def analyse_statement(sql: str, dialect: str, sensitive: Mapping[str, str] | None = None) -> StatementFacts:
    """Fingerprint, redacted text and what the statement touches; `dialect` is "postgres" or "mysql"."""
    key = (dialect, sql)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    facts = _fallback(sql, dialect)
    if len(sql) > _CACHE_MAX_CHARS:
        return facts  # huge texts (bulk VALUES lists) rarely repeat; keep the cache's memory bounded
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()  # cheaper than tracking recency; statements that repeat come back at once
    _cache[key] = facts  # single dict operations: safe under the GIL for several tailer threads
    return facts


_cache: dict[tuple[str, str], StatementFacts] = {}

# One pass over the text that stops only at what must be replaced or skipped: comments, quoted strings, quoted
# identifiers (kept whole, so that nothing inside them is taken for a literal) and numbers that do not belong to
# a word or a $n parameter. Plain words and punctuation are copied by the regex engine, not by Python.
# The lookahead lets the engine pass over ordinary characters without trying every alternative at each of them.
_PG_TOKENS = re.compile(
    r"""(?=[/\-"'$0-9.]|[eE]'|[uU]&')(?:
  (?P<block>/\*.*?(?:\*/|\Z))
| (?P<line>--[^\n]*)
| (?P<ident>"(?:[^"]|"")*(?:"|\Z))
| (?P<lit>(?<![\w$])[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z)
        | (?:(?<![\w$])[uU]&)?'(?:[^']|'')*(?:'|\Z)
        | \$(?P<tag>[A-Za-z_][A-Za-z_0-9]*|)\$.*?(?:\$(?P=tag)\$|\Z)
        | (?<![\w$.])(?:0[xX][0-9A-Fa-f_]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(?![\w$])
        ))""",
    re.VERBOSE | re.DOTALL,
)
_MY_TOKENS = re.compile(
    r"""(?=[/\-#`"'0-9.])(?:
  (?P<block>/\*.*?(?:\*/|\Z))
| (?P<line>(?:--\s|\#)[^\n]*)
| (?P<ident>`(?:[^`]|``)*(?:`|\Z))
| (?P<lit>'(?:[^'\\]|\\.|'')*(?:'|\Z)
        | "(?:[^"\\]|\\.|"")*(?:"|\Z)
        | (?<![\w$.])(?:0[xX][0-9A-Fa-f]+|0[bB][01]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(?![\w$])
        ))""",
    re.VERBOSE | re.DOTALL,
)


def _replace(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "ident":
        return m.group()
    if kind == "block":
        return "/*?*/"
    if kind == "line":
        return "--?" if m.group().startswith("-") else "#?"
    return "?"


_FIRST_WORD = re.compile(r"(?:\s+|/\*.*?\*/|--[^\n]*|\#[^\n]*|\()*([A-Za-z]+)", re.DOTALL)
_VERBS = frozenset(
    "SELECT INSERT UPDATE DELETE MERGE COPY WITH VALUES TABLE DECLARE FETCH MOVE CLOSE PREPARE EXECUTE DEALLOCATE "
    "CREATE ALTER DROP TRUNCATE GRANT REVOKE BEGIN START COMMIT ROLLBACK SAVEPOINT RELEASE SET SHOW RESET "
    "EXPLAIN ANALYZE VACUUM CALL DO LOCK LISTEN NOTIFY UNLISTEN DISCARD REPLACE LOAD USE HANDLER RENAME".split()
)
_CURSOR = re.compile(r'^\s*DECLARE\s+("(?:[^"]|"")+"|[A-Za-z_][\w$]*)\b.*?\bCURSOR\b', re.IGNORECASE | re.DOTALL)
_LISTS = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")


def _fallback(sql: str, dialect: str) -> StatementFacts:
    mysql = dialect in ("mysql", "mariadb")
    redacted = (_MY_TOKENS if mysql else _PG_TOKENS).sub(_replace, sql)
    if len(redacted) > MAX_STATEMENT_CHARS:
        redacted = redacted[: MAX_STATEMENT_CHARS - 2] + " …"
    first = _FIRST_WORD.match(redacted)
    verb = first.group(1).upper() if first else ""
    normal = _LISTS.sub("(?)", " ".join(redacted.split()).lower())
    cursor = _CURSOR.match(redacted) if verb == "DECLARE" else None
    return StatementFacts(
        statement_type=verb if verb in _VERBS else "",
        fingerprint=hashlib.sha256(f"{'mysql' if mysql else 'postgres'}\0{normal}".encode()).hexdigest()[:32],
        redacted=redacted,
        cursor_name=cursor.group(1).strip('"') if cursor else None,
    )
