"""Literal-free SQL text: every string, number, dollar-quoted body and comment leaves before anything is kept.

This is a tokenizer, not a parser: it knows where PostgreSQL literals and comments begin and end, so that what
remains (keywords, identifiers, operators, `$n` placeholders) can be stored, fingerprinted and parsed without
ever carrying a value. Unterminated literals (a statement cut at the audit's size cap) are redacted to the end.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

# Alternatives are tried left to right at each position; only literals, comments and quoted identifiers match,
# so the C regex engine walks over keywords and identifiers without calling back into Python.
_LITERALS = re.compile(
    r"""
    # Cheap guards first: most positions (letters of keywords and identifiers) cannot start a literal.
    (?=[-/$'"\d.eEbBxXnNuU])(?=[-/$'"\d.]|[eEbBxXnN]'|[uU]&['"])
    (?:(?P<lc>--[^\n]*)
  | (?P<bc>/\*(?:[^*/]|\*(?!/)|/(?!\*)|/\*(?:[^*]|\*(?!/))*(?:\*/|$))*(?:\*/|$))
  | (?P<dq>(?<![\w$])\$(?P<tag>[A-Za-z_\x80-\uffff][\w\x80-\uffff]*|)\$(?:.*?\$(?P=tag)\$|.*))
  | (?P<es>(?<![\w$])[eE]'(?:[^'\\]|\\.|'')*(?:'|$))
  | (?P<ps>(?<![\w$])(?:[bBxXnN]|[uU]&)'(?:[^']|'')*(?:'|$))
  | (?P<s>'(?:[^']|'')*(?:'|$))
  | (?P<qi>(?:[uU]&)?"(?:[^"]|"")*(?:"|$))
  | (?P<n>(?<![\w$.])(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?))
    """,
    re.X | re.S,
)


def _replace(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "qi":
        return m.group()
    if kind == "lc" or kind == "bc":
        return " "
    return "?"


def redact(sql: str) -> str:
    """The statement with literals as `?` and comments removed, whitespace collapsed."""
    out = _LITERALS.sub(_replace, sql)
    return " ".join(out.split())


_PLACEHOLDER_LIST = re.compile(r"\?(?:\s*,\s*\?)+")


def fingerprint(redacted: str) -> str:
    """Stable across runs and literal values; IN-lists of any length fingerprint alike."""
    norm = _PLACEHOLDER_LIST.sub("?", redacted.lower()).rstrip("; ")
    return hashlib.sha256(norm.encode("utf-8", "replace")).hexdigest()[:32]


_QUOTED_ID = re.compile(r'"(?:[^"]|"")*"?|[^";]+|;')


def split_statements(redacted: str) -> list[str]:
    """The statements of a simple-query string (already redacted), without empty ones."""
    if '"' not in redacted:
        parts = redacted.split(";")
    else:
        parts, cur = [], []
        for tok in _QUOTED_ID.findall(redacted):
            if tok == ";":
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(tok)
        parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_COMMENT = re.compile(r"/\*(.*?)\*/", re.S)
_PAIR = re.compile(r"([A-Za-z0-9_.%-]+)\s*=\s*'((?:[^'\\]|\\.)*)'")


def sqlcommenter(sql: str) -> dict[str, str]:
    """The key/value tags of sqlcommenter-style comments (`/*custos_user='alice',route='%2Floans'*/`)."""
    if "/*" not in sql:
        return {}
    tags: dict[str, str] = {}
    for body in _COMMENT.findall(sql):
        for key, value in _PAIR.findall(body):
            if len(tags) < 32:
                tags[unquote(key)] = unquote(value.replace("\\'", "'"))[:256]
    return tags


def statement_type(redacted: str) -> str:
    """The leading keyword, upper-case (`SELECT`, `WITH`, `COPY`…); `EMPTY` for nothing."""
    head = redacted.lstrip("( ").split(None, 1)
    if not head:
        return "EMPTY"
    word = head[0].rstrip(";(").upper()
    return word[:64] if word.isidentifier() else "UNKNOWN"
