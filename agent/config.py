"""The agent's configuration: `agent.toml`, validated once at start, with environment overrides.

Environment variables win over the file:
    CUSTOS_COLLECTOR_URL   collector -> url
    CUSTOS_AGENT_TOKEN     collector -> token
    CUSTOS_SPOOL_DIR       spool -> dir
    CUSTOS_AGENT_ID        agent_id
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from agent.errors import ConfigError
from agent.units import parse_duration, parse_size

Size = int | str
Duration = int | float | str


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class CollectorSection(_Section):
    url: str = "http://127.0.0.1:8600"
    token: str = ""
    token_file: str | None = None
    ca_file: str | None = None
    timeout: Duration = "30s"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url: must start with http:// or https://, not {self.url!r}")
        parse_duration(self.timeout)


class SpoolSection(_Section):
    dir: str = "./custos-spool"
    max_bytes: Size = "1GiB"
    max_events: int = 5_000_000
    overflow: Literal["drop_oldest", "drop_newest", "block"] = "drop_oldest"
    synchronous: Literal["FULL", "NORMAL"] = "FULL"

    def __post_init__(self) -> None:
        try:
            parse_size(self.max_bytes)
        except ValueError as e:
            raise ValueError(f"max_bytes: {e}") from None
        if self.max_events <= 0:
            raise ValueError("max_events: must be a positive number of events")


class ShipSection(_Section):
    batch_max_events: int = 1000
    batch_max_bytes: Size = "4MiB"
    batch_max_age: Duration = "1s"
    backoff_base: Duration = "500ms"
    backoff_max: Duration = "5m"

    def __post_init__(self) -> None:
        if not 1 <= self.batch_max_events <= 10_000:
            raise ValueError("batch_max_events: must be between 1 and 10000")
        for name in ("batch_max_age", "backoff_base", "backoff_max"):
            try:
                parse_duration(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        parse_size(self.batch_max_bytes)


class HeartbeatSection(_Section):
    interval: Duration = "60s"


class LimitsSection(_Section):
    """Resource ceilings: above them the agent sheds optional work (content classification), never events."""

    cpu_percent: float = 50.0  # of one core, averaged over `window`; 0 turns the ceiling off
    memory: Size = "200MiB"  # resident set; 0 turns the ceiling off
    window: Duration = "10s"

    def __post_init__(self) -> None:
        if self.cpu_percent < 0:
            raise ValueError("cpu_percent: must be 0 (no ceiling) or a positive percentage of one core")
        if self.memory not in (0, "0"):
            try:
                parse_size(self.memory)
            except ValueError as e:
                raise ValueError(f"memory: {e}") from None
        parse_duration(self.window)


class AgentConfig(_Section):
    agent_id: str = ""
    collector: CollectorSection = msgspec.field(default_factory=CollectorSection)
    spool: SpoolSection = msgspec.field(default_factory=SpoolSection)
    ship: ShipSection = msgspec.field(default_factory=ShipSection)
    heartbeat: HeartbeatSection = msgspec.field(default_factory=HeartbeatSection)
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    # Sections of sources (file watcher, proxy, log tailers) are read by those sources from here.
    sources: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def spool_path(self) -> Path:
        return Path(self.spool.dir) / "spool.sqlite3"

    def token(self) -> str:
        if self.collector.token:
            return self.collector.token
        if self.collector.token_file:
            try:
                return Path(self.collector.token_file).read_text().strip()
            except OSError as e:
                raise ConfigError(f"collector -> token_file: cannot read {self.collector.token_file}: {e}") from e
        raise ConfigError(
            "collector -> token: missing; enroll this agent with `custos agents enroll NAME` on the collector "
            "and put the printed credential in agent.toml or CUSTOS_AGENT_TOKEN"
        )


ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "CUSTOS_COLLECTOR_URL": ("collector", "url"),
    "CUSTOS_AGENT_TOKEN": ("collector", "token"),
    "CUSTOS_SPOOL_DIR": ("spool", "dir"),
    "CUSTOS_AGENT_ID": ("agent_id",),
}


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read `agent.toml` (or defaults when `path` is None), apply environment overrides, validate."""
    return load_toml(AgentConfig, path, ENV_OVERRIDES, os.environ if env is None else env, "agent.toml")


def load_toml(
    cls: type[Any], path: str | Path | None, overrides: Mapping[str, tuple[str, ...]], env: Mapping[str, str],
    default_name: str,
) -> Any:
    """Shared by the agent's and the collector's configuration: TOML + environment → a validated struct."""
    name = str(path) if path else default_name
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError as e:
            raise ConfigError(f"{name}: no such file") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{name}: not valid TOML: {e}") from e
    for var, keys in overrides.items():
        if var in env and env[var] != "":
            node = data
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = env[var]
    try:
        config = msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{name}: {_readable(str(e))}") from e
    if getattr(config, "agent_id", None) == "":
        config.agent_id = socket.gethostname()
    return config


def _readable(message: str) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.spool.max_events`" as "spool -> max_events: expected …"."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        return message
    path = where.rstrip("`").removeprefix("$").lstrip(".").replace(".", " -> ")
    key, colon, rest = text.partition(": ")
    if colon and key.isidentifier():  # raised by a __post_init__, which names its own key
        path, text = f"{path} -> {key}" if path else key, rest
    return f"{path}: {text[0].lower()}{text[1:]}" if path else text
