"""docs/native-audit-logs.md: its configuration example builds working sources, and it documents every key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec.inspect as mi

from agent.config import AgentConfig
from agent.sources import build_sources
from agent.tailers.config import MariaDbAuditSection, PgAuditSection
from agent.tailers.pgaudit_stderr import RECOMMENDED_PREFIX
from agent.tailers.source import TailerSource

DOC = Path(__file__).resolve().parents[3] / "docs" / "native-audit-logs.md"


def test_the_documented_configuration_builds_both_sources() -> None:
    text = DOC.read_text()
    [block] = [b for b in re.findall(r"```toml\n(.*?)```", text, re.DOTALL) if "[sources." in b]
    config = AgentConfig(sources=tomllib.loads(block)["sources"])
    sources = build_sources(config)
    assert [(s.name, type(s)) for s in sources] == [("pg-core", TailerSource), ("maria-loans", TailerSource)]


def test_every_key_and_the_recommended_prefix_are_documented() -> None:
    text = DOC.read_text()
    assert f"log_line_prefix = '{RECOMMENDED_PREFIX}'" in text
    for cls in (PgAuditSection, MariaDbAuditSection):
        for field in mi.type_info(cls).fields:
            assert f"`{field.encode_name}`" in text or f"{field.encode_name} =" in text, field.encode_name
