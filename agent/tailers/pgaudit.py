"""pgAudit lines to events, whichever log format carried them (stderr: pgaudit_stderr, csvlog: pgaudit_csv).

An AUDIT message is CSV: AUDIT_TYPE, STATEMENT_ID, SUBSTATEMENT_ID, CLASS, COMMAND, OBJECT_TYPE, OBJECT_NAME,
STATEMENT, PARAMETER and, with `pgaudit.log_rows`, ROWS. With `log_relation` one statement is logged once per
relation, and OBJECT lines repeat SESSION lines for relations the audit role covers, before or after them: all
the lines of one (session, statement, substatement) are grouped back into ONE db.query with every relation.

A group is complete when its session logs another statement or substatement, disconnects, or `group_wait` after
its last line (the relation lines of one statement are written together, so the wait only bounds how long the
last statement of a quiet session waits). Open groups are part of the source's committed state, already redacted.

Foreign-key checks (`SELECT 1 FROM ONLY "s"."t" x WHERE "id" OPERATOR(pg_catalog.=) $1 FOR KEY SHARE OF x`, one
per inserted row) and the cascades of referential actions are the database's own work: they are summed into one
event per statement and table, marked `system`. PARAMETER values are dropped as soon as the line is split.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.tailers._sql import StatementFacts, analyse_statement
from agent.tailers._time import LogTimes, TimeFormatError
from agent.tailers.emit import MAX_TABLES, NEVER_LOGGED, Emitter, name
from agent.tailers.pgaudit_encode import QueryPayloads
from agent.tailers.pgaudit_sessions import Who, session_end, session_start

csv.field_size_limit(1 << 30)  # a logged statement can be far longer than csv's default 128 KiB

AUDIT = "AUDIT: "
_RI_CHECK = re.compile(
    r'^SELECT 1 FROM (?:ONLY )?"(?:[^"]|"")+"\."(?:[^"]|"")+" x WHERE .* FOR KEY SHARE OF x$', re.DOTALL
)
_RI_ACTION = re.compile(
    r'^(?:DELETE FROM (?:ONLY )?"(?:[^"]|"")+"\."(?:[^"]|"")+" WHERE \$1 OPERATOR\(pg_catalog\.=\) '
    r'|UPDATE (?:ONLY )?"(?:[^"]|"")+"\."(?:[^"]|"")+" SET "(?:[^"]|"")+" = (?:\$\d+|NULL|DEFAULT)\b.*'
    r"OPERATOR\(pg_catalog\.=\))",
    re.DOTALL,
)
_PREVIOUSLY_LOGGED = "<previously logged>"
_SESSION_MESSAGES = ("connection authorized: ", "replication connection authorized: ", "disconnection: ")


@dataclass(slots=True)
class _Group:
    who: Who
    statement_id: int
    part: str  # the substatement id, or "fk:CLASS:relation" for a statement's foreign-key checks
    ts: dt.datetime
    last_seen: float
    command: str
    facts: StatementFacts
    read: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    rows: int | None = None
    logged_at_end: bool = False  # with log_rows pgAudit writes the line when the statement ends
    system: bool = False

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.who.session, self.statement_id, self.part)

    def to_dict(self) -> dict[str, object]:
        d = {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]
        d["who"] = list(self.who)
        d["ts"] = self.ts.isoformat()
        d["facts"] = self.facts.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> _Group:
        d = dict(d)
        d["who"] = Who(*d["who"])  # type: ignore[misc]
        d["ts"] = dt.datetime.fromisoformat(str(d["ts"]))
        d["facts"] = StatementFacts.from_dict(d["facts"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


# The seven fields before STATEMENT never hold a quote or comma in practice; then STATEMENT, PARAMETER and (with
# log_rows) ROWS. One match splits a message; anything else goes through the csv module. Possessive quantifiers
# (`*+`) keep a long statement to one pass: each run ends at a quote or comma that no other split could use.
_FIELD = r'([^",]*+),'
_AUDIT_FIELDS = re.compile(
    _FIELD * 7 + r'(?:"((?:[^"]*+"")*+[^"]*+)"|([^",]*+)),(?:"(?:[^"]*+"")*+[^"]*+"|[^",]*+)(?:,([^",]*+))?',
    re.DOTALL,
)


def split_audit(text: str) -> list[str] | None:
    """The fields of an AUDIT message (after "AUDIT: "), or None when it is not well-formed CSV."""
    if '"' not in text:
        return text.split(",")  # pgAudit quotes every field holding a comma, quote or newline
    m = _AUDIT_FIELDS.fullmatch(text)
    if m is not None:
        kind, sid, sub, cls, command, otype, oname, quoted, plain, rows = m.groups()
        if quoted is None:
            statement = plain
        else:
            statement = quoted.replace('""', '"') if '""' in quoted else quoted
        # the PARAMETER field is not kept: bind values never go further than this
        if rows is None:
            return [kind, sid, sub, cls, command, otype, oname, statement, ""]
        return [kind, sid, sub, cls, command, otype, oname, statement, "", rows]
    try:
        return next(csv.reader((text,), strict=True))
    except (csv.Error, StopIteration):
        return None


class PgAuditParser:
    """Turns PostgreSQL log messages into events; shared by the stderr and csvlog formats."""

    def __init__(
        self,
        emitter: Emitter,
        *,
        server: str | None = None,
        sensitive: Mapping[str, str] | None = None,
        group_wait: float = 1.0,
        context_unknown: tuple[str, ...] = (),
        parse_time: Callable[[str], dt.datetime] | None = None,
    ) -> None:
        self.emitter = emitter
        # Times are read only for the lines that need one (the first of each statement), not for every line.
        self.parse_time = parse_time or LogTimes(None).pg
        self.server = name(server, 1024)
        self.sensitive = dict(sensitive or {})
        self.group_wait = group_wait
        self.context_unknown = context_unknown  # fields this format's lines do not carry
        self.now = 0.0  # wall-clock time of the current read, set by the source
        self._groups: dict[tuple[str, int, str], _Group] = {}
        self._by_session: dict[str, list[tuple[str, int, str]]] = {}
        self._unknown_lists: dict[tuple[bool, bool], list[str]] = {}
        self._payloads = QueryPayloads(self.server)

    # -- state ------------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        return {"groups": [g.to_dict() for g in self._groups.values()]}

    def restore(self, state: Mapping[str, object] | None) -> None:
        self._groups, self._by_session = {}, {}
        for d in (state or {}).get("groups", ()):  # type: ignore[union-attr]
            self._add(_Group.from_dict(d))

    def flush_due(self, now: float) -> None:
        for key in [k for k, g in self._groups.items() if g.last_seen <= now - self.group_wait]:
            self._close(key)

    # -- messages ---------------------------------------------------------------------------------------------

    def message(self, stamp: str, who: Who, severity: str, msg: str, offset: int, line: int) -> None:
        """One log message; `stamp` is its time as the log wrote it."""
        if msg.startswith(AUDIT):
            self._audit(stamp, who, msg[len(AUDIT) :], offset, line)
        elif severity == "LOG" and msg.startswith(_SESSION_MESSAGES):
            ts = self._time(stamp, offset, line)
            if ts is None:
                return
            if msg.startswith("disconnection: "):
                self._disconnected(ts, who, msg)
            else:
                self._connected(ts, who, msg)

    def _time(self, stamp: str, offset: int, line: int) -> dt.datetime | None:
        try:
            return self.parse_time(stamp)
        except TimeFormatError as e:
            self.emitter.parse_error(offset, line, str(e))
            return None

    def _audit(self, stamp: str, who: Who, text: str, offset: int, line: int) -> None:
        fields = split_audit(text)
        if fields is None or len(fields) not in (9, 10):
            n = "no" if fields is None else str(len(fields))
            self.emitter.parse_error(offset, line, f"an AUDIT message with {n} CSV fields; pgAudit writes 9 or 10")
            return
        kind, sid, sub, cls, command, _otype, relation, statement = fields[:8]
        rows_text = fields[9] if len(fields) == 10 else None
        del fields  # the PARAMETER field: bind values never go further than this
        if kind not in ("SESSION", "OBJECT") or not sid.isdigit() or not sub.isdigit():
            self.emitter.parse_error(offset, line, "an AUDIT message whose type or statement ids are not pgAudit's")
            return
        if rows_text is not None and not rows_text.isdigit():
            self.emitter.parse_error(offset, line, "an AUDIT message whose row count is not a number")
            return
        statement_id = int(sid)
        system = (
            "OPERATOR(pg_catalog.=)" in statement
            and cls in ("READ", "WRITE")
            and (_RI_CHECK.match(statement) or _RI_ACTION.match(statement)) is not None
        )
        part = f"fk:{cls}:{relation}" if system else sub
        session = who.session
        key = (session, statement_id, part)
        group = self._groups.get(key)
        facts = None
        ts = None
        if group is None:
            ts = self._time(stamp, offset, line)
            if ts is None:
                return
            if statement == _PREVIOUSLY_LOGGED:
                statement = self._previous_text(session, statement_id)
            facts = analyse_statement(statement, "postgres", self.sensitive)
            if not system:
                # `COPY (SELECT …) TO` is logged as two substatements with the same text: one statement.
                for other in self._by_session.get(session, ()):
                    g = self._groups[other]
                    if other[1] == statement_id and not g.system and g.facts.redacted == facts.redacted:
                        key, group = other, g
                        break
        if session in self._by_session:
            self._close_before(session, statement_id, key[2])
        if group is None:
            group = _Group(who, statement_id, key[2], ts or self.parse_time(stamp), self.now, command,
                           facts or analyse_statement(statement, "postgres"),
                           logged_at_end=rows_text is not None, system=system)
            self._add(group)
        group.last_seen = self.now
        if relation:
            if cls == "READ" and relation not in group.read:
                group.read.append(relation)
            elif cls == "WRITE" and relation not in group.written:
                group.written.append(relation)
        if rows_text is not None:
            rows = int(rows_text)
            if system:  # one line per check: the checks' rows add up
                group.rows = (group.rows or 0) + rows
            else:  # the statement's count, repeated on each relation's line
                group.rows = rows if group.rows is None else max(group.rows, rows)

    def _previous_text(self, session: str, statement_id: int) -> str:
        # pgaudit.log_statement_once: later lines of a statement say "<previously logged>".
        for key in self._by_session.get(session, ()):
            if key[1] == statement_id:
                return self._groups[key].facts.redacted
        return ""

    def _close_before(self, session: str, statement_id: int, part: str) -> None:
        """A session's line for (statement, part) completes its other open groups, except the foreign-key
        summaries of the same statement, which last until the statement does."""
        for key in list(self._by_session.get(session, ())):
            if key[1] != statement_id:
                self._close(key)
            elif key[2] != part and not key[2].startswith("fk:"):
                self._close(key)

    def _add(self, group: _Group) -> None:
        key = group.key
        self._groups[key] = group
        self._by_session.setdefault(key[0], []).append(key)

    def _close(self, key: tuple[str, int, str]) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        keys = self._by_session.get(key[0])
        if keys is not None:
            keys.remove(key)
            if not keys:
                del self._by_session[key[0]]
        self._emit(group)

    def _emit(self, g: _Group) -> None:
        f, who = g.facts, g.who
        rows = g.rows
        if f.cursor_name is not None or g.command == "DECLARE CURSOR":
            rows = None  # pgAudit logs 0 for DECLARE and never logs the FETCHes: the rows read are not known
        payload = self._payloads.encode(
            who, f, (f.statement_type or g.command)[:64],
            None if g.logged_at_end else self.emitter.envelope.time(g.ts)[1],
            (g.read or list(f.tables_read))[:MAX_TABLES],
            (g.written or list(f.tables_written))[:MAX_TABLES],
            rows, g.system, self._unknown(rows is None, g.logged_at_end),
        )
        self.emitter.query_bytes(payload, g.ts, who.user, f.end_user)

    def _unknown(self, rows: bool, at_end: bool) -> list[str]:
        # Shared, never-modified lists: one per combination.
        key = (rows, at_end)
        found = self._unknown_lists.get(key)
        if found is None:
            found = [*NEVER_LOGGED, "error_code", *self.context_unknown]
            found += ["rows"] if rows else []
            found += ["started_at"] if at_end else []
            self._unknown_lists[key] = found
        return found

    # -- sessions ---------------------------------------------------------------------------------------------

    def _connected(self, ts: dt.datetime, who: Who, msg: str) -> None:
        found = session_start(who, msg, self.context_unknown)
        if found is not None:
            self.emitter.session(found[0], ts, found[1])

    def _disconnected(self, ts: dt.datetime, who: Who, msg: str) -> None:
        for key in list(self._by_session.get(who.session, ())):
            self._close(key)  # the session's last statement is complete
        found = session_end(who, msg)
        if found is not None:
            self.emitter.session(found[0], ts, found[1])
