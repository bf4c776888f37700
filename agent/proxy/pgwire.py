"""PostgreSQL frontend/backend protocol 3.0: message framing and the few message bodies the audit reads.

Framing never holds more than `cap` bytes of one message: a body the audit does not need (DataRow without
customer-key columns, CopyData) is counted and skipped as it streams by, and a needed body longer than `cap`
keeps only its first `cap` bytes (the message is marked truncated). Memory per connection is thereby bounded
whatever lengths a peer announces.

Nothing here keeps bind values, passwords or row contents: the parsers return names, counts and codes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from struct import Struct

from agent.errors import CustosError

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP = 10000  # the server's own limit for a startup packet

_I = Struct("!I")
_i = Struct("!i")
_H = Struct("!H")
_h = Struct("!h")
_HEAD = Struct("!BI")
_II = Struct("!II")

# Frontend message types
Q, P, B, D, E, S, H, C, X, F = (ord(c) for c in "QPBDESHCXF")
COPY_DATA, COPY_DONE, COPY_FAIL, PASSWORD = (ord(c) for c in "dcfp")
# Backend message types
PARSE_COMPLETE, BIND_COMPLETE, CLOSE_COMPLETE = (ord(c) for c in "123")
ROW_DESCRIPTION, DATA_ROW, COMMAND_COMPLETE, ERROR, READY = (ord(c) for c in "TDCEZ")
NO_DATA, PARAM_DESCRIPTION, PORTAL_SUSPENDED, EMPTY_QUERY = (ord(c) for c in "ntsI")
COPY_IN, COPY_OUT, COPY_BOTH, AUTH, KEY_DATA, PARAM_STATUS = (ord(c) for c in "GHWRKS")
NOTICE, NOTIFY, FUNC_RESULT, NEGOTIATE = (ord(c) for c in "NAVv")


class ProtocolError(CustosError):
    """A peer sent bytes that are not the PostgreSQL protocol; the audit of that connection stops."""


Handler = Callable[[int, bytes, bool], None]


class PyFramer:
    """Cuts one direction's byte stream into typed messages and hands each to `handler(type, body, truncated)`.

    `wants(type)` says whether a message's body is needed; unneeded bodies go to `skipped(type, length)`.
    `Framer` is the C version of this class (agent/proxy/_framer.c) when it was built, else this one.
    """

    __slots__ = ("_pend", "_skip", "_handler", "_wants", "_skipped", "cap")

    def __init__(self, handler: Handler, wants: Callable[[int], bool], skipped: Callable[[int, int], None],
                 cap: int = 1 << 20) -> None:
        self._pend = b""
        self._skip = 0  # bytes of the current message still to pass over
        self._handler = handler
        self._wants = wants
        self._skipped = skipped
        self.cap = cap

    def feed(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        if self._skip:
            if self._skip >= n:
                self._skip -= n
                return
            pos = self._skip
            self._skip = 0
        if self._pend:
            data = self._pend + data[pos:]
            self._pend = b""
            pos = 0
            n = len(data)
        handler = self._handler
        unpack = _HEAD.unpack_from
        limit = self.cap + 4  # the longest length field of a message kept whole
        while n - pos >= 5:
            t, length = unpack(data, pos)
            end = pos + 1 + length
            # The common case first: a whole message in this chunk, not over the cap, not a row or copy data.
            if end <= n and 4 <= length <= limit and t != 0x44 and t != 0x64:  # 'D' DataRow, 'd' CopyData
                handler(t, data[pos + 5:end], False)
                pos = end
                continue
            if length < 4:
                raise ProtocolError(f"message of type {t} announces length {length}, below the minimum of 4")
            if end <= n and length <= limit:
                if self._wants(t):
                    handler(t, data[pos + 5:end], False)
                else:
                    self._skipped(t, length - 4)
                pos = end
                continue
            # The message does not end in this chunk, or is longer than the cap.
            if not self._wants(t):
                self._skipped(t, length - 4)
                if end > n:
                    self._skip = end - n
                    return
                pos = end
                continue
            if length > limit:
                if n < pos + 5 + self.cap:
                    break  # wait until the kept prefix is complete
                handler(t, data[pos + 5:pos + 5 + self.cap], True)
                if end > n:
                    self._skip = end - n
                    return
                pos = end
                continue
            break
        if pos < n:
            self._pend = data[pos:]


class PyRelay:
    """The `data_received` of the proxy's two protocols (agent/proxy/session.py): forward, then audit.

    The bytes go to `relay_write` (the other side's `transport.write`) first, then to `relay_feed` (the audit),
    whose exception goes to `audit_fault` and never stops forwarding. Before there is a `relay_write` (the client
    side during startup) they go to `early_data`. `Relay` is the C version (agent/proxy/_framer.c) when it was
    built, else this one.
    """

    relay_write: Callable[[bytes], object] | None = None
    relay_feed: Callable[[bytes], object] | None = None

    def data_received(self, data: bytes) -> None:
        write = self.relay_write
        if write is None:
            self.early_data(data)
            return
        write(data)
        feed = self.relay_feed
        if feed is not None:
            try:
                feed(data)
            except Exception as e:  # noqa: BLE001 - fail-open or fail-closed, never crash forwarding
                self.audit_fault(e)

    def early_data(self, data: bytes) -> None:
        raise NotImplementedError

    def audit_fault(self, exc: BaseException) -> None:
        raise NotImplementedError


try:
    from agent.proxy._framer import Framer as _CFramer
    from agent.proxy._framer import Lane, Outbox
    from agent.proxy._framer import Relay as _CRelay
except ImportError:  # pragma: no cover - the extension is optional (see setup.py)
    _CFramer = _CRelay = None
    Lane = Outbox = None
Framer: type[PyFramer] = _CFramer if _CFramer is not None else PyFramer  # type: ignore[assignment]
Relay: type[PyRelay] = _CRelay if _CRelay is not None else PyRelay  # type: ignore[assignment]


def cstring(body: bytes, pos: int) -> tuple[str, int]:
    end = body.index(0, pos)
    return body[pos:end].decode("utf-8", "replace"), end + 1


def startup_params(body: bytes) -> dict[str, str]:
    """The key/value pairs of a StartupMessage body (after its protocol version)."""
    params: dict[str, str] = {}
    pos = 4
    try:
        while pos < len(body) and body[pos] != 0:
            key, pos = cstring(body, pos)
            value, pos = cstring(body, pos)
            if len(params) < 64:
                params[key] = value[:256]
    except ValueError as e:
        raise ProtocolError("startup message parameters are not terminated") from e
    return params


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    table_oid: int
    attnum: int
    type_oid: int
    fmt: int


def row_description(body: bytes) -> tuple[Column, ...]:
    hit = _ROW_DESCRIPTIONS.get(body)
    if hit is not None:
        return hit
    cols = _row_description(body)
    if len(_ROW_DESCRIPTIONS) >= 4096:
        _ROW_DESCRIPTIONS.clear()
    _ROW_DESCRIPTIONS[body] = cols
    return cols


_ROW_DESCRIPTIONS: dict[bytes, tuple[Column, ...]] = {}  # the same query describes its rows the same way


def _row_description(body: bytes) -> tuple[Column, ...]:
    (count,) = _h.unpack_from(body, 0)
    pos = 2
    cols = []
    for _ in range(max(count, 0)):
        name, pos = cstring(body, pos)
        table_oid, attnum, type_oid, _len, _mod, fmt = _COL.unpack_from(body, pos)
        pos += _COL.size
        cols.append(Column(name, table_oid, attnum, type_oid, fmt))
    return tuple(cols)


_COL = Struct("!IhIhih")


def data_row_fields(body: bytes, wanted: tuple[int, ...]) -> list[bytes | None]:
    """The raw values of the columns at `wanted` indexes (sorted ascending); None for SQL NULL."""
    (count,) = _h.unpack_from(body, 0)
    pos = 2
    out: list[bytes | None] = []
    wi = 0
    last = wanted[-1]
    unpack = _i.unpack_from
    for i in range(min(count, last + 1)):
        (length,) = unpack(body, pos)
        pos += 4
        if i == wanted[wi]:
            out.append(None if length < 0 else body[pos:pos + length])
            wi += 1
            if wi == len(wanted):
                break
        if length > 0:
            pos += length
    return out


def error_sqlstate(body: bytes) -> str | None:
    """The SQLSTATE of an ErrorResponse; the message, detail and hint fields (they can quote data) are ignored."""
    pos = 0
    n = len(body)
    while pos < n and body[pos] != 0:
        code = body[pos]
        end = body.find(b"\0", pos + 1)
        if end < 0:
            return None
        if code == 0x43:  # 'C'
            return body[pos + 1:end].decode("ascii", "replace")[:16]
        pos = end + 1
    return None


def error_severity(body: bytes) -> str | None:
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = body[pos]
        end = body.find(b"\0", pos + 1)
        if end < 0:
            return None
        if code == 0x56:  # 'V': severity, never localised
            return body[pos + 1:end].decode("ascii", "replace")
        pos = end + 1
    return None


def command_rows(body: bytes) -> int | None:
    """Rows from a CommandComplete tag: `SELECT 5`, `INSERT 0 5`, `COPY 5`, `FETCH 5`; None for `BEGIN`."""
    tag = body.rstrip(b"\0")
    sp = tag.rfind(b" ")
    if sp < 0:
        return None
    tail = tag[sp + 1:]
    return int(tail) if tail.isdigit() else None


def parse_message(body: bytes) -> tuple[bytes, str]:
    """(statement name, query text) of a Parse message; parameter types are not needed.

    Statement and portal names stay bytes: they are only ever dictionary keys.
    """
    pos = body.index(0)
    end = body.find(b"\0", pos + 1)
    query = body[pos + 1:end if end >= 0 else len(body)]
    return body[:pos], query.decode("utf-8", "replace")


def bind_message(body: bytes, truncated: bool, formats: bool = True) -> tuple[bytes, bytes, tuple[int, ...] | None]:
    """(portal, statement, result format codes) of a Bind; the parameter values are passed over, never kept.

    The result formats are None when the message was too long to keep whole, or not asked for.
    """
    end = body.index(0)
    portal = body[:end]
    pos = body.index(0, end + 1)
    stmt = body[end + 1:pos]
    pos += 1
    if truncated or not formats:
        return portal, stmt, None
    (nfmt,) = _h.unpack_from(body, pos)
    pos += 2 + 2 * nfmt
    (nparams,) = _h.unpack_from(body, pos)
    pos += 2
    for _ in range(nparams):
        (length,) = _i.unpack_from(body, pos)
        pos += 4 + max(length, 0)
    (nres,) = _h.unpack_from(body, pos)
    return portal, stmt, _shorts(max(nres, 0)).unpack_from(body, pos + 2)


@functools.lru_cache(maxsize=64)
def _shorts(count: int) -> Struct:
    return Struct(f"!{count}h")


def execute_message(body: bytes) -> bytes:
    """The portal an Execute runs (its row limit needs no tracking: PortalSuspended says when it was hit)."""
    return body[:body.index(0)]


def target_message(body: bytes) -> tuple[int, bytes]:
    """(kind 'S' or 'P', name) of a Describe or Close."""
    return body[0], body[1:body.index(0, 1)]


def cancel_key(packet: bytes) -> tuple[int, int]:
    """(pid, secret) of a CancelRequest packet (length, code, pid, secret)."""
    return _II.unpack_from(packet, 8)


def backend_key(body: bytes) -> tuple[int, int]:
    return _II.unpack_from(body, 0)


def auth_code(body: bytes) -> int:
    return _I.unpack_from(body, 0)[0]


def error_response(sqlstate: str, message: str, severity: str = "FATAL") -> bytes:
    """An ErrorResponse the proxy itself sends (for example when the upstream cannot be reached)."""
    fields = b"".join(
        code + text.encode() + b"\0"
        for code, text in ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message))
    ) + b"\0"
    return b"E" + _I.pack(len(fields) + 4) + fields


AUTH_METHODS = {0: "trust", 2: "kerberos", 3: "password", 5: "md5", 7: "gss", 9: "sspi", 10: "sasl"}
