"""The collector's configuration: `collector.toml`, validated once at start, with environment overrides.

    CUSTOS_DATABASE_URL   database -> url      (default sqlite:///custos.db, in the working directory)
    CUSTOS_LISTEN         server -> listen     (default 127.0.0.1:8600)
    CUSTOS_CONFIG         the file itself, when --config is not given
    CUSTOS_CUSTOMER_KEY_SECRET  the customer-key HMAC key (as the proxy reads it), before customers -> key_file
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

from agent.config import Size, check_file, check_size, load_toml
from collector.integrity_config import IntegritySection
from agent.customer_keys import CustomerKeyHasher
from agent.errors import ConfigError
from collector.ui_config import NotifySection, WebSection, WeeklySection


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ServerSection(_Section):
    listen: str = "127.0.0.1:8600"
    tls_cert: str | None = None  # PEM certificate (chain) to serve https with; with tls_key
    tls_key: str | None = None  # PEM private key of tls_cert, unencrypted
    max_body_bytes: Size = "16MiB"  # a request body as sent (compressed)
    max_batch_bytes: Size = "64MiB"  # the same body once decompressed
    max_batch_events: int = 10_000

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f'listen: must be host:port such as "127.0.0.1:8600", not {self.listen!r}')
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise ValueError(f"{missing}: tls_cert and tls_key go together; give both or neither")
        check_file(self, "tls_cert")
        check_file(self, "tls_key")
        check_size(self, "max_body_bytes")
        check_size(self, "max_batch_bytes")
        if not 1 <= self.max_batch_events <= 1_000_000:
            raise ValueError(f"max_batch_events: must be between 1 and 1000000, not {self.max_batch_events}")

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class DatabaseSection(_Section):
    url: str = "sqlite:///custos.db"

    def __post_init__(self) -> None:
        scheme = self.url.partition(":")[0]
        if not self.url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
            raise ValueError(f'url: must be a URL such as "sqlite:///custos.db" or '
                             f'"postgresql://custos@db.internal/custos", not a {scheme!r} URL')


class RulesSection(_Section):
    dir: str | None = None  # the site's own rule files, beside the built-in set
    enabled: bool = True  # evaluate rules on ingested events
    worker: Literal["thread", "process"] = "thread"  # a process of its own does not share ingest's interpreter


class CustomersSection(_Section):
    """The customer-key HMAC key business events and look-ups are hashed with: the proxy's, so both sides meet."""

    key_file: str | None = None  # holds the key, as the proxy's customer_key_secret_file (bytes, outer space cut)

    def __post_init__(self) -> None:
        check_file(self, "key_file")

    def hasher(self, env: Mapping[str, str] | None = None) -> CustomerKeyHasher | None:
        """The hasher, from CUSTOS_CUSTOMER_KEY_SECRET (as the proxy reads it) or key_file; None when neither is
        set (clear identifiers are then refused, hashed ones still accepted)."""
        environ = os.environ if env is None else env
        secret: bytes | None = None
        if environ.get(SECRET_ENV):
            secret = environ[SECRET_ENV].encode()
        elif self.key_file:
            try:
                secret = Path(self.key_file).read_bytes().strip()
            except OSError as e:
                raise ConfigError(f"customers -> key_file: cannot read {self.key_file} ({e.strerror})") from e
        if secret is None:
            return None
        try:
            return CustomerKeyHasher(secret)
        except ConfigError as e:
            raise ConfigError(f"customers -> key_file ({SECRET_ENV}): {e}") from e


class CollectorConfig(_Section):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    database: DatabaseSection = msgspec.field(default_factory=DatabaseSection)
    rules: RulesSection = msgspec.field(default_factory=RulesSection)
    web: WebSection = msgspec.field(default_factory=WebSection)
    weekly: WeeklySection = msgspec.field(default_factory=WeeklySection)
    notify: NotifySection = msgspec.field(default_factory=NotifySection)
    integrity: IntegritySection = msgspec.field(default_factory=IntegritySection)
    customers: CustomersSection = msgspec.field(default_factory=CustomersSection)


SECRET_ENV = "CUSTOS_CUSTOMER_KEY_SECRET"
ENV_OVERRIDES = {
    "CUSTOS_DATABASE_URL": ("database", "url"),
    "CUSTOS_LISTEN": ("server", "listen"),
}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> CollectorConfig:
    """Read collector.toml (or CUSTOS_CONFIG, or defaults), apply environment overrides, validate."""
    env = os.environ if env is None else env
    if path is None and env.get("CUSTOS_CONFIG"):
        path = env["CUSTOS_CONFIG"]
    config: CollectorConfig = load_toml(CollectorConfig, path, ENV_OVERRIDES, env, "collector.toml")
    return config
