"""TLS by configuration: a collector serving https with `[server] tls_cert/tls_key`, and a real agent that ships
to it trusting the CA named by `[collector] ca_file` (and one that does not trust it, and keeps its events)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.helpers.api import served
from tests.helpers.procs import AgentProcess, run_cli, wait_for
from tests.helpers.tls import make_tls_files

QUERY = {"kind": "db.query", "payload": {"session_id": "s1", "statement_type": "SELECT", "fingerprint": "f1",
                                         "statement": "SELECT * FROM customers WHERE id = ?"}}


def _emit(agent: AgentProcess, n: int, config: Path | None) -> None:
    lines = agent.workdir / "events.jsonl"
    lines.write_text("".join(json.dumps(QUERY) + "\n" for _ in range(n)))
    args = ["emit", *(["--config", str(config)] if config else []), str(lines)]
    assert f"queued {n} events" in run_cli("agent", *args, env=agent.env, cwd=agent.workdir)


def _tls_collector_config(tmp_path: Path) -> tuple[Path, Path]:
    tls = make_tls_files(tmp_path / "tls")
    config = tmp_path / "collector.toml"
    config.write_text(f'[server]\ntls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n')
    return config, tls.ca


def test_an_agent_ships_over_https_trusting_the_collectors_ca(sqlite_url: str, tmp_path: Path) -> None:
    config, ca = _tls_collector_config(tmp_path)
    with served(tmp_path / "collector", sqlite_url, config=config, scheme="https", ca_file=ca) as api:
        assert api.url.startswith("https://")
        assert api.get("/healthz").status_code == 200  # verified against the CA
        with pytest.raises(httpx.TransportError):  # nothing is served in the clear on the TLS port
            httpx.get(api.url.replace("https://", "http://") + "/healthz", timeout=5)

        agent_toml = tmp_path / "agent.toml"
        agent_toml.write_text(f'[collector]\nca_file = "{ca}"\n\n[ship]\nbatch_max_age = "100ms"\n')
        agent = AgentProcess(tmp_path / "agent", api.url, api.agent_token, config=agent_toml)
        try:
            _emit(agent, 25, agent_toml)
            agent.start()
            page = wait_for(lambda: len(api.get(kind="db.query").json()["events"]) == 25, 60,
                            "25 events shipped over https")
            assert page
        finally:
            agent.close()
        stored = api.stored()
        assert len([r for r in stored.values() if r["kind"] == "db.query"]) == 25
        assert {r["agent"] for r in stored.values()} == {api.agent_name}


def test_an_agent_that_does_not_trust_the_certificate_keeps_its_events(sqlite_url: str, tmp_path: Path) -> None:
    config, _ = _tls_collector_config(tmp_path)
    with served(tmp_path / "collector", sqlite_url, config=config, scheme="https") as api:
        agent = AgentProcess(tmp_path / "agent", api.url, api.agent_token)  # no ca_file: the system's CAs
        try:
            _emit(agent, 5, None)
            agent.start()
            log = agent.workdir / "agent.log"
            wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in log.read_text(errors="replace"), 60,
                     "the agent to refuse the collector's certificate")
        finally:
            agent.close()
        assert api.stored() == {}
        status = run_cli("agent", "spool", "status", env=agent.env, cwd=agent.workdir)
        depth = int(next(line.split()[1] for line in status.splitlines() if line.startswith("depth")))
        assert depth >= 5  # the five events (and perhaps a heartbeat) wait for a collector the agent trusts
