"""pgAudit lines to events, whichever log format carried them (stderr: pgaudit_stderr, csvlog: pgaudit_csv).

An AUDIT message is CSV: AUDIT_TYPE, STATEMENT_ID, SUBSTATEMENT_ID, CLASS, COMMAND, OBJECT_TYPE, OBJECT_NAME,
STATEMENT, PARAMETER and, with `pgaudit.log_rows`, ROWS. With `log_relation` one statement is logged once per
relation, and OBJECT lines repeat SESSION lines for relations the audit role covers, before or after them: all
the lines of one (session, statement, substatement) are grouped back into ONE db.query with every relation.

A group is complete when its session logs another statement or substatement, disconnects, or after `group_wait`
(the relation lines of one statement are written together, so the wait only bounds how long the last statement
of a quiet session waits). Open groups are part of the source's committed state, already redacted.

Foreign-key checks (`SELECT 1 FROM ONLY "s"."t" x WHERE "id" OPERATOR(pg_catalog.=) $1 FOR KEY SHARE OF x`, one
per inserted row) and the cascades of referential actions are the database's own work: they are summed into one
event per statement and table, marked `system`. PARAMETER values are dropped as soon as the line is split.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from agent.events import DbQueryPayload, DbSessionPayload
from agent.tailers._sql import StatementFacts, analyse_statement
from agent.tailers.emit import MAX_COLUMNS, MAX_TABLES, NEVER_LOGGED, Emitter, name, names

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
_AUTHORIZED = re.compile(
    r"^(?:replication )?connection authorized: user=(?P<user>\S*)(?: database=(?P<db>\S*))?"
    r"(?: application_name=(?P<app>.*?))?(?P<tls> SSL enabled \(.*\))?(?: GSS \(.*\))?$",
    re.DOTALL,
)
_DISCONNECTION = re.compile(
    r"^disconnection: session time: \S+ user=(?P<user>\S*) database=(?P<db>\S*) host=(?P<host>\S*)"
    r"(?: port=(?P<port>\d+))?"
)
_PREVIOUSLY_LOGGED = "<previously logged>"


@dataclass(frozen=True, slots=True)
class PgContext:
    """What a log line says besides its message."""

    ts: dt.datetime
    session: str  # %c or csvlog session_id; the pid when neither is logged
    user: str | None = None
    database: str | None = None
    application_name: str | None = None
    client_addr: str | None = None
    client_port: int | None = None


@dataclass(slots=True)
class _Group:
    session: str
    statement_id: int
    part: str  # the substatement id, or "fk:CLASS:relation" for a statement's foreign-key checks
    ts: dt.datetime
    first_seen: float
    user: str | None
    database: str | None
    application_name: str | None
    client_addr: str | None
    client_port: int | None
    command: str
    facts: StatementFacts
    read: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    rows: int | None = None
    logged_at_end: bool = False  # with log_rows pgAudit writes the line when the statement ends
    system: bool = False

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["ts"] = self.ts.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> _Group:
        d = dict(d)
        d["ts"] = dt.datetime.fromisoformat(str(d["ts"]))
        facts = dict(d["facts"])  # type: ignore[call-overload]
        for k in ("tables_read", "tables_written", "columns", "sensitive_classes"):
            facts[k] = tuple(facts.get(k, ()))
        d["facts"] = StatementFacts(**facts)
        return cls(**d)  # type: ignore[arg-type]


def split_audit(text: str) -> list[str] | None:
    """The fields of an AUDIT message (after "AUDIT: "), or None when it is not well-formed CSV."""
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
    ) -> None:
        self.emitter = emitter
        self.server = server
        self.sensitive = dict(sensitive or {})
        self.group_wait = group_wait
        self.context_unknown = context_unknown  # fields this format's lines do not carry
        self.now = 0.0  # wall-clock time of the current read, set by the source
        self._groups: dict[tuple[str, int, str], _Group] = {}
        self._by_session: dict[str, list[tuple[str, int, str]]] = {}

    # -- state ------------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        return {"groups": [g.to_dict() for g in self._groups.values()]}

    def restore(self, state: Mapping[str, object] | None) -> None:
        self._groups, self._by_session = {}, {}
        for d in (state or {}).get("groups", ()):  # type: ignore[union-attr]
            self._add(_Group.from_dict(d))

    def flush_due(self, now: float) -> None:
        for key in [k for k, g in self._groups.items() if g.first_seen <= now - self.group_wait]:
            self._close(key)

    def flush_all(self) -> None:
        for key in list(self._groups):
            self._close(key)

    # -- messages ---------------------------------------------------------------------------------------------

    def message(self, ctx: PgContext, severity: str, msg: str, offset: int, line: int) -> None:
        if msg.startswith(AUDIT):
            self._audit(ctx, msg[len(AUDIT) :], offset, line)
        elif severity == "LOG":
            if msg.startswith(("connection authorized: ", "replication connection authorized: ")):
                self._connected(ctx, msg)
            elif msg.startswith("disconnection: "):
                self._disconnected(ctx, msg)

    def _audit(self, ctx: PgContext, text: str, offset: int, line: int) -> None:
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
        system = cls in ("READ", "WRITE") and (_RI_CHECK.match(statement) or _RI_ACTION.match(statement)) is not None
        part = f"fk:{cls}:{relation}" if system else sub
        key = (ctx.session, statement_id, part)
        group = self._groups.get(key)
        facts = None
        if group is None:
            if statement == _PREVIOUSLY_LOGGED:
                statement = self._previous_text(ctx.session, statement_id)
            facts = analyse_statement(statement, "postgres", self.sensitive)
            if not system:
                # `COPY (SELECT …) TO` is logged as two substatements with the same text: one statement.
                for other in self._by_session.get(ctx.session, ()):
                    g = self._groups[other]
                    if other[1] == statement_id and not g.system and g.facts.redacted == facts.redacted:
                        key, group = other, g
                        break
        self._close_before(ctx.session, statement_id, key[2])
        if group is None:
            group = _Group(
                ctx.session, statement_id, key[2], ctx.ts, self.now, ctx.user, ctx.database, ctx.application_name,
                ctx.client_addr, ctx.client_port, command, facts or analyse_statement(statement, "postgres"),
                logged_at_end=rows_text is not None, system=system,
            )
            self._add(group)
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
        key = (group.session, group.statement_id, group.part)
        self._groups[key] = group
        self._by_session.setdefault(group.session, []).append(key)

    def _close(self, key: tuple[str, int, str]) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        keys = self._by_session.get(group.session)
        if keys is not None:
            keys.remove(key)
            if not keys:
                del self._by_session[group.session]
        self._emit(group)

    def _emit(self, g: _Group) -> None:
        f = g.facts
        unknown = [*NEVER_LOGGED, "error_code", *self.context_unknown]
        rows = g.rows
        if f.cursor_name is not None or g.command == "DECLARE CURSOR":
            rows = None  # pgAudit logs 0 for DECLARE and never logs the FETCHes: the rows read are not known
        if rows is None:
            unknown.append("rows")
        if g.logged_at_end:
            unknown.append("started_at")
        payload = DbQueryPayload(
            session_id=g.session,
            statement_type=(f.statement_type or g.command)[:64],
            fingerprint=f.fingerprint,
            statement=f.redacted,
            database=name(g.database),
            application_name=name(g.application_name, 1024),
            client_addr=name(g.client_addr, 64),
            client_port=g.client_port,
            server=name(self.server, 1024),
            started_at=None if g.logged_at_end else g.ts,
            tables_read=names(g.read or list(f.tables_read), MAX_TABLES),
            tables_written=names(g.written or list(f.tables_written), MAX_TABLES),
            columns=names(f.columns, MAX_COLUMNS),
            sensitive_classes=list(f.sensitive_classes)[:64],
            rows=rows,
            cursor=name(f.cursor_name),
            system=g.system,
            unknown=unknown,
        )
        self.emitter.query(payload, g.ts, g.user, f.end_user)

    # -- sessions ---------------------------------------------------------------------------------------------

    def _connected(self, ctx: PgContext, msg: str) -> None:
        m = _AUTHORIZED.match(msg)
        if m is None:
            return
        app = m.group("app") if m.group("app") is not None else ctx.application_name
        payload = DbSessionPayload(
            session_id=ctx.session,
            phase="start",
            database=name(m.group("db") or ctx.database),
            application_name=name(app, 1024),
            client_addr=name(ctx.client_addr, 64),
            client_port=ctx.client_port,
            tls=m.group("tls") is not None,
            unknown=["auth_method", "server_addr", "server_port", "process"]
            + [u for u in self.context_unknown if u in ("client_addr", "client_port")],
        )
        self.emitter.session(payload, ctx.ts, m.group("user") or ctx.user)

    def _disconnected(self, ctx: PgContext, msg: str) -> None:
        for key in list(self._by_session.get(ctx.session, ())):
            self._close(key)
        m = _DISCONNECTION.match(msg)
        if m is None:
            return
        port = m.group("port")
        payload = DbSessionPayload(
            session_id=ctx.session,
            phase="end",
            database=name(m.group("db") or ctx.database),
            application_name=name(ctx.application_name, 1024),
            client_addr=name(m.group("host") or ctx.client_addr, 64),
            client_port=int(port) if port else ctx.client_port,
            unknown=["auth_method", "server_addr", "server_port", "process", "tls"],
        )
        self.emitter.session(payload, ctx.ts, m.group("user") or ctx.user)
