from __future__ import annotations

from pathlib import Path

from agent.config import load_config
from agent.runtime import Agent, spool_events
from tests.helpers.procs import wait_for
from tests.helpers.sample import query_event


def make_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "agent.toml"
    path.write_text('[heartbeat]\ninterval = 0\n[ship]\nbackoff_max = "100ms"\n')
    env = {"CUSTOS_SPOOL_DIR": str(tmp_path / "spool"), "CUSTOS_COLLECTOR_URL": "http://127.0.0.1:9",
           "CUSTOS_AGENT_TOKEN": "t"}
    return load_config(path, env)


def test_only_one_agent_ships_a_spool_and_another_takes_over_when_it_stops(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    first = Agent(config)
    second = Agent(config, lock_retry=0.02)
    first.start()
    second.start()
    try:
        assert first.shipper is not None
        assert second.shipper is None  # it writes to the spool but leaves shipping to the first
        assert spool_events(second.spool, [query_event()]) == 1
    finally:
        first.stop(drain_seconds=0.1)
    try:
        wait_for(lambda: second.shipper is not None, 10, "the second agent to take over shipping")
    finally:
        second.stop(drain_seconds=0.1)
