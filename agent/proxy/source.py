"""The proxy as an agent source: `[sources.NAME] type = "proxy"` in agent.toml, or `custos-agent proxy`."""

from __future__ import annotations

from typing import Any

from agent.config import AgentConfig
from agent.proxy.config import ProxyConfig, proxy_config
from agent.proxy.server import ProxyServer
from agent.spool import Spool


class ProxySource:
    def __init__(self, name: str, config: ProxyConfig, agent_id: str = "") -> None:
        self.name = name
        self.config = config
        self.agent_id = agent_id
        self.secret = config.secret()  # a missing key fails at start, naming the setting
        self.server: ProxyServer | None = None

    @classmethod
    def from_section(cls, name: str, section: dict[str, Any], agent: AgentConfig) -> ProxySource:
        return cls(name, proxy_config(name, section), agent.agent_id)

    def start(self, spool: Spool) -> None:
        self.server = ProxyServer(self.config, spool, name=self.name, agent_id=self.agent_id, secret=self.secret)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def counters(self) -> dict[str, dict[str, int]]:
        return self.server.counters() if self.server is not None else {}
