"""A source's `[sources.NAME]` table of agent.toml, checked into a typed struct with errors that name the key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from agent.config import _readable
from agent.errors import ConfigError
from agent.units import parse_duration, parse_size

T = TypeVar("T")


def load_section(cls: type[T], name: str, section: Mapping[str, Any]) -> T:
    """`section` as a `cls`; raises ConfigError "sources -> NAME -> key: what is wrong"."""
    try:
        return msgspec.convert(dict(section), cls, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"sources -> {name} -> {_readable(cls, str(e), {})}") from e


def duration(value: int | float | str, key: str) -> float:
    """Seconds, for a struct's __post_init__: a bad value names its key."""
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None


def size(value: int | str, key: str) -> int:
    try:
        return parse_size(value)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None
