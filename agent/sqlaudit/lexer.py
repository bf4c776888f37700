"""A fast SQL lexer that finds every literal, comment and statement boundary, for redaction and caching.

It only recognises what must never be misread: string literals of every kind (standard, E'', dollar-quoted,
bit/hex/national/Unicode, MySQL's backslash-escaped and double-quoted strings and charset introducers), numbers,
comments, quoted identifiers, bind parameters and semicolons. Everything between those is kept as it is. The
regex skips plain SQL inside its C search loop and returns to Python only for those tokens, so a statement costs
one Python step per literal rather than one per token; that is what lets the proxy redact every statement.

Unterminated literals and comments run to the end of the text, so a cut or malformed statement loses its tail
rather than leaking it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from agent.sqlaudit.commenter import parse_sqlcommenter

PLACEHOLDER = "?"

# Every alternative starts with one character of a small set, written once in front: sre then skips plain SQL
# (words, spaces, operators) in its C search loop and only returns to Python for a literal, comment, quoted name,
# parameter or semicolon. Lookbehinds place the alternatives: `(?<=')` means "the first character was a quote",
# and `(?<![\w$]x)` keeps digits and dollars inside identifiers (t1, a$1) from being read as values.
_NUMBER_TAIL = r"""(?<=[0-9])(?<![\w$][0-9])(?P<num>(?<=0)[xX][0-9A-Fa-f_]+|(?<=0)[oO][0-7_]+|(?<=0)[bB][01_]+
    |[0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)"""

# PostgreSQL: standard_conforming_strings (the default since 9.1) — backslashes only escape inside E'', which
# _token() recognises from the letter before the quote.
_PG = re.compile(
    r"""[-/$'";0-9](?:
    (?<=-)(?P<lc>-[^\n]*)
   |(?<=/)(?P<bc>\*)
   |(?<=\$)(?P<dq>(?:[^\W\d]\w*)?\$)
   |(?<=\$)(?P<param>[0-9]+)
   |(?<=')(?P<str>[^']*(?:''[^']*)*'?)
   |(?<=")(?P<qid>[^"]*(?:""[^"]*)*"?)
   |"""
    + _NUMBER_TAIL
    + r"""
   |(?<=;)(?P<semi>)
    )""",
    re.X | re.S,
)
_DIGITS = re.compile(r"[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?")
_PG_ESTRING = re.compile(r"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*(?:'|\\?\Z)", re.S)

# MySQL/MariaDB: backslash escapes in both quote styles; "..." is a string unless ANSI_QUOTES (treating it as a
# literal can only hide an identifier, never leak a value); `-- ` needs a space; `#` comments; `/*! */` is code.
_MY = re.compile(
    r"""[-/\#'"`?;0-9*](?:
    (?<=-)(?P<lc>-(?=\s|$)[^\n]*)
   |(?<=\#)(?P<hc>[^\n]*)
   |(?<=/)(?P<xc>\*M?![0-9]*)
   |(?<=/)(?P<bc>\*)
   |(?<=\*)(?P<xend>/)
   |(?<=')(?P<str>[^'\\]*(?:(?:\\.|'')[^'\\]*)*(?:'|\\?\Z))
   |(?<=")(?P<str2>[^"\\]*(?:(?:\\.|"")[^"\\]*)*(?:"|\\?\Z))
   |(?<=`)(?P<qid>[^`]*(?:``[^`]*)*`?)
   |(?<=\?)(?P<param>)
   |"""
    + _NUMBER_TAIL
    + r"""
   |(?<=;)(?P<semi>)
    )""",
    re.X | re.S,
)

_VALUE = r"(?:\?|\$[0-9]+)"
_VALUES = _VALUE + r"(?:\s*,\s*" + _VALUE + r")*"
_PAREN_LISTS = re.compile(r"\(\s*" + _VALUES + r"\s*\)(?:\s*,\s*\(\s*" + _VALUES + r"\s*\))*")
_BRACKET_LIST = re.compile(r"\[\s*" + _VALUES + r"\s*\]")


class Part(NamedTuple):  # a NamedTuple, not a dataclass: built for every statement, it must be cheap
    """One statement of a (possibly multi-statement) text: its redacted form and where it lies in the input."""

    redacted: str
    start: int
    end: int


class Scan(NamedTuple):
    parts: tuple[Part, ...]
    tags: tuple[tuple[str, str], ...]


_new_tuple = tuple.__new__  # builds a Part or Scan without the NamedTuple's Python-level __new__ (once per statement)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or ch == "$"


def _token(sql: str, m: re.Match[str], mysql: bool) -> tuple[str, int, int]:
    """(kind, start, end) of one match; kinds: num, str, qid, qid_open (a quoted name without its closing quote),
    param, semi, comment, xc (a MySQL executable comment opens), xend."""
    kind = m.lastgroup
    start = m.start()
    end = m.end()
    floor = m.pos  # where the last token ended: nothing before it can be part of this one
    if (kind == "dq" or kind == "param") and start > floor and _in_identifier(sql, start, floor):
        return "skip", start, start + 1  # a$1, a$b$: dollars inside a name
    if kind == "str":
        if start > floor and sql[start - 1] != " ":
            prefix = _string_prefix(sql, start, floor, mysql)
            if prefix == "e":  # E'…': backslash escapes apply
                end = _PG_ESTRING.match(sql, start).end()  # type: ignore[union-attr]
            start -= len(prefix)
    elif kind == "str2":
        kind = "str"
    elif kind == "num":
        if start > floor and sql[start - 1] == "." and (start - 1 == floor or not _is_word_char(sql[start - 2])):
            start -= 1  # .5
    elif kind == "qid":
        if not _closed(sql, start, end):
            kind = "qid_open"
    elif kind == "bc":
        end = _block_end(sql, start, nested=not mysql)
        kind = "comment"
    elif kind == "lc" or kind == "hc":
        kind = "comment"
    elif kind == "dq":
        close = sql.find(sql[start:end], end)
        end = len(sql) if close < 0 else close + (end - start)
        kind = "str"
        if end < len(sql) and "0" <= sql[end] <= "9":
            # $$x$$123: the number is a token of its own although a `$` precedes it; it joins this literal.
            end = _DIGITS.match(sql, end).end()  # type: ignore[union-attr]
    return kind, start, end  # type: ignore[return-value]


def _tokens(sql: str, mysql: bool) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) of every literal, comment, quoted name, parameter and semicolon, in order."""
    search = (_MY if mysql else _PG).search
    pos = 0
    while True:
        m = search(sql, pos)
        if m is None:
            return
        token = _token(sql, m, mysql)
        if token[0] != "skip":
            yield token
        pos = token[2]


def _in_identifier(sql: str, at: int, floor: int) -> bool:
    """True when the character at `at` continues a name (a run of word characters that starts with no digit)."""
    i = at
    while i > floor and _is_word_char(sql[i - 1]):
        i -= 1
    return i < at and not sql[i].isdigit()


def _string_prefix(sql: str, quote: int, floor: int, mysql: bool) -> str:
    """The prefix that belongs to the string literal opening at `quote` (E, N, B, X, U&, MySQL's _charset), in
    lower case, or "" when the word before the quote is something else (a type name: DATE'2020-01-01')."""
    i = quote
    while i > floor and _is_word_char(sql[i - 1]):
        i -= 1
    word = sql[i:quote].lower()
    if not word and not mysql and quote - floor >= 2 and sql[quote - 1] == "&" and sql[quote - 2] in "uU":
        return "u&" if quote - 2 == floor or not _is_word_char(sql[quote - 3]) else ""
    if word in (_MY_PREFIXES if mysql else _PG_PREFIXES):
        return word
    if mysql and len(word) > 1 and word[0] == "_" and "$" not in word:
        return word  # a character-set introducer: _utf8mb4'…'
    return ""


# After one of these a quote or digit cannot continue a word: no prefix, no identifier, no `.5`.
_PLAIN_BEFORE = frozenset(" \t\r\n(,=<>+-*/%|[:!~^@")
_PG_PREFIXES = frozenset({"e", "n", "b", "x"})
_MY_PREFIXES = frozenset({"n", "b", "x"})


def _closed(sql: str, start: int, end: int) -> bool:
    """True when a quoted name has its closing quote (`"a""` is still open: `""` is an escaped quote)."""
    return end - start >= 2 and sql.count(sql[start], start + 1, end) % 2 == 1


def _block_end(sql: str, start: int, nested: bool) -> int:
    """End of the block comment opened at `start`; PostgreSQL nests them, MySQL does not."""
    depth = 1
    i = start + 2
    n = len(sql)
    while depth:
        close = sql.find("*/", i)
        if close < 0:
            return n
        if nested:
            opener = sql.find("/*", i, close)
            if opener >= 0:
                depth += 1
                i = opener + 2
                continue
        depth -= 1
        i = close + 2
    return i


def _finish(pieces: list[str]) -> str:
    if not pieces:
        return ""
    text = "".join(pieces)
    # Every whitespace character but the space is unprintable: a printable text without double, leading or
    # trailing spaces is already collapsed (most are; splitting and joining them again is a fifth of the scan).
    if not text.isprintable() or "  " in text or text[:1] == " " or text[-1:] == " ":
        # Collapses whitespace inside quoted names too; harmless, as the redacted text is for people and fingerprints.
        text = " ".join(text.split())
    while text.endswith(";"):  # empty statements between semicolons
        text = text[:-1].rstrip()
    return text


def scan(sql: str, mysql: bool) -> Scan:
    """Redact `sql` (every literal becomes `?`, comments vanish, whitespace collapses) and split it into statements.

    sqlcommenter tags found in comments are returned beside the parts; all other comment text is dropped.
    """
    parts: list[Part] = []
    tags: dict[str, str] = {}
    pieces: list[str] = []
    append = pieces.append
    kept = 0  # start of the text not yet copied to pieces
    part_start = 0
    exec_depth = 0
    search = (_MY if mysql else _PG).search
    pos = 0
    while True:  # _tokens() inlined: this loop runs for every statement the proxy forwards
        m = search(sql, pos)
        if m is None:
            break
        kind = m.lastgroup
        start, end = m.span()
        # Fast path for the common tokens; _token() settles prefixes, escapes and the rarer kinds.
        plain_before = start == pos or sql[start - 1] in _PLAIN_BEFORE
        if kind != "semi" and not ((kind == "num" or kind == "str") and plain_before):
            kind, start, end = _token(sql, m, mysql)
        pos = end
        if kind == "skip":
            continue
        if start > kept:
            append(sql[kept:start])
        kept = end
        if kind == "num" or kind == "str" or kind == "qid_open":
            append(PLACEHOLDER)
        elif kind == "qid" or kind == "param":
            append(sql[start:end])
        elif kind == "semi":
            redacted = _finish(pieces)
            if redacted:
                parts.append(_new_tuple(Part, (redacted, part_start, start)))
            pieces.clear()
            part_start = end
        elif kind == "comment":
            if sql[start] == "/" and "='" in sql[start:end]:
                tags.update(parse_sqlcommenter(sql[start + 2 : end - 2]))
            append(" ")
        elif kind == "xc":
            exec_depth += 1
            append(" ")
        elif exec_depth:  # xend closing an executable comment
            exec_depth -= 1
            append(" ")
        else:  # a `*/` outside any comment is just two operator characters
            append("*/")
    if len(sql) > kept:
        append(sql[kept:])
    redacted = _finish(pieces)
    if redacted:
        parts.append(_new_tuple(Part, (redacted, part_start, len(sql))))
    return _new_tuple(Scan, (tuple(parts), tuple(sorted(tags.items())) if tags else ()))


def parse_form(sql: str, mysql: bool) -> str:
    """The statement as sqlglot should see it: strings become '' and numbers 0, so no value can reach the tree.

    Bind parameters become 0 as well; comments are dropped and MySQL's executable comments unwrapped.
    """
    pieces: list[str] = []
    append = pieces.append
    kept = 0
    exec_depth = 0
    for kind, start, end in _tokens(sql, mysql):
        if start > kept:
            append(sql[kept:start])
        kept = end
        if kind == "num" or kind == "param":  # a parameter is a value too, and sqlglot reads 0 more reliably
            append(" 0 ")
        elif kind == "str" or kind == "qid_open":
            append(" '' ")
        elif kind == "qid" or kind == "semi":
            append(sql[start:end])
        elif kind == "xc":
            exec_depth += 1
            append(" ")
        elif kind == "xend":
            if exec_depth:
                exec_depth -= 1
                append(" ")
            else:
                append("*/")
        else:  # a comment
            append(" ")
    if len(sql) > kept:
        append(sql[kept:])
    return "".join(pieces).strip().rstrip(";").strip()


def _after_word(text: str, start: int, word: str) -> bool:
    """True when `word` (upper case) is the last word before `start`, whitespace aside."""
    j = start
    while j and text[j - 1].isspace():
        j -= 1
    k = j - len(word)
    return k >= 0 and text[k:j].upper() == word and (k == 0 or not _is_word_char(text[k - 1]))


def _fold_parens(m: re.Match[str]) -> str:
    """`IN (?, ?, ?)` → `IN (?...)`; `VALUES (?, ?), (?, ?)` → `VALUES (?, ?)`; a function's arguments stay."""
    if _after_word(m.string, m.start(), "IN"):
        return "(?...)"
    group = m.group()
    return group[: group.index(")") + 1]


def _fold_array(m: re.Match[str]) -> str:
    return "[?...]" if _after_word(m.string, m.start(), "ARRAY") else m.group()


def cache_key(redacted: str) -> str:
    """The redacted statement with value lists folded, so IN-lists and VALUES rows of any length share one entry."""
    if "?" not in redacted and "$" not in redacted:
        return redacted
    key = _PAREN_LISTS.sub(_fold_parens, redacted) if "(" in redacted else redacted  # most lookups have none
    return _BRACKET_LIST.sub(_fold_array, key) if "[" in key else key


# The parse form folds the same lists down to their first element, so sqlglot never walks 10,000 placeholders.
_PF_VALUE = r"\s*(?:0|''|\?|\$[0-9]+)\s*"
_PF_VALUES = _PF_VALUE + r"(?:," + _PF_VALUE + r")*"
_PF_PAREN_LISTS = re.compile(r"\(" + _PF_VALUES + r"\)(?:\s*,\s*\(" + _PF_VALUES + r"\))*")
_PF_BRACKET_LIST = re.compile(r"\[" + _PF_VALUES + r"\]")


def _pf_fold_parens(m: re.Match[str]) -> str:
    group = m.group()
    if _after_word(m.string, m.start(), "IN"):
        return "(" + group[1:].split(",", 1)[0].split(")", 1)[0] + ")"
    return group[: group.index(")") + 1]


def _pf_fold_array(m: re.Match[str]) -> str:
    if not _after_word(m.string, m.start(), "ARRAY"):
        return m.group()
    return "[" + m.group()[1:].split(",", 1)[0].split("]", 1)[0] + "]"


def fold_parse_form(form: str) -> str:
    form = _PF_PAREN_LISTS.sub(_pf_fold_parens, form)
    return _PF_BRACKET_LIST.sub(_pf_fold_array, form) if "[" in form else form
