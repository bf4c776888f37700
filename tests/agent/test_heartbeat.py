"""The heartbeat carries what the collector needs to catch a stopped, starved or tampered agent."""

from __future__ import annotations

from pathlib import Path

from agent import events as ev
from agent.heartbeat import Heartbeat
from agent.spool import Spool


def test_heartbeats_count_up_for_the_life_of_the_spool_and_carry_clock_interval_and_config(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        first = Heartbeat(spool, agent_id="ws-1", config_text=b"a", interval=30).make()
    with Spool(tmp_path / "s.db") as spool:  # the agent restarted: the counter goes on
        second = Heartbeat(spool, agent_id="ws-1", config_text=b"b", interval=30).make()
    assert isinstance(first, ev.AgentHeartbeat) and isinstance(second, ev.AgentHeartbeat)
    assert (first.payload.monotonic, second.payload.monotonic) == (1, 2)
    assert first.payload.interval_s == 30
    assert first.payload.agent_clock is not None
    assert first.payload.config_hash != second.payload.config_hash


def test_an_agent_without_heartbeats_says_no_interval(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        hb = Heartbeat(spool, agent_id="ws-1", interval=0).make()
    assert isinstance(hb, ev.AgentHeartbeat) and hb.payload.interval_s is None
