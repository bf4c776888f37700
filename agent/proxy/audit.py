"""One connection's audit: protocol messages in, finished statements (`QueryRecord`) out.

Every client message that expects an answer pushes a slot on a FIFO; every server answer is matched to the slot
at its head, which is how pipelined extended-protocol batches, multi-statement simple queries and errors
(the server skips to the next Sync) are attributed to the right statement. A statement becomes a record when
the server completes it (CommandComplete, ErrorResponse, or the end of a portal read in several Executes).

This runs beside forwarding and never decides what is forwarded. Values are never kept: Bind parameters are
passed over, DataRow contents are read only for configured customer-key columns and leave only as hashes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.proxy import pgwire as w
from agent.proxy.analysis import Analyser, Analysis
from agent.proxy.keys import KeyMatcher, KeyPlan, hash_key
from agent.proxy.redact import redact, split_statements, sqlcommenter

MAX_STATEMENTS = 10000  # named prepared statements remembered per connection
MAX_CURSORS = 1000
MAX_PENDING_ANSWERS = 100_000  # backpressure keeps a pipelining client far below this; past it, stop auditing
_EMPTY = Analysis("", "", "UNKNOWN", unknown=("statement",))
# Message types as module constants: the handlers below compare each message against several of them.
_B, _E, _S, _P, _Q, _D, _C, _F = w.B, w.E, w.S, w.P, w.Q, w.D, w.C, w.F
_DATA_ROW, _COMMAND_COMPLETE, _READY, _ROW_DESCRIPTION = w.DATA_ROW, w.COMMAND_COMPLETE, w.READY, w.ROW_DESCRIPTION
_NO_DATA, _COPY_DATA = w.NO_DATA, w.COPY_DATA


@dataclass(slots=True)
class SessionInfo:
    session_id: str
    listener: str
    client_addr: str | None
    client_port: int | None
    server_addr: str
    server_port: int
    database: str | None = None
    user: str | None = None
    application_name: str | None = None
    auth_method: str | None = None
    end_user: str | None = None  # from application_name, when configured


class QueryRecord:
    __slots__ = ("session", "application_name", "analysis", "data", "end_user", "started", "duration", "rows",
                 "bytes", "error", "cursor", "keys", "keys_total", "plan", "planned", "counted", "portal")

    def __init__(self, session: SessionInfo, analysis: Analysis, end_user: str | None) -> None:
        self.session = session
        self.application_name = session.application_name  # as it was when the statement ran
        self.analysis = analysis
        self.data = analysis  # whose tables the rows come from: the declared query for a FETCH
        self.end_user = end_user
        self.started = time.time()
        self.duration = 0.0
        self.rows = 0  # counted DataRows
        self.counted: int | None = None  # the row count CommandComplete reported
        self.bytes = 0
        self.error: str | None = None
        self.cursor: str | None = analysis.cursor
        self.keys: dict[str, None] | None = None  # distinct hashes, in order of first sight
        self.keys_total = 0
        self.plan: KeyPlan | None = None
        self.planned = False  # plan is worked out when the first row arrives: Describe answers come first
        self.portal: Portal | None = None


class Slot:
    """An answer the server owes: `kind` is the client message letter, `rec` the statement it feeds."""

    __slots__ = ("kind", "name", "rec", "queue", "index", "target", "end_user", "shape")

    def __init__(self, kind: int, name: bytes = b"", rec: QueryRecord | None = None) -> None:
        self.kind = kind
        self.name = name  # the statement or portal a Parse, Bind or Execute names
        self.rec = rec
        self.target: Prepared | Portal | None = None  # what a Describe describes
        self.queue: list[Analysis] | None = None  # the statements of a simple query
        self.index = 0
        self.end_user: str | None = None
        self.shape: tuple[bytes, Analysis, str | None] | None = None  # see AuditSession.fast_query


class Prepared:
    __slots__ = ("analysis", "end_user", "columns", "fast", "seen")

    def __init__(self, analysis: Analysis, end_user: str | None) -> None:
        self.analysis = analysis
        self.end_user = end_user
        self.columns: tuple[w.Column, ...] | None = None
        self.fast: tuple[bytes, bytes] | None = None  # its event template, when the lane may write its events
        self.seen: tuple[w.Column, ...] | None = None  # its result's columns as a portal of it described them

    @property
    def result(self) -> tuple[w.Column, ...] | None:
        """The result's columns, from a Describe of the statement or else of a portal of it; None: not known."""
        return self.columns if self.columns is not None else self.seen


