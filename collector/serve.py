"""Running the collector: uvicorn on a socket we bind ourselves, so that port 0 works and the address is known."""

from __future__ import annotations

import gc
import logging
import socket
import ssl
from pathlib import Path

import uvicorn

from agent.errors import ConfigError
from collector.app import create_app
from collector.config import CollectorConfig
from collector.db import make_engine
from collector.migrate import require_current

log = logging.getLogger("custos.collector")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ConfigError(f"server -> listen: cannot listen on {host}:{port}: {e.strerror or e}; "
                          "choose a free address with CUSTOS_LISTEN or [server] listen") from e
    sock.set_inheritable(True)
    return sock


def check_tls(cert: str, key: str) -> None:
    """Load the certificate and key now, so that a wrong pair is a one-line error rather than a traceback."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ConfigError(f"server -> tls_cert, tls_key: cannot use {cert} with {key}: {e}; give a PEM "
                          "certificate and its unencrypted PEM private key (see docs/tls.md)") from e


def serve(config: CollectorConfig, *, port_file: Path | None = None, access_log: bool = False) -> None:
    """Serve until SIGTERM/SIGINT. The database must be at the newest schema (`custos db upgrade`)."""
    if config.server.tls_cert and config.server.tls_key:
        check_tls(config.server.tls_cert, config.server.tls_key)
    engine = make_engine(config.database.url)
    require_current(engine)
    app = create_app(config, engine)
    sock = bind(config.server.host, config.server.port)
    host, port = sock.getsockname()[:2]
    tls = config.server.tls_cert is not None
    uv_config = uvicorn.Config(
        app,
        ssl_certfile=config.server.tls_cert,
        ssl_keyfile=config.server.tls_key,
        access_log=access_log,
        log_level="info",
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    server = uvicorn.Server(uv_config)
    scheme = "https" if tls else "http"
    address = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(port_file)
    print(f"custos collector listening on {address}", flush=True)
    # What is loaded by now (the app, its libraries, the rules) lives as long as the process: keep it out of the
    # collector's full passes, which a stream of decoded batches otherwise triggers over and over.
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[sock])
    finally:
        engine.dispose()
