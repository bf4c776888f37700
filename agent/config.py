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
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from agent.errors import ConfigError
from agent.units import parse_duration, parse_size

# Sizes and durations are read as written ("1GiB", 1073741824; "30s", 30) and checked by `check_size` and
# `check_duration`, so that every wrong value gets the same message naming an example.
Size = Any  # bytes: an integer, or a string such as "512MiB"
Duration = Any  # seconds: a number, or a string such as "250ms", "30s", "5m"


def check_size(section: msgspec.Struct, key: str) -> int:
    """The size in `section.key`, or ValueError("key: what is wrong") for `load_toml` to place."""
    value = getattr(section, key)
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f'must be a positive size such as "1GiB", not {value!r}')
        return parse_size(value)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None


def check_duration(section: msgspec.Struct, key: str, *, positive: bool = False) -> float:
    """The duration in `section.key` in seconds, or ValueError("key: what is wrong")."""
    value = getattr(section, key)
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f'must be a duration such as "30s" or "5m", not {value!r}')
        seconds = parse_duration(value)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None
    if positive and seconds <= 0:
        raise ValueError(f'{key}: must be a duration above zero such as "30s", not {value!r}')
    return seconds


def check_file(section: msgspec.Struct, key: str) -> None:
    value = getattr(section, key)
    if value is not None and not os.path.isfile(value):
        raise ValueError(f"{key}: no such file: {value}")


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class CollectorSection(_Section):
    url: str = "http://127.0.0.1:8600"
    token: str = ""
    token_file: str | None = None
    ca_file: str | None = None  # PEM bundle of the CA that signed the collector's certificate (https only)
    timeout: Duration = "30s"

    def __post_init__(self) -> None:
        scheme, sep, rest = self.url.partition("://")
        if scheme not in ("http", "https") or not sep or not rest.strip("/"):
            raise ValueError(f'url: must be http:// or https:// and a host, such as "https://custos:8600", '
                             f"not {self.url!r}")
        check_file(self, "ca_file")
        check_duration(self, "timeout", positive=True)


class SpoolSection(_Section):
    dir: str = "./custos-spool"
    max_bytes: Size = "1GiB"
    max_events: int = 5_000_000
    overflow: Literal["drop_oldest", "drop_newest", "block"] = "drop_oldest"
    synchronous: Literal["FULL", "NORMAL"] = "FULL"

    def __post_init__(self) -> None:
        if not self.dir:
            raise ValueError("dir: must name a directory for the spool")
        check_size(self, "max_bytes")
        if self.max_events <= 0:
            raise ValueError(f"max_events: must be a positive number of events, not {self.max_events}")


class ShipSection(_Section):
    batch_max_events: int = 1000
    batch_max_bytes: Size = "4MiB"
    batch_max_age: Duration = "1s"
    backoff_base: Duration = "500ms"
    backoff_max: Duration = "5m"

    def __post_init__(self) -> None:
        if not 1 <= self.batch_max_events <= 10_000:
            raise ValueError(f"batch_max_events: must be between 1 and 10000, not {self.batch_max_events}")
        check_size(self, "batch_max_bytes")
        check_duration(self, "batch_max_age")
        base = check_duration(self, "backoff_base", positive=True)
        if check_duration(self, "backoff_max", positive=True) < base:
            raise ValueError("backoff_max: must not be shorter than backoff_base")


class HeartbeatSection(_Section):
    # 0 turns heartbeats off (for tests that count events exactly); the collector then reports the agent silent.
    interval: Duration = "60s"

    def __post_init__(self) -> None:
        check_duration(self, "interval")


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
    """Shared by the agent's and the collector's configuration: TOML + environment → a validated struct.

    Raises ConfigError with one line: the file, the key path (`spool -> max_bytes`), and what is wrong; a value
    that came from an environment variable is named by that variable."""
    name = str(path) if path else default_name
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError as e:
            raise ConfigError(f"{name}: no such file") from e
        except IsADirectoryError as e:
            raise ConfigError(f"{name}: is a directory, not a TOML file") from e
        except PermissionError as e:
            raise ConfigError(f"{name}: cannot be read (permission denied)") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{name}: not valid TOML: {e}") from e
    from_env: dict[tuple[str, ...], str] = {}
    for var, keys in overrides.items():
        if env.get(var, "") == "":
            continue
        node: Any = data
        for k in keys[:-1]:
            node = node.setdefault(k, {}) if isinstance(node, dict) else None
        if isinstance(node, dict):  # else the file's section is not a table, which convert reports
            node[keys[-1]] = env[var]
            from_env[keys] = var
    try:
        config = msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{name}: {_readable(cls, str(e), from_env)}") from e
    if getattr(config, "agent_id", None) == "":
        config.agent_id = socket.gethostname()
    return config


def _readable(cls: type[Any], message: str, from_env: Mapping[tuple[str, ...], str]) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.spool.max_events`" as "spool -> max_events: expected …"."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        text, where = message, "$"
    path = [p for p in where.rstrip("`").removeprefix("$").replace("[", ".[").split(".") if p]
    key, colon, rest = text.partition(": ")
    if colon and key.isidentifier():  # raised by a __post_init__, which names its own key
        path, text = [*path, key], rest
    elif text.startswith("Object contains unknown field `"):
        unknown = text.removeprefix("Object contains unknown field `").rstrip("`")
        known = ", ".join(_fields(_type_at(cls, path)))
        path, text = [*path, unknown], f"unknown key; the keys here are {known}"
    elif text.startswith("Invalid enum value "):
        choices = [repr(c) for c in _literal_choices(_type_at(cls, path))]
        if choices:
            text = f"must be one of {', '.join(choices)}, not {text.removeprefix('Invalid enum value ')}"
    label = " -> ".join(path)
    var = from_env.get(tuple(path))
    if var:
        label = f"{label} (from {var})"
    text = f"{text[0].lower()}{text[1:]}" if text else "invalid"
    return f"{label}: {text}" if label else text


def _type_at(cls: Any, path: list[str]) -> Any:
    for part in path:
        hints = _hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    return cls


def _hints(cls: Any) -> dict[str, Any]:
    args = [a for a in typing.get_args(cls) if a is not type(None)]
    if len(args) == 1:
        cls = args[0]
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return typing.get_type_hints(cls)
    return {}


def _fields(cls: Any) -> list[str]:
    return sorted(_hints(cls))


def _literal_choices(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    for arg in typing.get_args(tp):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return ()
