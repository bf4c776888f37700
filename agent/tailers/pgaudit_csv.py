"""PostgreSQL's csvlog format: one record per message, several physical lines when a field holds a newline.

Every field that can hold a newline is quoted, so a record is complete exactly when its double quotes are
balanced. Columns (PostgreSQL 13+; 14 added leader_pid and query_id): log_time, user_name, database_name,
process_id, connection_from, session_id, session_line_num, command_tag, session_start_time,
virtual_transaction_id, transaction_id, error_severity, sql_state_code, message, detail, hint, internal_query,
internal_query_pos, context, query, query_pos, location, application_name, backend_type, leader_pid, query_id.
"""

from __future__ import annotations

import csv

from agent.tailers._time import LogTimes
from agent.tailers.emit import name
from agent.tailers.pgaudit import PgAuditParser
from agent.tailers.pgaudit_sessions import Who

csv.field_size_limit(1 << 30)  # a logged statement can be far longer than csv's default 128 KiB

_LOG_TIME, _USER, _DB, _PID, _FROM, _SESSION, _SEVERITY, _MESSAGE, _APP = 0, 1, 2, 3, 4, 5, 11, 13, 22
MIN_COLUMNS = 23  # PostgreSQL 9.0 – 12; 13 added backend_type, 14 leader_pid and query_id


class _OneRecord:
    """The csv reader's input: the one record being read, then the end (a reader asks for more only when a quoted
    field is not closed, and then finds none)."""

    __slots__ = ("text",)

    def __init__(self) -> None:
        self.text: str | None = None

    def __iter__(self) -> _OneRecord:
        return self

    def __next__(self) -> str:
        text, self.text = self.text, None
        if text is None:
            raise StopIteration
        return text


class CsvFormat:
    """Feeds complete csvlog records to a PgAuditParser; holds the lines of a record not yet complete."""

    def __init__(self, parser: PgAuditParser, times: LogTimes, *, max_record_bytes: int) -> None:
        self.parser = parser
        self.times = times
        self.max_record_bytes = max_record_bytes
        self._parts: list[str] = []
        self._start: tuple[int, int] = (0, 0)
        self._size = 0
        self._quotes = 0
        self._skipping = False
        self._who: dict[tuple[str, ...], Who] = {}
        parser.parse_time = times.pg
        # One reader for every record (making a reader per record costs more than parsing one).
        self._one = _OneRecord()
        self._reader = csv.reader(self._one, strict=True)

    def held(self) -> tuple[int, int] | None:
        return (self._start[0], self._start[1] - 1) if self._parts else None

    def reset(self) -> None:
        self._parts, self._size, self._quotes, self._skipping = [], 0, 0, False

    def feed(self, raw: bytes, offset: int, number: int) -> None:
        text = raw.decode("utf-8", "replace")
        quotes = text.count('"')
        if self._skipping:
            # Inside an over-long record: it ends where its quotes balance again.
            self._quotes += quotes
            if self._quotes % 2 == 0:
                self._skipping, self._quotes = False, 0
            return
        if not self._parts:
            if quotes % 2 == 0:
                self._record(text, offset, number)
                return
            self._start, self._size, self._quotes = (offset, number), 0, 0
        self._parts.append(text)
        self._size += len(text) + 1
        self._quotes += quotes
        if self._quotes % 2 == 0:
            record, self._parts = "\n".join(self._parts), []
            self._record(record, *self._start)
        elif self._size > self.max_record_bytes:
            self.parser.emitter.parse_error(*self._start, "a csvlog record longer than max_record_bytes")
            self._parts, self._skipping = [], True

    def end_of_file(self) -> None:
        if self._parts:
            self.parser.emitter.parse_error(*self._start, "the file ended inside a csvlog record")
        self.reset()

    def _record(self, text: str, offset: int, number: int) -> None:
        self._one.text = text
        try:
            row = next(self._reader)
        except (csv.Error, StopIteration):
            self._one.text = None  # a record cut short must not run into the next one
            self.parser.emitter.parse_error(offset, number, "not a well-formed CSV record")
            return
        if len(row) < MIN_COLUMNS:
            self.parser.emitter.parse_error(offset, number, f"a csvlog record with {len(row)} columns; "
                                            f"PostgreSQL writes at least {MIN_COLUMNS}")
            return
        ts = row[_LOG_TIME]
        key = (row[_SESSION], row[_PID], row[_USER], row[_DB], row[_APP], row[_FROM])
        who = self._who.get(key)
        if who is None:
            who = self._make_who(*key)
            if len(self._who) >= 4096:
                self._who.clear()
            self._who[key] = who
        self.parser.message(ts, who, row[_SEVERITY], row[_MESSAGE], offset, number)

    @staticmethod
    def _make_who(session: str, pid: str, user: str, database: str, app: str, remote: str) -> Who:
        addr, port = remote or None, None
        if addr and addr != "[local]":
            host, sep, p = addr.rpartition(":")
            if sep and p.isdigit() and int(p) <= 65535:
                addr, port = host, int(p)
        return Who(
            session=name(session or pid) or "unknown",
            user=name(user),
            database=name(database),
            application_name=name(app, 1024),
            client_addr=name(addr, 64),
            client_port=port,
        )
