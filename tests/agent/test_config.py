"""agent.toml: a wrong value is one line naming its key path and what is wrong; unknown keys are refused by name;
the environment wins over the file; the CLI prints the line and exits 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from tests.helpers.procs import base_env

BAD_VALUES = [
    ('[spool]\nmax_bytes = "lots"', 'spool -> max_bytes: must be a positive size such as "1GiB", not \'lots\''),
    ("[spool]\nmax_bytes = -1", 'spool -> max_bytes: must be a positive size such as "1GiB"'),
    ("[spool]\nmax_bytes = true", 'spool -> max_bytes: must be a positive size such as "1GiB", not True'),
    ("[spool]\nmax_bytes = [1]", 'spool -> max_bytes: must be a positive size such as "1GiB", not [1]'),
    ('[spool]\nmax_events = "many"', "spool -> max_events: expected `int`, got `str`"),
    ("[spool]\nmax_events = 0", "spool -> max_events: must be a positive number of events, not 0"),
    ('[spool]\noverflow = "explode"',
     "spool -> overflow: must be one of 'drop_oldest', 'drop_newest', 'block', not 'explode'"),
    ("spool = 5", "spool: expected `object`, got `int`"),
    ("[ship]\nbatch_max_events = 0", "ship -> batch_max_events: must be between 1 and 10000, not 0"),
    ('[ship]\nbatch_max_bytes = "4 bananas"', "ship -> batch_max_bytes: must be a positive size"),
    ('[ship]\nbatch_max_age = "soon"', 'ship -> batch_max_age: must be a duration such as "30s" or "5m"'),
    ('[ship]\nbackoff_max = "1ms"', "ship -> backoff_max: must not be shorter than backoff_base"),
    ('[collector]\nurl = "ftp://collector"', "collector -> url: must be http:// or https://"),
    ('[collector]\ntimeout = "0s"', "collector -> timeout: must be a duration above zero"),
    ('[collector]\nca_file = "/nonexistent/ca.pem"', "collector -> ca_file: no such file: /nonexistent/ca.pem"),
    ('[heartbeat]\ninterval = "often"', "heartbeat -> interval: must be a duration"),
    ("colector = 1", "colector: unknown key; the keys here are agent_id, collector, heartbeat, limits, ship, sources, spool"),
    ("[spool]\nmax_byte = 1", "spool -> max_byte: unknown key; the keys here are dir, max_bytes, max_events"),
    ("[collector]\nurl = ", "not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD_VALUES, ids=[m.split(":")[0] for _, m in BAD_VALUES])
def test_a_wrong_value_names_its_key_path_and_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text + "\n")

    with pytest.raises(ConfigError) as info:
        load_config(path, env={})

    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent.toml: no such file"):
        load_config(tmp_path / "agent.toml", env={})


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[collector]\nurl = "http://file:8600"\ntoken = "from-file"\n\n[spool]\ndir = "/file/spool"\n'
                    'max_bytes = "2GiB"\n')
    env = {"CUSTOS_COLLECTOR_URL": "https://env:8600", "CUSTOS_AGENT_TOKEN": "from-env",
           "CUSTOS_SPOOL_DIR": str(tmp_path / "env-spool")}

    config = load_config(path, env=env)

    assert (config.collector.url, config.token(), config.spool.dir) == (
        "https://env:8600", "from-env", str(tmp_path / "env-spool"))
    assert config.spool.max_bytes == "2GiB"  # what the environment does not name stays as the file says
    unset = load_config(path, env={"CUSTOS_AGENT_TOKEN": ""})  # an empty variable overrides nothing
    assert (unset.collector.url, unset.token(), unset.spool.dir) == ("http://file:8600", "from-file", "/file/spool")


def test_a_wrong_value_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"CUSTOS_COLLECTOR_URL": "collector:8600"})

    assert str(info.value).startswith("agent.toml: collector -> url (from CUSTOS_COLLECTOR_URL): must be http")


def _agent(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], env=base_env(**env), cwd=cwd,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", [["run"], ["spool", "status"], ["emit"]])
def test_the_cli_prints_a_config_error_as_one_line_and_exits_2(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[spool]\nmax_bytes = "lots"\n')

    proc = _agent(*command, "--config", str(path), cwd=tmp_path)

    assert proc.returncode == 2
    assert proc.stderr == f'custos-agent: {path}: spool -> max_bytes: must be a positive size such as "1GiB", ' \
                          "not 'lots'\n"
    assert proc.stdout == ""


def test_running_without_a_token_says_how_to_get_one(tmp_path: Path) -> None:
    proc = _agent("run", cwd=tmp_path, CUSTOS_SPOOL_DIR=str(tmp_path / "spool"))

    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "collector -> token: missing" in proc.stderr and "custos agents enroll" in proc.stderr
