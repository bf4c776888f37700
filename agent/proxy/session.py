"""One proxied connection: a client-side and an upstream-side `asyncio.Protocol` that pass bytes on as they come.

Each `data_received` writes the bytes to the other side first and only then feeds them to the audit, so the
audit can delay nothing but itself. Backpressure: when one side's write buffer passes its high-water mark,
reading from the other side pauses until it drains, so memory per connection stays bounded.

Before the upstream exists the client side speaks the startup phase itself: it answers GSSENCRequest with
'N' and SSLRequest with 'N', or with 'S' and a TLS handshake when the listener has a certificate (the same
protocol object then reads through the TLS transport), routes a CancelRequest to the backend that issued its key, and connects upstream only
when a StartupMessage has arrived (a client that never finishes startup never costs an upstream connection).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from typing import TYPE_CHECKING

from agent.ids import uuid7
from agent.proxy import pgwire as w
from agent.proxy.audit import AuditSession, SessionInfo
from agent.proxy.tls import UpstreamRefusedTls, open_upstream

if TYPE_CHECKING:
    from agent.proxy.server import ListenerState, ProxyServer

log = logging.getLogger("custos.proxy")
_CLIENT_NEEDED = frozenset({w.Q, w.P, w.B, w.D, w.E, w.S, w.C, w.F, w.H, w.X})


def _where(exc: BaseException) -> str:
    """file:line of an exception's origin, for a log line that never carries the exception's message."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


