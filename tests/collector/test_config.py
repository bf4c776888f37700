"""collector.toml: a wrong value is one line naming its key path and what is wrong; unknown keys are refused by
name; the environment wins over the file; `custos` prints what an operator can fix as one line and exits 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ConfigError
from collector.config import load_config
from tests.helpers.procs import base_env
from tests.helpers.tls import make_tls_files

BAD_VALUES = [
    ('[server]\nlisten = "8600"', 'server -> listen: must be host:port such as "127.0.0.1:8600", not \'8600\''),
    ('[server]\nlisten = "127.0.0.1:99999"', "server -> listen: must be host:port"),
    ('[server]\ntls_cert = "/etc/custos/collector.pem"', "server -> tls_key: tls_cert and tls_key go together"),
    ('[server]\ntls_cert = "/nonexistent.pem"\ntls_key = "/nonexistent.key"',
     "server -> tls_cert: no such file: /nonexistent.pem"),
    ("[server]\nmax_body_bytes = 0", 'server -> max_body_bytes: must be a positive size such as "1GiB"'),
    ('[server]\nmax_batch_bytes = "big"', "server -> max_batch_bytes: must be a positive size"),
    ("[server]\nmax_batch_events = 0", "server -> max_batch_events: must be between 1 and 1000000, not 0"),
    ('[database]\nurl = "mysql://custos:s3cret@db/custos"', "database -> url: must be a URL such as"),
    ("[server]\nport = 8600", "server -> port: unknown key; the keys here are listen, max_batch_bytes"),
    ("[servers]\nlisten = 1",
     "servers: unknown key; the keys here are customers, database, integrity, notify, rules, server, web, weekly"),
    ('[integrity]\nmax_clock_skew = "soon"', 'integrity -> max_clock_skew: must be a duration such as "30s"'),
    ('[integrity]\nupstreams = ["db01"]', "integrity -> upstreams: 'db01' must be host:port"),
    ("[integrity]\nsilent_after_beats = 0", "integrity -> silent_after_beats: must be 1 or more"),
    ("[rules]\ndirectory = 1", "rules -> directory: unknown key; the keys here are dir"),
]


@pytest.mark.parametrize("text, message", BAD_VALUES, ids=[m.split(":")[0] for _, m in BAD_VALUES])
def test_a_wrong_value_names_its_key_path_and_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(text + "\n")

    with pytest.raises(ConfigError) as info:
        load_config(path, env={})

    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert "s3cret" not in str(info.value)  # a database password never reaches a message


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text('[server]\nlisten = "0.0.0.0:8600"\nmax_batch_events = 5\n\n'
                    '[database]\nurl = "sqlite:///file.db"\n')

    config = load_config(path, env={"CUSTOS_DATABASE_URL": "postgresql://custos@db/custos",
                                    "CUSTOS_LISTEN": "127.0.0.1:9000"})

    assert (config.database.url, config.server.listen, config.server.max_batch_events) == (
        "postgresql://custos@db/custos", "127.0.0.1:9000", 5)
    from_variable = load_config(None, env={"CUSTOS_CONFIG": str(path)})
    assert from_variable.server.listen == "0.0.0.0:8600"


def test_a_wrong_value_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"CUSTOS_LISTEN": "everywhere"})

    assert str(info.value) == ('collector.toml: server -> listen (from CUSTOS_LISTEN): must be host:port such as '
                               '"127.0.0.1:8600", not \'everywhere\'')


def _custos(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], env=base_env(**env), cwd=cwd,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _one_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("custos: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr


def test_the_cli_prints_a_config_error_as_one_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text("[server]\nmax_body_bytes = 0\n")

    _one_line(_custos("--config", str(path), "serve", cwd=tmp_path), f"{path}: server -> max_body_bytes: must be")
    _one_line(_custos("db", "upgrade", cwd=tmp_path, CUSTOS_CONFIG=str(path)), "server -> max_body_bytes")
    _one_line(_custos("serve", cwd=tmp_path, CUSTOS_LISTEN="nowhere"), "(from CUSTOS_LISTEN)")


def test_serving_a_database_that_was_never_upgraded_says_to_upgrade(sqlite_url: str, tmp_path: Path) -> None:
    _one_line(_custos("serve", cwd=tmp_path, CUSTOS_DATABASE_URL=sqlite_url, CUSTOS_LISTEN="127.0.0.1:0"),
              "run `custos db upgrade` first")


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    _one_line(_custos("db", "upgrade", cwd=tmp_path,
                      CUSTOS_DATABASE_URL=f"postgresql://custos:s3cret@127.0.0.1:{port}/custos"),
              "cannot use the database named by database -> url")


def test_a_busy_port_and_a_wrong_key_are_one_line(sqlite_url: str, tmp_path: Path) -> None:
    assert _custos("db", "upgrade", cwd=tmp_path, CUSTOS_DATABASE_URL=sqlite_url).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        _one_line(_custos("serve", cwd=tmp_path, CUSTOS_DATABASE_URL=sqlite_url, CUSTOS_LISTEN=f"127.0.0.1:{port}"),
                  f"server -> listen: cannot listen on 127.0.0.1:{port}")

    tls, other = make_tls_files(tmp_path / "tls"), make_tls_files(tmp_path / "other")
    path = tmp_path / "collector.toml"
    path.write_text(f'[server]\nlisten = "127.0.0.1:0"\ntls_cert = "{tls.cert}"\ntls_key = "{other.key}"\n')
    _one_line(_custos("--config", str(path), "serve", cwd=tmp_path, CUSTOS_DATABASE_URL=sqlite_url),
              "server -> tls_cert, tls_key: cannot use", "docs/tls.md")


def test_the_customer_key_comes_from_the_environment_before_the_key_file(tmp_path: Path) -> None:
    from agent.customer_keys import CustomerKeyHasher
    from collector.config import CustomersSection

    key = tmp_path / "key"
    key.write_bytes(b"file-key-of-at-least-16-bytes\n")
    section = CustomersSection(key_file=str(key))
    assert section.hasher(env={}).hash("42") == CustomerKeyHasher(b"file-key-of-at-least-16-bytes").hash("42")
    from_env = section.hasher(env={"CUSTOS_CUSTOMER_KEY_SECRET": "env-key-of-at-least-16-bytes"})
    assert from_env.hash("42") == CustomerKeyHasher(b"env-key-of-at-least-16-bytes").hash("42")
    assert CustomersSection().hasher(env={}) is None
    key.write_bytes(b"short")
    with pytest.raises(ConfigError, match="customers -> key_file"):
        section.hasher(env={})
