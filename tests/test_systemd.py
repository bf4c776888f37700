"""The systemd units in systemd/ pass `systemd-analyze verify` and keep their hardening.

`verify` refuses a unit whose ExecStart binary does not exist, so each unit is copied to a temporary directory with
/usr/bin/custos and /usr/bin/custos-agent pointed at stub executables there. Unknown keys and unparsable values
only produce warnings (exit status 0), so a unit passes only when verify exits 0 AND prints nothing; the tests on
deliberately broken copies show that this check does catch each kind of mistake.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
BINARY = re.compile(r"/usr/bin/(custos-agent|custos)(?=\s|$)")
UNIT_NAMES = ["custos-collector.service", "custos-agent.service", "custos-proxy@.service"]


def install_copy(name: str, dest: Path, text: str | None = None) -> Path:
    """Copy unit `name` into `dest` with its binaries replaced by stub executables that exist."""
    bin_dir = dest / "bin"
    bin_dir.mkdir(exist_ok=True)
    for exe in ("custos", "custos-agent"):
        stub = bin_dir / exe
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    source = (UNITS / name).read_text() if text is None else text
    rewritten, count = BINARY.subn(lambda m: str(bin_dir / m.group(1)), source)
    if count == 0 and text is None:
        raise AssertionError(f"{name} runs neither /usr/bin/custos nor /usr/bin/custos-agent")
    path = dest / name
    path.write_text(rewritten)
    return path


def verify(path: Path) -> str:
    """Problems `systemd-analyze verify` reports for the unit at `path`; empty when there are none."""
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", path.name],
        cwd=path.parent, capture_output=True, text=True, timeout=60,
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        return f"exit status {proc.returncode}: {output}"
    return output


def directives(path: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit, repeated keys kept in order (systemd units allow repeats)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def one(d: dict[str, list[str]], key: str) -> str:
    values = d.get(key)
    if not values:
        raise AssertionError(f"{key}= is missing")
    return values[-1]


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_passes_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    assert verify(install_copy(name, tmp_path)) == ""


@pytest.mark.parametrize(
    "name, breakage, expected",
    [
        ("custos-collector.service", ("NoNewPrivileges=yes", "NoNewPrivilege=yes"), "Unknown key"),
        ("custos-agent.service", ("ProtectSystem=strict", "ProtectSystem=very"), "very"),
        ("custos-agent.service", ("Restart=always", "Restart=sometimes"), "restart"),
        ("custos-proxy@.service", ("DynamicUser=yes", "DynamicUser=perhaps"), "boolean"),
        ("custos-collector.service", ("ExecStart=/usr/bin/custos", "ExecStart=/nonexistent/custos"),
         "not executable"),
        ("custos-agent.service", ("[Service]", "[Servise]"), "Servise"),
    ],
)
def test_verify_check_fails_on_a_broken_unit(
    name: str, breakage: tuple[str, str], expected: str, tmp_path: Path
) -> None:
    original = (UNITS / name).read_text()
    old, new = breakage
    assert old in original, f"{name} no longer contains {old!r}; update this test's breakage"
    broken = BINARY.sub(lambda m: str(tmp_path / "bin" / m.group(1)), original.replace(old, new, 1))
    problems = verify(install_copy(name, tmp_path, broken))
    assert expected.lower() in problems.lower(), problems


@pytest.mark.parametrize("name, limit", [
    ("custos-collector.service", 2.0),
    ("custos-proxy@.service", 2.0),
    ("custos-agent.service", 3.0),  # reads every home directory and every user's processes, by design
])
def test_unit_exposure_stays_under_its_limit(name: str, limit: float, tmp_path: Path) -> None:
    path = install_copy(name, tmp_path)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", f"--threshold={limit * 10:.0f}", path.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert score is not None, proc.stdout + proc.stderr
    assert float(score.group(1)) <= limit, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_runs_as_a_confined_dedicated_user(name: str) -> None:
    d = directives(UNITS / name)
    assert one(d, "DynamicUser") == "yes"
    assert one(d, "User").startswith("custos")
    assert one(d, "NoNewPrivileges") == "yes"
    assert one(d, "ProtectSystem") == "strict"
    assert one(d, "PrivateTmp") == "yes"
    assert "@system-service" in d["SystemCallFilter"]
    assert set(one(d, "RestrictAddressFamilies").split()) <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    state = one(d, "StateDirectory")
    assert any(state.split("/")[0] in p for p in one(d, "ReadWritePaths").split())
    for env_file in d["EnvironmentFile"]:
        assert env_file.lstrip("-").startswith("/etc/custos/"), env_file


def test_collector_has_no_capabilities_and_no_access_to_homes() -> None:
    d = directives(UNITS / "custos-collector.service")
    assert one(d, "CapabilityBoundingSet") == ""
    assert one(d, "ProtectHome") == "yes"
    assert one(d, "Restart") == "on-failure"


def test_agent_reads_homes_without_writing_them_and_always_comes_back() -> None:
    d = directives(UNITS / "custos-agent.service")
    assert one(d, "ProtectHome") == "read-only"
    assert set(one(d, "CapabilityBoundingSet").split()) == {"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}
    assert one(d, "Restart") == "always"
    assert one(d, "StartLimitIntervalSec") == "0"  # a killed agent is restarted however often it is killed


def test_proxy_template_reads_the_configuration_named_by_its_instance() -> None:
    d = directives(UNITS / "custos-proxy@.service")
    assert one(d, "ExecStart") == "/usr/bin/custos-agent proxy --config /etc/custos/proxy-%i.toml"
    assert "%i" in one(d, "StateDirectory")
    assert one(d, "CapabilityBoundingSet") == ""