class Portal:
    __slots__ = ("prepared", "formats", "columns", "running", "generation")

    def __init__(self, prepared: Prepared, formats: tuple[int, ...] | None, generation: int = 0) -> None:
        self.prepared = prepared
        self.formats = formats
        self.generation = generation  # Syncs the client had sent when it bound this portal
        self.columns: tuple[w.Column, ...] | None = None
        self.running: QueryRecord | None = None  # an Execute that stopped at its row limit


Template = Callable[[SessionInfo, Analysis, "str | None"], "tuple[bytes, bytes] | None"]


class AuditSession:
    def __init__(self, info: SessionInfo, analyser: Analyser, keys: KeyMatcher,
                 emit: Callable[[QueryRecord], None], end_user_keys: tuple[str, ...] = ("custos_user",),
                 template: Template | None = None) -> None:
        """`template(info, analysis, end_user)`: the event template of a statement whose events the lane
        (agent/proxy/_framer.c) may write, or None for one that needs this class (see `fast_query`)."""
        self.info = info
        self.analyser = analyser
        self.keys = keys if keys.active else None
        self.emit = emit
        self.end_user_keys = end_user_keys
        self.slots: deque[Slot] = deque()
        self.statements: dict[bytes, Prepared] = {}
        self.portals: dict[bytes, Portal] = {}
        self.cursors: dict[str, Analysis] = {}
        self.ready = False  # the first ReadyForQuery was seen: authentication is over
        self.error_code: str | None = None  # of a failed authentication or startup
        self.backend_key: tuple[int, int] | None = None
        self.in_transaction = False
        self.syncs = 0  # Syncs sent by the client
        self.template = template
        self.lane: object | None = None  # the session's Lane, when the proxy gave it one
        self._shape: tuple[bytes, Analysis, str | None] | None = None  # a simple query the lane asked about
        if self.keys is not None:
            self.keys.watch(self)
        self._plans: dict[tuple[int, int, tuple[int, ...] | None], tuple[object, object, KeyPlan | None]] = {}

    # -- client → server ------------------------------------------------------------------------------------

    def client_message(self, t: int, body: bytes, truncated: bool) -> None:
        slots = self.slots
        if len(slots) > MAX_PENDING_ANSWERS:
            raise w.ProtocolError("a client sent far more requests than the server answered; audit stops here")
        if t == _B:
            portal, stmt, formats = w.bind_message(body, truncated, self.keys is not None)
            prepared = self.statements.get(stmt) or Prepared(_EMPTY, None)
            self.portals[portal] = Portal(prepared, formats, self.syncs)
            slots.append(Slot(t, portal))
        elif t == _E:
            portal_name = body[:body.index(0)]  # w.execute_message
            portal = self.portals.get(portal_name)
            if portal is None:
                portal = Portal(Prepared(_EMPTY, None), None)
            rec = portal.running
            if rec is None:
                prepared = portal.prepared
                rec = QueryRecord(self.info, prepared.analysis, prepared.end_user)
                rec.portal = portal
            slots.append(Slot(t, portal_name, rec))
        elif t == _S:
            self.syncs += 1
            slot = Slot(t)
            slot.index = self.syncs
            slots.append(slot)
        elif t == _D:
            kind, name = w.target_message(body)
            slot = Slot(t)
            slot.target = self.statements.get(name) if kind == 0x53 else self.portals.get(name)
            slots.append(slot)
        elif t == _P:
            name, sql = w.parse_message(body)
            if len(self.statements) >= MAX_STATEMENTS and name not in self.statements:
                self.statements.pop(next(iter(self.statements)))
            analysis = self.analyser.analyse(sql)
            prepared = self.statements[name] = Prepared(analysis, self._end_user(sql))
            if self.template is not None:
                prepared.fast = self._fast(analysis, prepared.end_user)
            slots.append(Slot(t, name))
        elif t == _Q:
            sql = body[:-1].decode("utf-8", "replace") if not truncated else body.decode("utf-8", "replace")
            end_user = self._end_user(sql)
            parts = split_statements(redact(sql))
            slot = Slot(t)
            slot.queue = [self.analyser.analyse_redacted(p) for p in parts]
            slot.rec = QueryRecord(self.info, slot.queue[0], end_user) if slot.queue else None
            slot.end_user = end_user
            if self._shape is not None:
                slot.shape, self._shape = self._shape, None
            slots.append(slot)
        elif t == _C:
            kind, name = w.target_message(body)
            if kind == 0x53:
                self.statements.pop(name, None)
            else:
                self._close_portal(name)
            slots.append(Slot(t))
        elif t == _F:
            slots.append(Slot(t))

    # -- the lane (agent/proxy/_framer.c) --------------------------------------------------------------------

    def _fast(self, analysis: Analysis, end_user: str | None,
              columns: tuple[w.Column, ...] | None = None) -> tuple[bytes, bytes] | None:
        """The template of a statement whose events need only times and counts, or None: a cursor statement
        (its rows belong to another), or one whose results may hold customer-key columns (they are hashed here):
        judged by its result's columns when they are known, else by what it reads."""
        if self.template is None or analysis.cursor_op is not None:
            return None
        keys = self.keys
        if keys is not None:
            if columns is None:
                if keys.may_return(analysis):
                    return None
            elif keys.may_hold(self.info.database or "", columns):
                return None
        return self.template(self.info, analysis, end_user)

    def fast_query(self, sql: bytes, shape: bytes) -> tuple[bytes, bytes] | None:
        """For the lane: the template of a simple query's one statement, or None. The lane calls this once per
        `shape` of query text (literals aside), and only for texts without comments, so the end user is the
        session's. A statement that reads a key's table is judged again by its first result (`_result_shape`)."""
        text = sql.decode("utf-8", "replace")
        parts = split_statements(redact(text))
        if len(parts) != 1 or "/*" in text:
            return None
        analysis = self.analyser.analyse_redacted(parts[0])
        fast = self._fast(analysis, self.info.end_user)
        if fast is None and self.template is not None and analysis.cursor_op is None:
            self._shape = (shape, analysis, self.info.end_user)  # for the Query message that comes next
        return fast

    def _result_shape(self, slot: Slot, columns: tuple[w.Column, ...]) -> None:
        """A simple query the lane gave to Python for its key table returned these columns: when they hold no
        key, the lane may take the next query of its shape."""
        shape = slot.shape
        slot.shape = None
        if shape is not None and self.lane is not None:
            fast = self._fast(shape[1], shape[2], columns)
            if fast is not None:
                self.lane.set_query(shape[0], fast)  # type: ignore[attr-defined]

    def _judge(self, target: Prepared | Portal, columns: tuple[w.Column, ...]) -> None:
        """A Describe of a statement, or the first of a portal of it (libpq describes every portal it runs),
        showed the result's columns: whether the lane may take the statement is judged by them."""
        if type(target) is Portal:
            prepared = target.prepared
            if prepared.seen is not None or prepared.columns is not None:
                return
            prepared.seen = columns
        else:
            prepared = target  # type: ignore[assignment]
            if not columns:
                prepared.columns = ()
        prepared.fast = self._fast(prepared.analysis, prepared.end_user, prepared.result)

    def keys_learned(self) -> None:
        """A key column was learned, so an alias of it now counts: plan results again, judge templates again."""
        self._plans.clear()
        for prepared in self.statements.values():
            if prepared.fast is not None:
                prepared.fast = self._fast(prepared.analysis, prepared.end_user, prepared.result)
        if self.lane is not None:
            self.lane.forget_queries()  # type: ignore[attr-defined]

    def rows_seen(self, count: int, size: int) -> None:
        """DataRows the lane counted before it gave its round trip back."""
        if self.slots:
            rec = self.slots[0].rec
            if rec is not None:
                rec.rows += count
                rec.bytes += size

    def adopt_unnamed(self, prepared: Prepared | None) -> None:
        """The lane ran `prepared` through the unnamed portal inside a transaction: the portal lives on (it
        replaces the one before). None: a transaction ended in the lane, and with it the unnamed portal."""
        if prepared is None:
            self.portals.pop(b"", None)
        else:
            self.portals[b""] = Portal(prepared, None, self.syncs)

    def _application_changed(self) -> None:
        """Templates carry the application name: make them again."""
        if self.template is not None:
            for prepared in self.statements.values():
                prepared.fast = self._fast(prepared.analysis, prepared.end_user, prepared.result)
        if self.lane is not None:
            self.lane.forget_queries()  # type: ignore[attr-defined]

    def _end_user(self, sql: str) -> str | None:
        if "/*" in sql:
            tags = sqlcommenter(sql)
            for key in self.end_user_keys:
                if tags.get(key):
                    return tags[key]
        return self.info.end_user

    def _record(self, analysis: Analysis, end_user: str | None) -> QueryRecord:
        return QueryRecord(self.info, analysis, end_user)

    def _resolve_cursor(self, rec: QueryRecord) -> None:
        """A FETCH reads the rows of the query its cursor was declared for."""
        a = rec.analysis
        if a.cursor_op in ("FETCH", "MOVE") and a.cursor and rec.data is a:
            declared = self.cursors.get(a.cursor)
            if declared is not None:
                rec.data = declared

    def _plan(self, columns: tuple[w.Column, ...] | None, rec: QueryRecord,
              formats: tuple[int, ...] | None) -> KeyPlan | None:
        rec.planned = True
        if self.keys is None or not columns:
            return None
        self._resolve_cursor(rec)
        # Describe answers repeat (the same tuple object, cached by pgwire): so do the plans made from them.
        key = (id(columns), id(rec.data), formats)
        hit = self._plans.get(key)
        if hit is not None and hit[0] is columns and hit[1] is rec.data:
            return hit[2]
        plan = self.keys.plan(self.info.database or "", columns, rec.data, formats)
        if len(self._plans) >= 1024:
            self._plans.clear()
        self._plans[key] = (columns, rec.data, plan)
        return plan

    # -- server → client ------------------------------------------------------------------------------------

    def wants(self, t: int) -> bool:
        """Whether a message's body is needed or only its size: a DataRow's only when it holds customer-key
        columns, CopyData's never, every other message's always (the framer asks for a message that arrives in
        more than one read, and skips what is not wanted: a CommandComplete cut by a read must still count)."""
        if t == _DATA_ROW:
            if self.keys is not None and self.slots:
                rec = self.slots[0].rec
                if rec is None:
                    return False
                if not rec.planned and rec.portal is not None:
                    portal = rec.portal
                    rec.plan = self._plan(portal.columns or portal.prepared.columns, rec, portal.formats)
                return rec.plan is not None
            return False
        return t != _COPY_DATA

    def skipped(self, t: int, length: int) -> None:
        if self.slots:
            rec = self.slots[0].rec
            if rec is not None:
                if t == w.DATA_ROW:
                    rec.rows += 1
                rec.bytes += length

    def server_message(self, t: int, body: bytes, truncated: bool) -> None:
        slots = self.slots
        if t == _DATA_ROW:
            if slots and slots[0].rec is not None:
                rec = slots[0].rec
                rec.rows += 1
                rec.bytes += len(body)
                if rec.plan is not None:
                    self._hash_row(rec, body, truncated)
        elif t in _POP_ONLY:
            if slots:
                head = slots.popleft()
                if t == _NO_DATA and head.kind == _D and head.target is not None and self.template is not None:
                    self._judge(head.target, ())
        elif t == _COMMAND_COMPLETE:
            if slots:
                head = slots[0]
                rec = head.rec
                if rec is not None:
                    if not rec.rows:  # the tag's count is only needed when no rows were counted
                        rec.counted = w.command_rows(body)
                    self._finish(rec)
                kind = head.kind
                if kind == _Q:
                    if head.shape is not None:  # a statement without a result: no key can come of it
                        self._result_shape(head, ())
                    self._next_statement(head)
                elif kind == _E:
                    portal = self.portals.get(head.name)
                    if portal is not None:
                        portal.running = None
                    slots.popleft()
        elif t == _READY:
            generation = self.syncs
            while slots:
                slot = slots.popleft()
                kind = slot.kind
                if kind == _S:
                    generation = slot.index
                    break
                if kind == _Q:
                    generation = self.syncs + 1
                    break
            self.in_transaction = body[:1] != b"I"
            if not self.in_transaction and self.portals:
                self._end_transaction(generation)
            self.ready = True
        elif t == _ROW_DESCRIPTION:
            self._row_description(body)
        elif t == w.PORTAL_SUSPENDED:
            if slots:
                head = slots.popleft()
                portal = self.portals.get(head.name)
                if portal is not None:
                    portal.running = head.rec
        elif t == w.ERROR:
            self._error(body)
        elif t == w.EMPTY_QUERY:
            if slots:
                head = slots[0]
                if head.kind == _Q:
                    head.rec = None
                else:
                    slots.popleft()
        elif t == w.AUTH:
            code = w.auth_code(body)
            if self.info.auth_method is None and code not in (11, 12):  # not SASL continue/final
                self.info.auth_method = w.AUTH_METHODS.get(code, str(code))
        elif t == w.KEY_DATA:
            self.backend_key = w.backend_key(body)
        elif t == w.PARAM_STATUS:
            key, pos = w.cstring(body, 0)
            if key == "application_name":
                app = w.cstring(body, pos)[0] or None
                if app != self.info.application_name:
                    self.info.application_name = app
                    self._application_changed()

    def _row_description(self, body: bytes) -> None:
        if not self.slots:
            return
        head = self.slots[0]
        if self.keys is None:
            if head.kind == w.D:
                self.slots.popleft()
            return
        columns = w.row_description(body)
        if head.kind == w.D:
            self.slots.popleft()
            target = head.target
            if target is not None:
                target.columns = columns
                if self.template is not None:
                    self._judge(target, columns)
        elif head.rec is not None:  # a simple query's result
            head.rec.plan = self._plan(columns, head.rec, None)
            if head.shape is not None:
                self._result_shape(head, columns)

    def _hash_row(self, rec: QueryRecord, body: bytes, truncated: bool) -> None:
        plan = rec.plan
        keys = self.keys
        if truncated or plan is None or keys is None:
            return
        values = w.data_row_fields(body, plan.indexes)
        for raw, (type_oid, fmt) in zip(values, plan.readers, strict=False):  # a short row has fewer
            if raw is None:
                continue
            rec.keys_total += 1
            if rec.keys is None:
                rec.keys = {}
            if len(rec.keys) < keys.cap:
                text = keys.text(raw, type_oid, fmt)
                if text is not None:
                    rec.keys[hash_key(keys.secret, text)] = None

    def _error(self, body: bytes) -> None:
        code = w.error_sqlstate(body)
        slots = self.slots
        if not self.ready:
            self.error_code = code
            return
        if not slots:
            return
        head = slots[0]
        if head.kind == w.Q:
            if head.rec is not None:
                head.rec.error = code
                self._finish(head.rec)
                head.rec = None
            head.queue = []
            return
        rec = head.rec
        if head.kind == w.P:
            prepared = self.statements.get(head.name)
            if prepared is not None:
                rec = self._record(prepared.analysis, prepared.end_user)
        elif head.kind == w.B:
            portal = self.portals.get(head.name)
            if portal is not None:
                rec = self._record(portal.prepared.analysis, portal.prepared.end_user)
        if rec is not None:
            rec.error = code
            self._finish(rec)
        # The server now skips everything up to the next Sync: so do its answers.
        while slots and slots[0].kind != w.S:
            slots.popleft()

    def _next_statement(self, head: Slot) -> None:
        head.index += 1
        queue = head.queue or []
        if head.index < len(queue):
            head.rec = self._record(queue[head.index], head.end_user)
        else:
            head.rec = None

    def _finish(self, rec: QueryRecord) -> None:
        rec.duration = max(time.time() - rec.started, 0.0)
        a = rec.analysis
        if a.cursor_op is None:  # most statements: no cursor to resolve or remember
            self.emit(rec)
            return
        self._resolve_cursor(rec)
        if rec.error is None and a.cursor:
            if a.cursor_op == "DECLARE" and a.declared is not None:
                if len(self.cursors) >= MAX_CURSORS:
                    self.cursors.pop(next(iter(self.cursors)))
                self.cursors[a.cursor] = a.declared
            elif a.cursor_op == "CLOSE":
                self.cursors.pop(a.cursor, None)
        self.emit(rec)

    def _close_portal(self, name: bytes) -> None:
        portal = self.portals.pop(name, None)
        if portal is not None and portal.running is not None:
            self._finish(portal.running)

    def _end_transaction(self, generation: int) -> None:
        """Portals die with their transaction; one left at a row limit is a finished (partial) read.

        Only portals bound before the Sync being answered: a pipelining client may have bound newer ones.
        """
        portals = self.portals
        if portals:
            for name in [n for n, p in portals.items() if p.generation < generation]:
                portal = portals.pop(name)
                if portal.running is not None:
                    self._finish(portal.running)

    def close(self) -> None:
        """The connection ended: statements still open become records with what was seen."""
        for portal in list(self.portals):
            self._close_portal(portal)
        self.slots.clear()


_POP_ONLY = frozenset({w.PARSE_COMPLETE, w.BIND_COMPLETE, w.CLOSE_COMPLETE, w.NO_DATA, w.FUNC_RESULT})
