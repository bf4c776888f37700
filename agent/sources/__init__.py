"""Sources: the sensors an agent runs, built from the `[sources.*]` sections of agent.toml.

One visible table maps a section's `type` to the class that reads it; there is no discovery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config import AgentConfig
from agent.runtime import Source
from agent.tailers.config import mariadb_audit_source, pgaudit_source


def _file_watch(name: str, section: dict[str, Any], config: AgentConfig) -> Source:
    from agent.files.watch import FileWatchSource  # watchdog is imported only by agents that watch files

    return FileWatchSource.from_config(name, section, config)


def _mounts(name: str, section: dict[str, Any], config: AgentConfig) -> Source:
    from agent.files.mounts import MountsSource

    return MountsSource.from_config(name, section, config)


def _db_connections(name: str, section: dict[str, Any], config: AgentConfig) -> Source:
    from agent.netwatch import DbConnectionsSource

    return DbConnectionsSource.from_config(name, section, config)


SOURCE_TYPES: dict[str, Callable[[str, dict[str, Any], AgentConfig], Source]] = {
    "pgaudit": pgaudit_source,  # pgAudit lines in PostgreSQL's stderr log or csvlog (agent/tailers)
    "mariadb_audit": mariadb_audit_source,  # MariaDB's server_audit file (agent/tailers)
    "file_watch": _file_watch,  # exports into watched folders and onto removable/network mounts (agent/files)
    "mounts": _mounts,  # removable and network media appearing and going (agent/files/mounts.py)
    "db_connections": _db_connections,  # this machine's connections to databases (agent/netwatch.py)
}


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
