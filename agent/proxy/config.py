"""The proxy's configuration: a `[sources.NAME]` section of agent.toml with `type = "proxy"`.

    [sources.pg-main]
    type = "proxy"
    listeners = [{ listen = "127.0.0.1:6543", upstream = "127.0.0.1:5432" },
                 { listen = "127.0.0.1:6544", upstream = "10.0.0.5:5432", name = "pg-ledger" }]
    customer_keys = ["public.customers.customer_id"]
    customer_key_secret_file = "/etc/custos/customer-key"   # or CUSTOS_CUSTOMER_KEY_SECRET
    sensitive = { "public.customers.national_id" = "id_number", "public.cards.pan" = "bank_card" }
    exclude_users = ["replicator"]
    fail_closed = false
    tls_cert = "/etc/custos/proxy.pem"         # with tls_key: SSLRequest is answered 'S' and TLS ends here
    tls_key = "/etc/custos/proxy.key"
    tls_upstream = "prefer"                     # "prefer" | "require" | "disable"
    tls_upstream_ca = "/etc/custos/db-ca.pem"   # verify the server's certificate and name
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import msgspec

from agent.errors import ConfigError
from agent.units import parse_duration, parse_size

Size = int | str
Duration = int | float | str


def host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: must be host:port such as 127.0.0.1:6543, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


TLS_UPSTREAM_MODES = ("prefer", "require", "disable")


class Listener(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str
    upstream: str
    name: str = ""
    # Per-listener TLS settings; empty means the section's own.
    tls_cert: str = ""
    tls_key: str = ""
    tls_upstream: str = ""
    tls_upstream_ca: str = ""


class ProxyConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: str = "proxy"
    listeners: list[Listener] = msgspec.field(default_factory=list)
    lane: bool = True  # common round trips audited in C (agent/proxy/_framer.c); false: all in Python
    fail_closed: bool = False  # close a session whose audit failed, instead of forwarding it unaudited
    customer_keys: list[str] = msgspec.field(default_factory=list)
    customer_key_secret: str = ""
    customer_key_secret_file: str | None = None
    customer_keys_cap: int = 1000
    sensitive: dict[str, str] = msgspec.field(default_factory=dict)
    exclude_users: list[str] = msgspec.field(default_factory=list)
    exclude_applications: list[str] = msgspec.field(default_factory=list)
    exclude_objects: list[str] = msgspec.field(default_factory=list)
    end_user_keys: list[str] = msgspec.field(default_factory=lambda: ["custos_user"])
    end_user_from_application_name: str = ""  # a regex with a group named `user`
    max_connections: int = 2000
    startup_timeout: Duration = "15s"
    connect_timeout: Duration = "10s"
    max_audit_message: Size = "1MiB"
    write_buffer_high: Size = "256KiB"
    flush_interval: Duration = "100ms"
    max_pending: int = 200_000
    tls_cert: str = ""  # PEM certificate (chain) shown to clients; with tls_key, SSLRequest is answered 'S'
    tls_key: str = ""
    tls_upstream: str = ""  # "prefer" | "require" | "disable"; empty: "prefer" with tls_cert, else "disable"
    tls_upstream_ca: str = ""  # CA file that verifies the upstream's certificate and host name

    def __post_init__(self) -> None:
        for i, lst in enumerate(self.listeners):
            host_port(lst.listen, f"listeners[{i}] -> listen")
            host_port(lst.upstream, f"listeners[{i}] -> upstream")
            if lst.tls_upstream and lst.tls_upstream not in TLS_UPSTREAM_MODES:
                raise ValueError(f"listeners[{i}] -> tls_upstream: one of {', '.join(TLS_UPSTREAM_MODES)}, "
                                 f"not {lst.tls_upstream!r}")
            if bool(lst.tls_cert) != bool(lst.tls_key):
                raise ValueError(f"listeners[{i}] -> tls_cert, tls_key: give both or neither")
        if self.tls_upstream and self.tls_upstream not in TLS_UPSTREAM_MODES:
            raise ValueError(f"tls_upstream: one of {', '.join(TLS_UPSTREAM_MODES)}, not {self.tls_upstream!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert, tls_key: give both (the certificate and its private key) or neither")
        for name in ("startup_timeout", "connect_timeout", "flush_interval"):
            try:
                parse_duration(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        for name in ("max_audit_message", "write_buffer_high"):
            try:
                parse_size(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        if self.end_user_from_application_name:
            try:
                if "user" not in re.compile(self.end_user_from_application_name).groupindex:
                    raise ValueError("end_user_from_application_name: needs a group named user, (?P<user>…)")
            except re.error as e:
                raise ValueError(f"end_user_from_application_name: not a valid regex: {e}") from None
        if self.max_connections <= 0 or self.customer_keys_cap < 0 or self.max_pending <= 0:
            raise ValueError("max_connections, customer_keys_cap and max_pending: must be positive")

    def secret(self, env: dict[str, str] | None = None) -> bytes:
        """The customer-key HMAC key: environment, then the file, then the section; never logged."""
        environ = os.environ if env is None else env
        if environ.get("CUSTOS_CUSTOMER_KEY_SECRET"):
            return environ["CUSTOS_CUSTOMER_KEY_SECRET"].encode()
        if self.customer_key_secret_file:
            try:
                return Path(self.customer_key_secret_file).read_bytes().strip()
            except OSError as e:
                raise ConfigError(f"customer_key_secret_file: cannot read it: {e.strerror}") from e
        if self.customer_key_secret:
            return self.customer_key_secret.encode()
        if self.customer_keys:
            raise ConfigError(
                "customer_keys are configured but no key to hash them with: set customer_key_secret_file "
                "or CUSTOS_CUSTOMER_KEY_SECRET"
            )
        return b""


def proxy_config(name: str, section: dict[str, Any]) -> ProxyConfig:
    try:
        return msgspec.convert(section, ProxyConfig, strict=False)
    except msgspec.ValidationError as e:
        from agent.config import _readable

        raise ConfigError(f"sources -> {name} -> {_readable(ProxyConfig, str(e), {})}") from e