class ClientSide(w.Relay, asyncio.Protocol):  # type: ignore[misc,valid-type]
    """The client's connection. Its `data_received` is `w.Relay`'s: forward upstream, then audit; before the
    upstream exists, `early_data`."""

    def __init__(self, server: ProxyServer, listener: ListenerState) -> None:
        self.server = server
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.buf = b""
        self.pending = b""
        self.timer: asyncio.TimerHandle | None = None
        self.audit: AuditSession | None = None
        self.cframer: w.Framer | None = None
        self.sframer: w.Framer | None = None
        self.info: SessionInfo | None = None
        self.full_audit = False
        self.started = False
        self.closed = False
        self.tls = False
        self.key: tuple[int, int] | None = None
        self.upstream_side: UpstreamSide | None = None

    # -- connection ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        if server.open_connections >= server.config.max_connections:
            server.count("errors", "refused_max_connections")
            transport.close()
            self.closed = True
            return
        server.open_connections += 1
        transport.set_write_buffer_limits(server.buffer_high, server.buffer_high // 4)  # type: ignore[attr-defined]
        _bound_socket_buffer(transport, socket.SO_RCVBUF, server.buffer_high)
        self.timer = asyncio.get_running_loop().call_later(server.startup_timeout, self._startup_timeout)

    def _startup_timeout(self) -> None:
        if self.upstream is None and not self.closed:
            self.server.count("errors", "startup_timeout")
            self.close()

    def early_data(self, data: bytes) -> None:
        """Bytes from the client before the upstream exists: the startup phase."""
        if self.info is not None:  # startup sent, upstream still connecting
            self.pending += data
            return
        self._startup(data)

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tls:
            self.server.tls_transports.discard(self.transport)  # type: ignore[arg-type]
        self.close()

    def close(self) -> None:
        first = not self.closed
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()
        if first:
            self.server.open_connections -= 1
            self._ended()

    def _ended(self) -> None:
        if self.key is not None:
            self.server.cancel_keys.pop(self.key, None)
        audit = self.audit
        if audit is not None and audit.lane is not None:
            lane = audit.lane
            try:
                lane.give_up()  # type: ignore[attr-defined]  # what it held goes to the Python audit's close
            except Exception as e:  # noqa: BLE001
                self.server.audit_fault(e, _where(e))
            self.server.lane_done(lane.fast, lane.gave_up)  # type: ignore[attr-defined]
            audit.lane = None
        if audit is not None and self.full_audit and self.info is not None:
            try:
                audit.close()
            except Exception as e:  # noqa: BLE001
                self.server.audit_fault(e, _where(e))
            if audit.ready or audit.error_code:
                self.server.writer.session(self.info, "end", audit.error_code)
        self.audit = self.cframer = self.sframer = None
        self.relay_feed = None
        if self.upstream_side is not None:
            self.upstream_side.relay_feed = None

    # -- startup phase --------------------------------------------------------------------------------------

    def _startup(self, data: bytes) -> None:
        buf = self.buf + data
        while len(buf) >= 8:
            length, code = struct.unpack_from("!II", buf)
            if length < 8 or length > w.MAX_STARTUP:
                self.server.count("errors", "bad_startup")
                self.close()
                return
            if len(buf) < length:
                break
            packet, buf = buf[:length], buf[length:]
            if code in (w.SSL_REQUEST, w.GSSENC_REQUEST):
                if buf:  # bytes sent before our answer would be read as encrypted by a real server
                    self.server.count("errors", "bad_startup")
                    self.close()
                    return
                context = self.listener.tls.client
                if code == w.SSL_REQUEST and context is not None and not self.tls:
                    self.transport.write(b"S")  # type: ignore[union-attr]
                    self.transport.pause_reading()  # type: ignore[union-attr]  # the handshake reads next
                    self.buf = b""
                    asyncio.get_running_loop().create_task(self._start_tls(context))
                    return
                if code == w.SSL_REQUEST and self.tls:  # a second SSLRequest inside TLS: a real server refuses
                    self.server.count("errors", "bad_startup")
                    self.close()
                    return
                self.transport.write(b"N")  # type: ignore[union-attr]
                continue
            if code == w.CANCEL_REQUEST and length == 16:
                # Closed only once the server has closed its side: clients (asyncpg) take that close as
                # "the cancel has been delivered" before they send their next statement.
                self.server.cancel(w.cancel_key(packet), self.close)
                return
            if code >> 16 == 3:
                self._start_session(packet, buf)
                return
            self.server.count("errors", "bad_startup")
            self.close()
            return
        self.buf = buf

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        """End the client's TLS here; this protocol then reads the decrypted stream from the TLS transport."""
        raw = self.transport
        if raw is None:
            return
        try:
            secured = await asyncio.get_running_loop().start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=self.server.startup_timeout)
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            if not self.closed:
                self.server.count("errors", "client_tls_failed")
                log.info("listener %s: TLS handshake with a client failed (%s)", self.listener.name,
                         type(e).__name__)
                raw.close()
                self.close()
            return
        if secured is None or self.closed:
            if secured is not None:
                secured.close()
            return
        self.tls = True
        self.transport = secured  # type: ignore[assignment]
        self.server.tls_transports.add(secured)
        secured.set_write_buffer_limits(self.server.buffer_high, self.server.buffer_high // 4)  # type: ignore[attr-defined]

    def _start_session(self, packet: bytes, rest: bytes) -> None:
        if self.transport is None:
            return
        server = self.server
        try:
            params = w.startup_params(packet[4:])
        except w.ProtocolError:
            server.count("errors", "bad_startup")
            self.close()
            return
        peer = self.transport.get_extra_info("peername") or (None, None)
        lst = self.listener
        user = params.get("user") or None
        app = params.get("application_name") or None
        info = SessionInfo(
            session_id=uuid7(), listener=lst.name, client_addr=str(peer[0]) if peer[0] else None,
            client_port=peer[1] if isinstance(peer[1], int) else None, server_addr=lst.upstream_host,
            server_port=lst.upstream_port, database=params.get("database") or user, user=user,
            application_name=app, end_user=server.end_user_from_app(app),
        )
        self.info = info
        self.pending = packet + rest
        excluded = server.exclusion(user, app)
        if excluded is not None:
            server.count("excluded", excluded)
        self.full_audit = excluded is None
        # Even an excluded session is read until it is ready: its BackendKeyData routes cancels.
        lane = self.full_audit and server.lane
        audit = AuditSession(info, server.analyser, server.keys,
                             server.writer.query if self.full_audit else _drop, server.end_user_keys,
                             server.writer.template if lane else None)
        self.audit = audit
        if lane:
            audit.lane = w.Lane(audit.client_message, audit.server_message, audit.rows_seen, audit.adopt_unnamed,
                                audit.fast_query, server.writer.outbox, audit.statements, audit.portals, audit.slots)
            self.cframer = w.Framer(audit.client_message, _CLIENT_NEEDED.__contains__, _ignore, server.cap,
                                    audit.lane, 0)
            self.sframer = w.Framer(audit.server_message, audit.wants, audit.skipped, server.cap, audit.lane, 1)
        else:
            if self.full_audit:
                self.cframer = w.Framer(audit.client_message, _CLIENT_NEEDED.__contains__, _ignore, server.cap)
            self.sframer = w.Framer(audit.server_message, audit.wants, audit.skipped, server.cap)
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        lst = self.listener
        try:
            await open_upstream(UpstreamSide(self), lst.upstream_host, lst.upstream_port, lst.tls,
                                self.server.connect_timeout)
        except UpstreamRefusedTls:
            self.server.count("errors", "upstream_tls_refused")
            log.warning("listener %s: upstream %s:%d does not offer TLS, which tls_upstream requires", lst.name,
                        lst.upstream_host, lst.upstream_port)
            if self.transport is not None and not self.closed:
                self.transport.write(w.error_response("08006", "custos proxy: the database server does not "
                                                               "offer TLS, which the proxy requires; ask its "
                                                               "administrator"))
            self.close()
        except ssl.SSLError as e:
            self.server.count("errors", "upstream_tls_failed")
            log.warning("listener %s: TLS with upstream %s:%d failed (%s: %s)", lst.name, lst.upstream_host,
                        lst.upstream_port, type(e).__name__, getattr(e, "reason", None))
            if self.transport is not None and not self.closed:
                self.transport.write(w.error_response("08006", "custos proxy: TLS with the database server "
                                                               "failed; check tls_upstream_ca"))
            self.close()
        except (OSError, asyncio.TimeoutError) as e:
            self.server.count("errors", "upstream_unreachable")
            log.warning("listener %s: upstream %s:%d unreachable (%s)", lst.name, lst.upstream_host,
                        lst.upstream_port, type(e).__name__)
            if self.transport is not None and not self.closed:
                self.transport.write(w.error_response("08006", "custos proxy: the database server cannot be "
                                                               "reached; try again later"))
            self.close()

    def upstream_ready(self, transport: asyncio.Transport) -> None:
        if self.closed:
            transport.close()
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.upstream = transport
        self.relay_write = transport.write
        self.relay_feed = self.cframer.feed if self.cframer is not None else None
        pending, self.pending = self.pending, b""
        transport.write(pending)
        if self.cframer is not None and len(pending) > 0:
            # The StartupMessage itself is not a typed message; feed only what followed it.
            rest = pending[struct.unpack_from("!I", pending)[0]:]
            if rest:
                try:
                    self.cframer.feed(rest)
                except Exception as e:  # noqa: BLE001
                    self.audit_fault(e)
        if self.transport is not None:
            self.transport.resume_reading()

    # -- audit ----------------------------------------------------------------------------------------------

    def server_data(self, data: bytes) -> None:
        """Feed bytes from the upstream (already forwarded) to the audit."""
        sframer = self.sframer
        if sframer is None:
            return
        audit = self.audit
        try:
            sframer.feed(data)
        except Exception as e:  # noqa: BLE001
            self.audit_fault(e)
            return
        if audit is not None and self.key is None and audit.backend_key is not None:
            self.key = audit.backend_key
            self.server.cancel_keys[self.key] = (self.listener.upstream_host, self.listener.upstream_port)
        if audit is not None and not self.started and audit.ready:
            self.started = True
            if self.full_audit and self.info is not None:
                self.server.writer.session(self.info, "start")
                if audit.lane is not None:
                    audit.lane.enabled = 1  # type: ignore[attr-defined]
            else:
                self.sframer = None  # excluded: nothing more to read once the key is known
        if self.started and self.key is not None and self.upstream_side is not None:
            self.upstream_side.relay_feed = self.sframer.feed if self.sframer is not None else None

    def audit_fault(self, exc: BaseException) -> None:
        """The audit of this session failed: count it, log where (never what), then go on or close."""
        self.server.audit_fault(exc, _where(exc))
        self.cframer = self.sframer = None
        self.relay_feed = None
        if self.upstream_side is not None:
            self.upstream_side.relay_feed = None
        if self.audit is not None:
            self.audit.lane = None
        if self.server.config.fail_closed:
            self.close()


class UpstreamSide(w.Relay, asyncio.Protocol):  # type: ignore[misc,valid-type]
    """The server's connection. Its `data_received` is `w.Relay`'s: forward to the client, then audit."""

    def __init__(self, client: ClientSide) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.ctransport = client.transport
        if client.transport is not None:
            self.relay_write = client.transport.write
        # What the server's bytes are fed to after forwarding: the session's startup checks until it is ready,
        # then the framer itself (one call less per chunk); None when nothing more is audited.
        self.relay_feed = client.server_data
        client.upstream_side = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if transport.get_extra_info("ssl_object") is not None:
            self.client.server.tls_transports.add(transport)  # type: ignore[arg-type]
        high = self.client.server.buffer_high
        transport.set_write_buffer_limits(high, high // 4)  # type: ignore[attr-defined]
        _bound_socket_buffer(transport, socket.SO_SNDBUF, high)
        self.client.upstream_ready(transport)  # type: ignore[arg-type]

    def early_data(self, data: bytes) -> None:  # pragma: no cover - the client's transport exists before this
        self.client.close()

    def audit_fault(self, exc: BaseException) -> None:
        self.client.audit_fault(exc)

    def pause_writing(self) -> None:
        if self.ctransport is not None:
            self.ctransport.pause_reading()

    def resume_writing(self) -> None:
        if self.ctransport is not None and not self.ctransport.is_closing():
            self.ctransport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.server.tls_transports.discard(self.transport)  # type: ignore[arg-type]
        self.client.close()


def _bound_socket_buffer(transport: asyncio.BaseTransport, option: int, size: int) -> None:
    """Cap the kernel buffer on the path through the proxy, so that a client writing faster than the server
    reads meets flow control about as soon as it would directly (the kernel would otherwise grow it to MBs)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError:
            pass


def _drop(_rec: object) -> None:
    pass


def _ignore(_t: int, _n: int) -> None:
    pass

