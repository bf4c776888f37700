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
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

MAX_STATEMENT_CHARS = 65536  # the event schema's bound on `statement`
_CACHE_SIZE = 8192


@dataclass(frozen=True, slots=True)
class StatementFacts:
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


def analyse_statement(sql: str, dialect: str, sensitive: Mapping[str, str] | None = None) -> StatementFacts:
    """Fingerprint, redacted text and what the statement touches; `dialect` is "postgres" or "mysql"."""
    key = (dialect, sql)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    facts = _fallback(sql, dialect)
    with _lock:
        _cache[key] = facts
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return facts


_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str], StatementFacts] = OrderedDict()

# One pass over the text. Order matters: comments and quotes first, so that nothing inside them is read as
# anything else; identifiers (which may hold digits) before numbers.
_COMMON = r"""
  (?P<block>/\*.*?(?:\*/|\Z))
| (?P<line>(?:--|\#)[^\n]*)
| (?P<estr>[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z))
| (?P<str>[xXbBnN]?'(?:[^'\\]|\\.|'')*(?:'|\Z))
"""
_PG = _COMMON + r"""
| (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*|)\$.*?(?:\$(?P=tag)\$|\Z))
| (?P<ident>"(?:[^"]|"")*(?:"|\Z))
| (?P<param>\$\d+)
| (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
| (?P<num>(?:0[xX][0-9A-Fa-f_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
"""
_MY = _COMMON + r"""
| (?P<dstr>"(?:[^"\\]|\\.|"")*(?:"|\Z))
| (?P<ident>`(?:[^`]|``)*(?:`|\Z))
| (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
| (?P<num>(?:0[xX][0-9A-Fa-f]+|0[bB][01]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
"""
_PG_TOKENS = re.compile(_PG, re.VERBOSE | re.DOTALL)
_MY_TOKENS = re.compile(_MY, re.VERBOSE | re.DOTALL)
# In PostgreSQL a backslash escapes only inside E'...'; a plain '...' ends at the first lone quote.
_PG_PLAIN_STR = re.compile(r"[xXbBnNuU]?&?'(?:[^']|'')*(?:'|\Z)", re.DOTALL)

_VERBS = frozenset(
    "SELECT INSERT UPDATE DELETE MERGE COPY WITH VALUES TABLE DECLARE FETCH MOVE CLOSE PREPARE EXECUTE DEALLOCATE "
    "CREATE ALTER DROP TRUNCATE GRANT REVOKE BEGIN START COMMIT ROLLBACK SAVEPOINT RELEASE SET SHOW RESET "
    "EXPLAIN ANALYZE VACUUM CALL DO LOCK LISTEN NOTIFY UNLISTEN DISCARD REPLACE LOAD USE HANDLER RENAME".split()
)
_CURSOR = re.compile(r'^\s*DECLARE\s+("(?:[^"]|"")+"|[A-Za-z_][\w$]*)\b.*?\bCURSOR\b', re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
_LISTS = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")


def _fallback(sql: str, dialect: str) -> StatementFacts:
    mysql = dialect in ("mysql", "mariadb")
    out: list[str] = []
    first_word = ""
    pos = 0
    tokens = _MY_TOKENS if mysql else _PG_TOKENS
    n = len(sql)
    while pos < n:
        m = tokens.search(sql, pos)
        if m is None:
            out.append(sql[pos:])
            break
        out.append(sql[pos : m.start()])
        kind = m.lastgroup
        text = m.group()
        end = m.end()
        if kind == "tag":  # the dollar-quote's inner group; the whole match is the dollar string
            kind = "dollar"
        if kind == "str" and not mysql:
            plain = _PG_PLAIN_STR.match(sql, m.start())
            if plain is not None:
                end = plain.end()
            kind = "str"
        if kind in ("str", "estr", "dstr", "dollar", "num"):
            out.append("?")
        elif kind == "block":
            out.append("/*?*/")
        elif kind == "line":
            out.append("--?\n" if not text.startswith("#") else "#?\n")
        else:
            if kind == "word" and not first_word:
                first_word = text.upper()
            out.append(text)
        pos = end
    redacted = "".join(out)
    if len(redacted) > MAX_STATEMENT_CHARS:
        redacted = redacted[: MAX_STATEMENT_CHARS - 2] + " …"
    normal = _LISTS.sub("(?)", _SPACE.sub(" ", redacted).strip().lower())
    cursor = _CURSOR.match(redacted)
    return StatementFacts(
        statement_type=first_word if first_word in _VERBS else "",
        fingerprint=hashlib.sha256(f"{'mysql' if mysql else 'postgres'}\0{normal}".encode()).hexdigest()[:32],
        redacted=redacted,
        cursor_name=cursor.group(1).strip('"') if cursor else None,
    )
