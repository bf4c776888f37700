"""The example configuration files load with the real loaders, show every key with a comment, and every key and
environment variable is documented in docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec.inspect as mi
import pytest

from agent import config as agent_config
from agent.units import parse_duration, parse_size
from collector import config as collector_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CONFIG_DOC = ROOT / "docs" / "configuration.md"


def config_keys(cls: type) -> list[tuple[str, str]]:
    """(section, key) for every key of a config struct; section "" for top-level keys, nested structs as sections.
    A dict-valued field (like `sources`) is a family of sections and is reported as (name, "*")."""
    keys: list[tuple[str, str]] = []
    for f in mi.type_info(cls).fields:
        if isinstance(f.type, mi.StructType):
            keys += [(f.encode_name, g.encode_name) for g in f.type.fields]
        elif isinstance(f.type, mi.DictType):
            keys.append((f.encode_name, "*"))
        else:
            keys.append(("", f.encode_name))
    return keys


def example_lines(path: Path) -> dict[str, list[str]]:
    """Lines of a TOML file by section, commented-out section headers and keys included."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in path.read_text().splitlines():
        header = re.match(r"^#?\s*\[([a-z_.A-Z]+)\]\s*$", line)
        if header:
            current = header.group(1)
            sections.setdefault(current, [])
            continue
        sections[current].append(line)
    return sections


KEY_LINE = r"^#?\s*{key}\s*="

CASES = [
    ("collector.toml", collector_config.CollectorConfig),
    ("agent.toml", agent_config.AgentConfig),
]


def test_collector_example_loads_with_the_collector_loader() -> None:
    config = collector_config.load_config(EXAMPLES / "collector.toml", env={})
    assert config.server.listen == "127.0.0.1:8600"
    assert config.database.url == "sqlite:///custos.db"
    assert parse_size(config.server.max_body_bytes) == 16 * 1024 * 1024
    # The example shows the defaults: loading it changes nothing.
    assert config == collector_config.load_config(None, env={})


def test_agent_example_loads_with_the_agent_loader() -> None:
    config = agent_config.load_config(EXAMPLES / "agent.toml", env={})
    assert config.collector.url.startswith("https://")
    assert config.spool.dir == "/var/lib/custos-agent/spool"
    assert parse_size(config.spool.max_bytes) == 1 << 30
    assert parse_duration(config.ship.backoff_max) == 300
    assert config.sources == {}


def test_environment_overrides_the_example_files() -> None:
    agent = agent_config.load_config(
        EXAMPLES / "agent.toml",
        env={"CUSTOS_COLLECTOR_URL": "http://127.0.0.1:9", "CUSTOS_AGENT_TOKEN": "cst_x", "CUSTOS_SPOOL_DIR": "/s"},
    )
    assert (agent.collector.url, agent.token(), agent.spool.dir) == ("http://127.0.0.1:9", "cst_x", "/s")
    collector = collector_config.load_config(
        EXAMPLES / "collector.toml",
        env={"CUSTOS_LISTEN": "127.0.0.1:0", "CUSTOS_DATABASE_URL": "postgresql://u@127.0.0.1/db"},
    )
    assert (collector.server.port, collector.database.url) == (0, "postgresql://u@127.0.0.1/db")


def undocumented_keys(path: Path, cls: type) -> list[str]:
    """Keys of `cls` that the example at `path` does not show (set or commented out) right after a comment."""
    sections = example_lines(path)
    problems: list[str] = []
    for section, key in config_keys(cls):
        if key == "*":
            if not any(s.startswith(f"{section}.") for s in sections):
                problems.append(f"[{section}.NAME]")
            continue
        lines = sections.get(section, [])
        pattern = re.compile(KEY_LINE.format(key=re.escape(key)))
        at = [i for i, line in enumerate(lines) if pattern.match(line)]
        before = lines[at[0] - 1] if at and at[0] > 0 else ""
        if not at or not before.startswith("#") or pattern.match(before) or len(before) <= 2:
            problems.append(f"{section}.{key}" if section else key)
    return problems


@pytest.mark.parametrize("name, cls", CASES)
def test_example_shows_every_key_after_a_comment(name: str, cls: type) -> None:
    assert undocumented_keys(EXAMPLES / name, cls) == []


@pytest.mark.parametrize("name, cls", CASES)
def test_every_key_is_documented(name: str, cls: type) -> None:
    doc = CONFIG_DOC.read_text()
    for section, key in config_keys(cls):
        dotted = f"{section}.NAME" if key == "*" else f"{section}.{key}" if section else key
        assert f"`{dotted}`" in doc, f"docs/configuration.md does not document `{dotted}` of {name}"


def test_every_environment_variable_is_documented() -> None:
    doc = CONFIG_DOC.read_text()
    names = set(agent_config.ENV_OVERRIDES) | set(collector_config.ENV_OVERRIDES) | {"CUSTOS_CONFIG"}
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"docs/configuration.md does not document {missing}"


def test_the_key_checker_notices_a_missing_key_and_a_missing_comment(tmp_path: Path) -> None:
    text = (EXAMPLES / "agent.toml").read_text()
    no_key = tmp_path / "no_key.toml"
    no_key.write_text(re.sub(r"(?m)^backoff_max = .*\n", "", text))
    assert undocumented_keys(no_key, agent_config.AgentConfig) == ["ship.backoff_max"]
    no_comment = tmp_path / "no_comment.toml"
    no_comment.write_text(re.sub(r"(?m)^# How long one request.*\n", "", text))
    assert undocumented_keys(no_comment, agent_config.AgentConfig) == ["collector.timeout"]
