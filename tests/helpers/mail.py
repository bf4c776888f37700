"""Real receivers for notification tests: an SMTP server (aiosmtpd) that offers STARTTLS with a certificate made
here, and an HTTP webhook receiver whose port is reserved before it starts listening (so it can be "down")."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import http.server
import ipaddress
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "smtp.pem", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool


@dataclass
class MailSink:
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg,  # type: ignore[arg-type]
                                          session.ssl is not None))
        return "250 OK"

    def subjects(self) -> list[str]:
        with self.lock:
            return [str(m.message["Subject"]) for m in self.messages]


class SmtpServer:
    """aiosmtpd on a loopback port; with `cert`, STARTTLS is offered and required before mail."""

    def __init__(self, folder: Path, *, tls: bool = True) -> None:
        self.sink = MailSink()
        self.port = free_port()
        self.cert: Path | None = None
        kwargs: dict[str, Any] = {}
        if tls:
            self.cert, key = self_signed(folder)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.cert, key)
            kwargs = {"tls_context": ctx, "require_starttls": True}
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


class WebhookReceiver:
    """An HTTP server whose port is bound at once but that accepts connections only after `start()`: until then
    every delivery is refused, as by a receiver that is down. `refuse_first` answers that many requests with 503
    once it is up. `requests` keeps every request's headers and exact body bytes, refused ones included."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.refuse_first = refuse_first
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.server: http.server.HTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    refused = len(receiver.requests) <= receiver.refuse_first
                    if not refused:
                        receiver.bodies.append(json.loads(body))
                self.send_response(503 if refused else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = self.sock
        server.server_activate()
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.bodies)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            if self.thread is not None:
                self.thread.join(5)
        else:
            self.sock.close()
