from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.files.mounts import MountsSource
from agent.files.watch import FileWatchSource
from agent.netwatch import DbConnectionsSource
from agent.sources import build_sources

STAFF_TOML = """
[limits]
cpu_percent = 20
memory = "80MiB"
[sources.files]
type = "file_watch"
quiet = "3s"
removable_mounts = ["/mnt/usb*"]
[sources.files.classify]
max_rows = 500000
patterns = { staff_no = "EMP-\\\\d{6}" }
[sources.media]
type = "mounts"
[sources.db]
type = "db_connections"
endpoints = ["10.0.0.5:5432", "127.0.0.1:6432"]
"""


def test_the_staff_machine_sources_are_built_from_agent_toml(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(STAFF_TOML)
    files, media, db = build_sources(load_config(path, env={}))
    assert isinstance(files, FileWatchSource) and isinstance(media, MountsSource)
    assert isinstance(db, DbConnectionsSource)
    assert files.config.classify.patterns == {"staff_no": r"EMP-\d{6}"}
    assert files.governor.limits.cpu_percent == 20.0 and files.governor.limits.memory_bytes == 80 << 20
    assert files.exclude_dirs == (os.path.abspath("./custos-spool"),)  # the agent never reports its own spool


def test_custos_watch_paths_overrides_the_watched_folders(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    from agent.files.config import FileWatchConfig

    source = FileWatchSource("files", FileWatchConfig(paths=["/nonexistent"], sync_paths=[], watch_mounts=False),
                             env={"CUSTOS_WATCH_PATHS": f"{tmp_path / 'x'}:{tmp_path / 'y'}:"})
    assert source.desired_roots() == [str(tmp_path / "x"), str(tmp_path / "y")]


@pytest.mark.parametrize(
    "section, message",
    [
        ('type = "file_watch"\nquiet = "soon"', "sources -> files -> quiet: must be a duration"),
        ('type = "file_watch"\nwatch_everything = true', "sources -> files -> watch_everything: unknown key; the keys here are "),
        ('type = "file_watch"\n[sources.files.classify]\npatterns = { "Bad Name" = "x" }',
         "sources -> files -> classify -> patterns: 'Bad Name' is not a class name"),
        ('type = "file_watch"\n[sources.files.classify]\npatterns = { ok = "(" }',
         "sources -> files -> classify -> patterns: 'ok' is not a valid regular expression"),
        ('type = "mounts"\npoll_interval = -1', "sources -> files -> poll_interval"),
    ],
)
def test_configuration_errors_name_the_section_and_the_key(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f"[sources.files]\n{section}\n")
    with pytest.raises(ConfigError, match=message):
        build_sources(load_config(path, env={}))


def test_limits_are_validated_at_start(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[limits]\nmemory = "lots"\n')
    with pytest.raises(ConfigError, match="limits -> memory"):
        load_config(path, env={})


def test_the_example_staff_configuration_is_valid() -> None:
    from tests.helpers.procs import ROOT

    config = load_config(ROOT / "examples" / "agent-staff.toml", env={})
    assert [type(s).__name__ for s in build_sources(config)] == [
        "FileWatchSource", "MountsSource", "DbConnectionsSource"]
    assert config.limits.cpu_percent == 25
