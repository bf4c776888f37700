"""The one door through which the tailers analyse SQL: `analyse_statement(sql, dialect, sensitive)`.

It calls the shared analysis library (`agent.sqlaudit`), the same code the PostgreSQL proxy uses, so a statement
gets the same fingerprint and redaction whichever sensor saw it. The library never raises on any text and never
lets a literal through; where it cannot parse, tables come from keywords and every literal is still replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from agent.sqlaudit import Analyser, Analysis, SensitiveMap

MAX_STATEMENT_CHARS = 65536  # the event schema's bound on `statement`


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


# One analyser per (dialect, sensitive map): each keeps its own caches of statement shapes. Keyed by the map's
# identity (tailers build theirs once from configuration) and holding the map, so that an id is never reused.
_analysers: dict[tuple[str, int], tuple[Mapping[str, str] | None, Analyser]] = {}


def _analyser(dialect: str, sensitive: Mapping[str, str] | None) -> Analyser:
    key = (dialect, id(sensitive))
    hit = _analysers.get(key)
    if hit is None or hit[0] is not sensitive:
        smap = SensitiveMap.of(dict(sensitive)) if sensitive else None
        hit = (sensitive, Analyser(dialect, sensitive=smap))
        _analysers[key] = hit
    return hit[1]


def analyse_statement(
    sql: str, dialect: str, sensitive: Mapping[str, str] | None = None, *, schema: str | None = None
) -> StatementFacts:
    """Fingerprint, redacted text and what the statement touches; `dialect` is "postgres" or "mysql".
    `schema` qualifies unqualified tables (MySQL's current database)."""
    a = _analyser("mysql" if dialect in ("mysql", "mariadb") else "postgres", sensitive).analyse(sql, schema=schema)
    # The library hands back one shared Analysis for every text of a known shape: its facts are built once.
    hit = _facts.get(id(a))
    if hit is not None and hit[0] is a:
        return hit[1]
    facts = _facts_of(a)
    if len(_facts) >= 8192:
        _facts.clear()
    _facts[id(a)] = (a, facts)  # holding the Analysis keeps its id from being reused
    return facts


_facts: dict[int, tuple[Analysis, StatementFacts]] = {}


def _facts_of(a: Analysis) -> StatementFacts:
    redacted = a.redacted
    if len(redacted) > MAX_STATEMENT_CHARS:
        redacted = redacted[: MAX_STATEMENT_CHARS - 2] + " …"
    return StatementFacts(
        statement_type="" if a.statement_type == "OTHER" else a.statement_type,
        fingerprint=a.fingerprint,
        redacted=redacted,
        tables_read=tuple(a.tables_read),
        tables_written=tuple(a.tables_written),
        columns=tuple(a.columns),
        sensitive_classes=tuple(a.sensitive_classes),
        end_user=a.end_user,
        cursor_name=a.cursor_name,
    )
