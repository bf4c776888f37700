"""MariaDB's server_audit plugin, file output: one line per event.

    timestamp,serverhost,username,host,connectionid,queryid,operation,database,object,retcode

- The timestamp (`20261127 01:54:29`) is the server's local time without a zone: the source's `timezone` says
  which zone that is.
- `host` is `host:port` from MariaDB 12 on, the bare host before.
- TABLE events (READ, WRITE, CREATE, ALTER, DROP, RENAME) come before the QUERY they belong to, with an empty
  retcode; they are joined to it by connection id and query id, so that one statement gives ONE db.query.
- The QUERY object is the statement single-quoted with backslash escapes (\\' \\\\ \\n \\r \\t \\b \\f), cut at
  `server_audit_query_log_limit` characters (such a statement lists `statement` in `unknown`).
- There are no row counts; statements that fail to parse are not logged at all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from agent.events import DbQueryPayload, DbSessionPayload
from agent.tailers._sql import analyse_statement
from agent.tailers._time import LogTimes, TimeFormatError
from agent.tailers.emit import MAX_COLUMNS, MAX_TABLES, NEVER_LOGGED, Emitter, name, names

_HEAD = re.compile(
    r"^(?P<ts>\d{8} \d\d:\d\d:\d\d),(?P<who>.*?),(?P<conn>\d+),(?P<qid>\d+),"
    r"(?P<op>QUERY|READ|WRITE|CREATE|ALTER|DROP|RENAME|CONNECT|DISCONNECT|FAILED_CONNECT|CHANGEUSER|PROXY_CONNECT),"
    r"(?P<rest>.*)$",
    re.DOTALL,
)
_RETCODE = re.compile(r"(?P<ret>-?\d+)(?:,[^']*)?")
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "'": "'", "\\": "\\"}
_TABLE_OPS = {"READ": "read", "WRITE": "written", "CREATE": "written", "ALTER": "written", "DROP": "written",
              "RENAME": "written"}
# The optimizer reads its engine-independent statistics while planning a user's statement; those reads are the
# server's, not the user's, unless the statement names the tables itself.
_STATISTICS = ("mysql.table_stats", "mysql.column_stats", "mysql.index_stats")
_V6_PORT = re.compile(r"^\[(?P<host>.+)\]:(?P<port>\d+)$")
_SESSION_UNKNOWN = ["application_name", "auth_method", "tls", "server_addr", "server_port", "process"]


def unescape(text: str) -> str:
    return _ESCAPED.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(1)), text) if "\\" in text else text


def split_host(host: str) -> tuple[str | None, int | None]:
    """`host`, `host:port` (MariaDB 12) or `[v6]:port`; a bare IPv6 address has several colons and no port."""
    m = _V6_PORT.match(host)
    if m is not None:
        return m.group("host"), int(m.group("port"))
    h, sep, p = host.rpartition(":")
    if sep and p.isdigit() and ":" not in h:
        return h, int(p)
    return host or None, None


@dataclass(slots=True)
class _Pending:
    """TABLE lines waiting for their QUERY."""

    connection: str
    query_id: str
    ts: dt.datetime
    last_seen: float
    user: str | None
    client_addr: str | None
    client_port: int | None
    read: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["ts"] = self.ts.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> _Pending:
        d = dict(d)
        d["ts"] = dt.datetime.fromisoformat(str(d["ts"]))
        return cls(**d)  # type: ignore[arg-type]


class MariaDbAuditFormat:
    """server_audit lines to db.query and db.session events."""

    def __init__(
        self,
        emitter: Emitter,
        times: LogTimes,
        *,
        server: str | None = None,
        sensitive: Mapping[str, str] | None = None,
        group_wait: float = 1.0,
        query_log_limit: int = 1024,
    ) -> None:
        self.emitter = emitter
        self.times = times
        self.server = name(server, 1024)
        self.sensitive = dict(sensitive or {})
        self.group_wait = group_wait
        self.query_log_limit = query_log_limit
        self.now = 0.0
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._by_conn: dict[str, list[tuple[str, str]]] = {}

    # -- state (the source commits it with the position) -------------------------------------------------------

    def held(self) -> tuple[int, int] | None:
        return None  # one line is one record

    def reset(self) -> None:
        pass

    def end_of_file(self) -> None:
        pass

    def snapshot(self) -> dict[str, object]:
        return {"pending": [p.to_dict() for p in self._pending.values()]}

    def restore(self, state: Mapping[str, object] | None) -> None:
        self._pending, self._by_conn = {}, {}
        for d in (state or {}).get("pending", ()):  # type: ignore[union-attr]
            self._add(_Pending.from_dict(d))

    def flush_due(self, now: float) -> None:
        for key in [k for k, p in self._pending.items() if p.last_seen <= now - self.group_wait]:
            self._orphan(key)

    # -- lines ------------------------------------------------------------------------------------------------

    def feed(self, raw: bytes, offset: int, number: int) -> None:
        text = raw.decode("utf-8", "replace")
        m = _HEAD.match(text)
        if m is None:
            self.emitter.parse_error(offset, number, "not a server_audit line (timestamp,serverhost,username,host,"
                                     "connectionid,queryid,operation,…)")
            return
        try:
            ts = self.times.mariadb(m.group("ts"))
        except TimeFormatError as e:
            self.emitter.parse_error(offset, number, str(e))
            return
        who = m.group("who")
        _server_host, _, rest_who = who.partition(",")
        user, _, host = rest_who.rpartition(",")
        addr, port = split_host(host)
        conn, qid, op, rest = m.group("conn"), m.group("qid"), m.group("op"), m.group("rest")
        for key in [k for k in self._by_conn.get(conn, ()) if k[1] != qid]:
            self._orphan(key)  # the connection went on to another query: those TABLE lines had none
        if op == "QUERY":
            self._query(ts, conn, qid, user, addr, port, rest, offset, number)
        elif op in _TABLE_OPS:
            if not rest.endswith(","):
                self.emitter.parse_error(offset, number, "a TABLE event whose retcode is not empty")
                return
            database, _, table = rest[:-1].partition(",")
            key = (conn, qid)
            pending = self._pending.get(key)
            if pending is None:
                pending = _Pending(conn, qid, ts, self.now, user or None, addr, port)
                self._add(pending)
            pending.last_seen = self.now
            target = pending.read if _TABLE_OPS[op] == "read" else pending.written
            qualified = f"{database}.{table}" if database else table
            if qualified not in target:
                target.append(qualified)
        else:
            self._connection(ts, conn, op, user, addr, port, rest, offset, number)

    def _query(self, ts: dt.datetime, conn: str, qid: str, user: str, addr: str | None, port: int | None,
               rest: str, offset: int, number: int) -> None:
        database, sep, quoted = rest.partition(",'")
        end = _query_end(quoted) if sep else None
        if end is None:
            self.emitter.parse_error(offset, number, "a QUERY event whose statement is not a quoted string "
                                     "followed by a retcode")
            return
        cut, retcode = end
        escaped = quoted[:cut]
        sql = unescape(escaped)
        facts = analyse_statement(sql, "mysql", self.sensitive, schema=database or None)
        pending = self._pending.pop((conn, qid), None)
        if pending is not None:
            self._by_conn[conn].remove((conn, qid))
            if not self._by_conn[conn]:
                del self._by_conn[conn]
            if any(t in _STATISTICS for t in pending.read):
                lowered = sql.lower()
                pending.read = [t for t in pending.read if t not in _STATISTICS or t[6:] in lowered]
        unknown = [*NEVER_LOGGED, "rows", "started_at", "application_name"]
        if port is None:
            unknown.append("client_port")
        if self.query_log_limit > 0 and len(escaped) >= self.query_log_limit - 1:
            unknown.append("statement")  # cut at server_audit_query_log_limit: the text is only its beginning
        payload = DbQueryPayload(
            session_id=conn,
            statement_type=facts.statement_type[:64],
            fingerprint=facts.fingerprint,
            statement=facts.redacted,
            database=name(database),
            client_addr=name(addr, 64),
            client_port=port,
            server=self.server,
            tables_read=names(pending.read if pending and pending.read else list(facts.tables_read), MAX_TABLES),
            tables_written=names(pending.written if pending and pending.written else list(facts.tables_written),
                                 MAX_TABLES),
            columns=names(facts.columns, MAX_COLUMNS),
            sensitive_classes=list(facts.sensitive_classes)[:64],
            error_code=None if retcode == "0" else retcode,
            unknown=unknown,
        )
        self.emitter.query(payload, ts, user or None, facts.end_user)

    def _connection(self, ts: dt.datetime, conn: str, op: str, user: str, addr: str | None, port: int | None,
                    rest: str, offset: int, number: int) -> None:
        if op == "PROXY_CONNECT":
            return
        fields = rest.split(",")
        if len(fields) < 3 or not fields[2].lstrip("-").isdigit():
            self.emitter.parse_error(offset, number, "a connection event without a numeric retcode")
            return
        if op == "DISCONNECT":
            for key in list(self._by_conn.get(conn, ())):
                self._orphan(key)
        retcode = fields[2]
        unknown = list(_SESSION_UNKNOWN)
        if port is None:
            unknown.append("client_port")
        payload = DbSessionPayload(
            session_id=conn,
            phase="end" if op == "DISCONNECT" else "observed" if op == "CHANGEUSER" else "start",
            database=name(fields[0]),
            client_addr=name(addr, 64),
            client_port=port,
            error_code=None if retcode == "0" else retcode,
            unknown=unknown,
        )
        self.emitter.session(payload, ts, user or None)

    def _add(self, pending: _Pending) -> None:
        key = (pending.connection, pending.query_id)
        self._pending[key] = pending
        self._by_conn.setdefault(pending.connection, []).append(key)

    def _orphan(self, key: tuple[str, str]) -> None:
        """TABLE lines whose QUERY never came (QUERY events not enabled, or filtered out): the tables are known,
        the statement is not."""
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        keys = self._by_conn[pending.connection]
        keys.remove(key)
        if not keys:
            del self._by_conn[pending.connection]
        unknown = [*NEVER_LOGGED, "rows", "started_at", "application_name", "statement", "fingerprint",
                   "statement_type", "error_code"]
        if pending.client_port is None:
            unknown.append("client_port")
        payload = DbQueryPayload(
            session_id=pending.connection,
            statement_type="",
            fingerprint="",
            statement="",
            client_addr=name(pending.client_addr, 64),
            client_port=pending.client_port,
            server=self.server,
            tables_read=names(pending.read, MAX_TABLES),
            tables_written=names(pending.written, MAX_TABLES),
            unknown=unknown,
        )
        self.emitter.query(payload, pending.ts, pending.user, None)


def _query_end(quoted: str) -> tuple[int, str] | None:
    """Where the quoted statement ends (its closing quote) and the retcode after it; searched from the end, as
    the statement itself may hold `',5` (escaped)."""
    idx = quoted.rfind("',")
    while idx >= 0:
        m = _RETCODE.fullmatch(quoted, idx + 2)
        if m is not None and not _escaped_quote(quoted, idx):
            return idx, m.group("ret")
        idx = quoted.rfind("',", 0, idx)
    return None


def _escaped_quote(text: str, index: int) -> bool:
    """Whether the quote at `index` is escaped (preceded by an odd number of backslashes)."""
    n = 0
    while index - n - 1 >= 0 and text[index - n - 1] == "\\":
        n += 1
    return n % 2 == 1
