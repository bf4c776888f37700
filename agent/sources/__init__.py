"""Sources: the sensors an agent runs, built from the `[sources.*]` sections of agent.toml.

One visible table maps a section's `type` to the class that reads it; there is no discovery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config import AgentConfig
from agent.runtime import Source

SOURCE_TYPES: dict[str, Callable[[str, dict[str, Any], AgentConfig], Source]] = {}


def _proxy(name: str, section: dict[str, Any], config: AgentConfig) -> Source:
    from agent.proxy.source import ProxySource  # imported on use: the proxy loads uvloop and sqlglot

    return ProxySource.from_section(name, section, config)


SOURCE_TYPES["proxy"] = _proxy


def build_sources(config: AgentConfig) -> list[Source]:
    """The configured sources, in file order; an unknown `type` is a configuration error naming the section."""
    from agent.errors import ConfigError

    sources: list[Source] = []
    for name, section in config.sources.items():
        if not isinstance(section, dict):
            raise ConfigError(f"sources -> {name}: must be a table such as [sources.{name}]")
        kind = section.get("type")
        if kind not in SOURCE_TYPES:
            known = ", ".join(sorted(SOURCE_TYPES)) or "none yet"
            raise ConfigError(f"sources -> {name} -> type: must be one of {known}, not {kind!r}")
        sources.append(SOURCE_TYPES[kind](name, section, config))
    return sources
