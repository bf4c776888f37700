"""The proxy as an agent source: `[sources.NAME] type = "proxy"` in agent.toml, or `custos-agent proxy`."""

from __future__ import annotations

from typing import Any

from agent.config import AgentConfig
from agent.proxy.config import ProxyConfig, proxy_config
from agent.proxy.server import ProxyServer
from agent.spool import Spool


class ProxySource:
    def __init__(self, name: str, config: ProxyConfig, agent_id: str = "", synchronous: str = "FULL") -> None:
        self.name = name
        self.config = config
        self.agent_id = agent_id
        self.synchronous = synchronous  # the agent's spool setting, for the spool writer process
        self.secret = config.secret()  # a missing key fails at start, naming the setting
        self.server: ProxyServer | None = None

    @classmethod
    def from_section(cls, name: str, section: dict[str, Any], agent: AgentConfig) -> ProxySource:
        return cls(name, proxy_config(name, section), agent.agent_id, agent.spool.synchronous)

    def start(self, spool: Spool) -> None:
        self.server = ProxyServer(self.config, spool, name=self.name, agent_id=self.agent_id, secret=self.secret,
                                  spool_process=self.synchronous)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def counters(self) -> dict[str, dict[str, int]]:
        return self.server.counters() if self.server is not None else {}


def proxy_sources(config: AgentConfig, listen: str | None, upstream: str | None, name: str) -> list[ProxySource]:
    """The proxies to run: one from --listen/--upstream (other settings from the first proxy section, if any),
    or every `type = "proxy"` section of agent.toml."""
    from agent.errors import ConfigError

    sections = {n: s for n, s in config.sources.items() if isinstance(s, dict) and s.get("type") == "proxy"}
    if listen or upstream:
        if not (listen and upstream):
            raise ConfigError("--listen and --upstream go together: give both, e.g. "
                              "--listen 127.0.0.1:6543 --upstream 127.0.0.1:5432")
        base = dict(next(iter(sections.values()), {}))
        base["listeners"] = [{"listen": listen, "upstream": upstream, "name": name}]
        return [ProxySource(name, proxy_config(name, base), config.agent_id, config.spool.synchronous)]
    if not sections:
        raise ConfigError('no proxy configured: give --listen and --upstream, or a [sources.NAME] section with '
                          'type = "proxy" and listeners in agent.toml')
    return [ProxySource(n, proxy_config(n, s), config.agent_id, config.spool.synchronous) for n, s in sections.items()]
