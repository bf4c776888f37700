"""TLS for the proxy: ending clients' TLS at the proxy, and opening TLS towards the upstream.

PostgreSQL negotiates TLS inside its own protocol: the client sends an SSLRequest, the server answers one byte,
'S' (then the TLS handshake follows on the same socket) or 'N'. The proxy plays the server towards clients when
it has a certificate, and the client towards the upstream when `tls_upstream` asks for it. Once the handshakes
are done the forwarding path is the same `asyncio.Protocol` pair as in plain text.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from dataclasses import dataclass

from agent.errors import ConfigError
from agent.proxy import pgwire as w
from agent.proxy.config import Listener, ProxyConfig

SSL_REQUEST_PACKET = struct.pack("!II", 8, w.SSL_REQUEST)


@dataclass(frozen=True)
class ListenerTls:
    """What one listener does about TLS: `client` terminates clients' TLS (None: answer 'N'), `upstream_mode`
    is prefer/require/disable and `upstream` the context used when the upstream says 'S'."""

    client: ssl.SSLContext | None
    upstream_mode: str
    upstream: ssl.SSLContext | None


def listener_tls(config: ProxyConfig, lst: Listener, where: str) -> ListenerTls:
    cert, key = (lst.tls_cert, lst.tls_key) if lst.tls_cert else (config.tls_cert, config.tls_key)
    mode = lst.tls_upstream or config.tls_upstream or ("prefer" if cert else "disable")
    ca = lst.tls_upstream_ca or config.tls_upstream_ca
    client = None
    if cert:
        client = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        client.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            client.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{where} -> tls_cert, tls_key: cannot load them ({e}); give a readable PEM "
                              "certificate and its private key") from e
    upstream = None
    if mode != "disable":
        if ca:
            try:
                upstream = ssl.create_default_context(cafile=ca)  # verifies the chain and the host name
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"{where} -> tls_upstream_ca: cannot load it ({e}); give a readable PEM "
                                  "CA file") from e
        else:
            # Like libpq's sslmode=require: encrypted, but the server is not authenticated.
            upstream = ssl.create_default_context()
            upstream.check_hostname = False
            upstream.verify_mode = ssl.CERT_NONE
        upstream.minimum_version = ssl.TLSVersion.TLSv1_2
    return ListenerTls(client, mode, upstream)


class UpstreamRefusedTls(OSError):
    """The upstream answered the SSLRequest with something other than 'S' where TLS is required."""


class _SslAnswer(asyncio.Protocol):
    """Reads the upstream's one-byte answer to an SSLRequest."""

    def __init__(self, answer: asyncio.Future[bytes]) -> None:
        self.answer = answer

    def data_received(self, data: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectionResetError("the upstream closed during TLS negotiation"))


async def open_upstream(protocol: asyncio.Protocol, host: str, port: int, tls: ListenerTls,
                        timeout: float) -> asyncio.Transport:
    """Connect to the upstream, with TLS as `tls` says, and hand the (possibly TLS) transport to `protocol`
    through its `connection_made`."""
    loop = asyncio.get_running_loop()
    if tls.upstream_mode == "disable" or tls.upstream is None:
        transport, _ = await asyncio.wait_for(loop.create_connection(lambda: protocol, host, port), timeout)
        return transport
    answer: asyncio.Future[bytes] = loop.create_future()
    raw, _ = await asyncio.wait_for(loop.create_connection(lambda: _SslAnswer(answer), host, port), timeout)
    try:
        raw.write(SSL_REQUEST_PACKET)
        reply = await asyncio.wait_for(answer, timeout)
        # More than the one byte would be plain text injected before the handshake (CVE-2021-23222): refuse.
        if reply == b"S":
            secured = await loop.start_tls(raw, protocol, tls.upstream, server_hostname=host,
                                           ssl_handshake_timeout=timeout)
            if secured is None:
                raise ConnectionResetError("the upstream closed during the TLS handshake")
            protocol.connection_made(secured)
            return secured  # type: ignore[return-value]
        if reply == b"N" and tls.upstream_mode == "prefer":
            raw.set_protocol(protocol)
            protocol.connection_made(raw)
            return raw  # type: ignore[return-value]
        raise UpstreamRefusedTls("the upstream does not offer TLS, and tls_upstream = \"require\"")
    except BaseException:
        raw.close()
        raise
