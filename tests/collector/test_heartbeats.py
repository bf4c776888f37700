"""An insider who kills the agent, changes its clock, fills its disk or edits its configuration: each is an alert,
from the agent's own heartbeats and clock, within the configured time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine

from agent import events as ev
from agent.heartbeat import Heartbeat
from agent.runtime import spool_events
from agent.ship import ShipConfig, Shipper
from agent.spool import Spool
from collector.alerts import AlertStore, StoredAlert
from collector.heartbeats import Beat, judge, observe
from tests.helpers.api import Served, query_event
from tests.helpers.procs import AgentProcess, wait_for

T0 = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.timezone.utc)


def beat(n: int, *, at: float = 0.0, uptime: float | None = None, clock_shift: float = 0.0, dropped: int = 0,
         config: str = "c1") -> Beat:
    when = T0 + dt.timedelta(seconds=at)
    return Beat(f"hb{n}", "ws-1", when, when, n, when + dt.timedelta(seconds=clock_shift),
                at if uptime is None else uptime, 60.0, dropped, config)


def rules(prev: Beat | None, new: Beat) -> list[str]:
    return [a.rule_id for a in judge("agent-1", prev, new, max_skew=120)]


def test_steady_heartbeats_say_nothing() -> None:
    assert rules(beat(1), beat(2, at=60)) == []
    assert rules(None, beat(1)) == []


def test_rising_dropped_count_is_an_overflow() -> None:
    assert rules(beat(1, dropped=3), beat(2, at=60, dropped=10)) == ["custos.spool_overflow"]
    assert rules(None, beat(1, dropped=3)) == ["custos.spool_overflow"]  # it overflowed before we heard of it
    assert rules(beat(1, dropped=3), beat(2, at=60, dropped=3)) == []


def test_a_new_configuration_hash_is_a_change() -> None:
    assert rules(beat(1), beat(2, at=60, config="c2")) == ["custos.agent_config_changed"]


def test_a_clock_moved_while_the_agent_runs_is_a_change() -> None:
    assert rules(beat(1), beat(2, at=60, clock_shift=-3600)) == ["custos.agent_clock_changed"]
    assert rules(beat(1), beat(2, at=60, clock_shift=600)) == ["custos.agent_clock_changed"]
    assert rules(beat(1), beat(2, at=60, clock_shift=30)) == []  # within the limit
    assert rules(beat(1, uptime=500), beat(2, at=60, uptime=1, clock_shift=-3600)) == []  # a restart: uptime reset


def test_a_heartbeat_counter_going_back_means_a_new_spool() -> None:
    assert rules(beat(7), beat(2, at=60)) == ["custos.heartbeat_counter_back"]


def test_heartbeats_without_a_counter_are_not_judged(engine: Engine) -> None:
    def hb(n: int, dropped: int) -> ev.Envelope:
        return ev.new_event(ev.AgentHeartbeat, ev.HeartbeatPayload(
            version="1", uptime_s=60, spool_depth=0, spool_bytes=0, dropped=dropped, dead_lettered=0, monotonic=n),
            source=ev.Source(type="agent"))

    counted, replayed = hb(5, 0), hb(0, 9)  # a replay's made-up heartbeat: no counter, a dropped count of its own
    assert observe(engine, "agent-1", [(0, counted), (1, replayed)], {counted.id, replayed.id}, 120) == []


# -- against a real collector ----------------------------------------------------------------------------------


INTEGRITY = 'silent_after_beats = 3\nmax_clock_skew = "2m"\n'


@pytest.fixture
def api(integrity_api: Served) -> Served:
    return integrity_api


def shipper(api: Served, spool: Spool, clock_offset: float = 0.0) -> Shipper:
    import time

    return Shipper(spool, ShipConfig(url=api.url, token=api.agent_token), clock=lambda: time.time() + clock_offset)


def alerts(api: Served, rule: str) -> list[StoredAlert]:
    return AlertStore(api.engine).list(rule_id=rule)


def test_a_spool_that_overflowed_is_an_alert_with_the_next_heartbeat(api: Served, tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db", max_events=5) as spool:
        hb = Heartbeat(spool, agent_id="ws-1", interval=60)
        spool_events(spool, [hb.make()])
        ship = shipper(api, spool)
        assert ship.ship_once(force=True).done
        spool_events(spool, [query_event() for _ in range(8)])  # the disk is full: the oldest go
        spool_events(spool, [hb.make()])
        while spool.stats().depth:
            assert ship.ship_once(force=True).done
        ship.close()
    (found,) = alerts(api, "custos.spool_overflow")
    assert found.group_key == "agent-1" and found.measures["dropped"] == 3  # counted when the heartbeat was made


def test_an_edited_configuration_is_an_alert(api: Served, tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool_events(spool, [Heartbeat(spool, agent_id="ws-1", config_text=b"[spool]\n").make()])
        spool_events(spool, [Heartbeat(spool, agent_id="ws-1", config_text=b"[spool]\nmax_events = 1\n").make()])
        ship = shipper(api, spool)
        assert ship.ship_once(force=True).done
        ship.close()
    (found,) = alerts(api, "custos.agent_config_changed")
    assert "configuration changed" in found.summary


@pytest.mark.parametrize("offset, summary", [(-600, "10.0 minutes behind"), (30, None)])
def test_an_agent_clock_off_by_more_than_the_limit_is_an_alert(api: Served, tmp_path: Path, offset: float,
                                                               summary: str | None) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool_events(spool, [query_event()])
        ship = shipper(api, spool, clock_offset=offset)  # someone set the machine's clock back, or it drifted a little
        assert ship.ship_once(force=True).done
        ship.close()
    found = [a.summary for a in alerts(api, "custos.agent_clock_skew")]
    assert found == [] if summary is None else len(found) == 1 and summary in found[0]


def test_a_killed_agent_that_stays_down_is_silent_within_its_beats(api: Served, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[heartbeat]\ninterval = "1s"\n')
    agent = AgentProcess(tmp_path / "agent", api.url, api.agent_token, config=config)
    agent.start()
    try:
        wait_for(lambda: len([e for e in api.stored().values() if e["kind"] == "agent.heartbeat"]) >= 2, 60,
                 "two heartbeats from the agent")
        assert alerts(api, "custos.agent_silent_beats") == []
        agent.kill()  # SIGKILL: no goodbye; under systemd Restart=always it would be back in a second
        found = wait_for(lambda: alerts(api, "custos.agent_silent_beats"), 30, "the silence alert")
    finally:
        agent.close()
    (silence,) = found
    # 3 missed one-second beats, looked for every second: the alert comes within a few seconds, not minutes.
    assert 3 <= silence.measures["quiet_s"] <= 10
    assert silence.measures["interval_s"] == 1.0
