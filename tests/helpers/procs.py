"""Real processes for end-to-end tests: a `custos serve` collector and a `custos-agent run` agent.

Both run from this checkout (`python -m collector`, `python -m agent`) with PYTHONPATH pointing at it, so the
tests exercise the same code whether or not the package is installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(module: str, *args: str, env: dict[str, str], cwd: Path | None = None) -> str:
    """Run `python -m MODULE ARGS…` to completion; returns stdout, raises with stderr on failure."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout}")
    return proc.stdout


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Collector:
    """A real collector process on an ephemeral loopback port, restartable on the same port."""

    def __init__(self, workdir: Path, database_url: str, *, config: Path | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.config = config
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.scheme = "http"
        self._log = open(self.workdir / "collector.log", "ab")

    @property
    def env(self) -> dict[str, str]:
        extra = {"CUSTOS_DATABASE_URL": self.database_url, "CUSTOS_LISTEN": f"127.0.0.1:{self.port}"}
        if self.config is not None:
            extra["CUSTOS_CONFIG"] = str(self.config)
        return base_env(**extra)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        return run_cli("collector", *args, env=self.env, cwd=self.workdir)

    def upgrade(self) -> None:
        self.cli("db", "upgrade")

    def enroll(self, name: str) -> str:
        return self.cli("agents", "enroll", name).strip().splitlines()[-1]

    def api_token(self, name: str, role: str = "analyst") -> str:
        return self.cli("tokens", "create", name, "--role", role).strip().splitlines()[-1]

    def start(self, timeout: float = 30.0) -> None:
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve", "--port-file", str(port_file)],
            env=self.env, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: port_file.exists() or self.proc.poll() is not None, timeout, "the collector's port")
        if self.proc.poll() is not None:
            raise AssertionError(f"collector exited {self.proc.returncode}; see {self.workdir / 'collector.log'}")
        self.port = int(port_file.read_text())
        wait_for(self.healthy, timeout, "the collector's /healthz")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0, verify=False).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def close(self) -> None:
        self.kill()
        self._log.close()


class AgentProcess:
    """A real `custos-agent run` process with its spool in `workdir`."""

    def __init__(self, workdir: Path, collector_url: str, token: str, *, config: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = base_env(
            CUSTOS_COLLECTOR_URL=collector_url,
            CUSTOS_AGENT_TOKEN=token,
            CUSTOS_SPOOL_DIR=str(workdir / "spool"),
            **(extra_env or {}),
        )
        self._log = open(self.workdir / "agent.log", "ab")

    @property
    def spool_path(self) -> Path:
        return self.workdir / "spool" / "spool.sqlite3"

    def start(self) -> None:
        args = [sys.executable, "-m", "agent", "-v", "run"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        self.proc = subprocess.Popen(args, env=self.env, cwd=self.workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def close(self) -> None:
        self.kill()
        self._log.close()
