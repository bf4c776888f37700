"""Judging agents by their heartbeats and their clocks: an insider who stops the agent, changes the clock, fills
the disk or edits the configuration is an alert.

Per agent credential the newest heartbeat is kept (`agent_heartbeats`); each new one is compared with it:

- `dropped` rising: the spool overflowed and its policy discarded events (`custos.spool_overflow`);
- `config_hash` changing: the agent's configuration was edited (`custos.agent_config_changed`);
- the wall clock moving further or less far than the agent's monotonic uptime between two heartbeats of one
  process: the clock was changed while the agent ran (`custos.agent_clock_changed`);
- `monotonic` going back: the spool that counts heartbeats was replaced (`custos.heartbeat_counter_back`).

Each batch also says when the agent sent it by its own clock (the `Custos-Sent-At` header): further from the
collector's clock than `max_clock_skew` is `custos.agent_clock_skew` (at most one alert an hour per agent).
An agent that misses `silent_after_beats` of its own heartbeat intervals in a row is `custos.agent_silent_beats`,
looked for on schedule (`silent`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, or_, select, update

from agent.events import AgentHeartbeat, Envelope
from collector.alerts import AlertStore
from collector.db import agent_heartbeats
from collector.integrity import integrity_alert, upsert
from rules.alerts import Alert

log = logging.getLogger("custos.heartbeats")
DEFAULT_INTERVAL = 60.0  # an agent that does not say its interval beats at the agent's default
MAX_BIGINT = 2**63 - 1  # counts are unbounded in events, not in the table (a counter that large is itself bogus)


@dataclass(frozen=True, slots=True)
class Beat:
    event_id: str
    host: str
    ts: dt.datetime
    received_at: dt.datetime
    monotonic: int
    agent_clock: dt.datetime | None
    uptime_s: float
    interval_s: float | None
    dropped: int
    config_hash: str | None

    @classmethod
    def of(cls, e: AgentHeartbeat, received_at: dt.datetime) -> Beat:
        p = e.payload
        return cls(e.id, e.host, e.ts, received_at, p.monotonic, p.agent_clock, p.uptime_s, p.interval_s, p.dropped,
                   p.config_hash)

    def row(self) -> dict[str, object]:
        return {"host": self.host, "event_id": self.event_id, "received_at": self.received_at,
                "monotonic": min(self.monotonic, MAX_BIGINT), "agent_clock": self.agent_clock,
                "uptime_s": self.uptime_s, "interval_s": self.interval_s,
                "dropped": min(self.dropped, MAX_BIGINT), "config_hash": self.config_hash}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} minutes" if abs(seconds) >= 90 else f"{seconds:.0f} seconds"


def judge(agent: str, prev: Beat | None, beat: Beat, max_skew: float) -> list[Alert]:
    """What `beat` says that `prev` (the agent's newest heartbeat before it, if any) did not."""
    out: list[Alert] = []

    def alert(rule: str, title: str, summary: str, **measures: object) -> None:
        out.append(integrity_alert(rule, title, agent, anchor=beat.event_id, ts=beat.ts, evidence=[beat.event_id],
                                   summary=f"Agent {agent} on {beat.host}: {summary}.", measures=measures))

    before = prev.dropped if prev is not None and beat.monotonic > prev.monotonic else 0
    if beat.dropped > before:
        alert("custos.spool_overflow", "An agent's spool overflowed",
              f"its spool overflowed and discarded {beat.dropped - before} events ({beat.dropped} in all): the "
              "disk filled or the collector was out of reach too long", dropped=beat.dropped - before)
    if prev is None:
        pass
    elif beat.monotonic < prev.monotonic:
        alert("custos.heartbeat_counter_back", "An agent's heartbeat counter went back",
              f"its heartbeat counter went back from {prev.monotonic} to {beat.monotonic}: its spool was replaced",
              monotonic=beat.monotonic, previous=prev.monotonic)
    else:
        if prev.config_hash and beat.config_hash and beat.config_hash != prev.config_hash:
            alert("custos.agent_config_changed", "An agent's configuration changed",
                  f"its configuration changed (hash {prev.config_hash} → {beat.config_hash})",
                  previous=prev.config_hash, config_hash=beat.config_hash)
        same_process = beat.uptime_s >= prev.uptime_s
        if same_process and beat.agent_clock is not None and prev.agent_clock is not None:
            drift = (beat.agent_clock - prev.agent_clock).total_seconds() - (beat.uptime_s - prev.uptime_s)
            if abs(drift) > max_skew:
                way = "forward" if drift > 0 else "back"
                alert("custos.agent_clock_changed", "An agent's clock was changed",
                      f"its clock was moved {way} by {_minutes(abs(drift))} while it ran", drift_s=round(drift, 1))
    return out


def observe(engine: Engine, agent: str, events: Sequence[tuple[int, Envelope]], inserted: Collection[str],
            max_skew: float, now: dt.datetime | None = None) -> list[str]:
    """Judge the new heartbeats of a batch against the agent's newest, keep the newest; returns alert ids."""
    with engine.begin() as conn:
        out = judge_batch(conn, agent, events, inserted, max_skew, now)
    return AlertStore(engine).save(out) if out else []


def judge_batch(conn: Connection, agent: str, events: Sequence[tuple[int, Envelope]], inserted: Collection[str],
                max_skew: float, now: dt.datetime | None = None) -> list[Alert]:
    """`observe` in the transaction of `conn` (the one that stored the batch, on ingest); the alerts to store once
    it commits. A batch without heartbeats (almost every one) costs one pass over its events."""
    beats = [e for _, e in events if isinstance(e, AgentHeartbeat)]
    if not beats:
        return []
    new = set(inserted)
    now = now or dt.datetime.now(dt.timezone.utc)
    # A heartbeat without a counter (0: an older agent, or one made up by a replay) cannot be placed among the
    # agent's own and is not judged.
    judged = [Beat.of(e, now) for e in beats if e.id in new and e.payload.monotonic > 0]
    if not judged:
        return []
    out: list[Alert] = []
    q = select(agent_heartbeats).where(agent_heartbeats.c.agent == agent)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    prev = None if row is None else Beat(row.event_id, row.host, row.received_at, row.received_at,
                                         int(row.monotonic), row.agent_clock, float(row.uptime_s),
                                         row.interval_s, int(row.dropped), row.config_hash)
    newest = prev
    for beat in judged:
        out += judge(agent, newest, beat, max_skew)
        newest = beat
    if newest is not None and newest is not prev:
        upsert(conn, conn.engine, agent_heartbeats, {"agent": agent}, {**newest.row(), "silent_alerted": None})
    return out


def skewed(engine: Engine, agent: str, sent_at: str | None, max_skew: float,
           now: dt.datetime | None = None) -> list[str]:
    """Alert when the agent's clock as it sent a batch is further than `max_skew` from the collector's."""
    if not sent_at:
        return []
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        theirs = dt.datetime.fromisoformat(sent_at)
    except ValueError:
        return []
    if theirs.tzinfo is None:
        return []
    skew = (theirs - now).total_seconds()
    if abs(skew) <= max_skew:
        return []
    way = "ahead of" if skew > 0 else "behind"
    return AlertStore(engine).save([integrity_alert(
        "custos.agent_clock_skew", "An agent's clock is wrong", agent, anchor=now.strftime("%Y-%m-%dT%H"), ts=now,
        summary=f"Agent {agent}'s clock is {_minutes(abs(skew))} {way} the collector's (limit "
                f"{_minutes(max_skew)}): events it reports carry times off by as much",
        measures={"skew_s": round(skew, 1)})])


def silent(engine: Engine, beats: float, now: dt.datetime | None = None) -> list[str]:
    """Alert once for every agent whose heartbeats stopped: `beats` of its own intervals without one."""
    now = now or dt.datetime.now(dt.timezone.utc)
    out: list[Alert] = []
    with engine.begin() as conn:
        rows = list(conn.execute(select(agent_heartbeats).where(or_(
            agent_heartbeats.c.silent_alerted.is_(None),
            agent_heartbeats.c.silent_alerted != agent_heartbeats.c.received_at))))
        for r in rows:
            interval = float(r.interval_s or DEFAULT_INTERVAL)
            quiet = (now - r.received_at).total_seconds()
            if quiet < interval * beats:
                continue
            out.append(integrity_alert(
                "custos.agent_silent_beats", "Agent silent", r.agent, anchor=r.received_at.isoformat(), ts=now,
                evidence=[r.event_id], summary=f"Agent {r.agent} on {r.host} has sent no heartbeat for "
                f"{_minutes(quiet)} ({quiet / interval:.0f} of its {interval:.0f}-second intervals): stopped, "
                "killed, or cut off from the collector", measures={"quiet_s": round(quiet), "interval_s": interval}))
            conn.execute(update(agent_heartbeats).where(agent_heartbeats.c.agent == r.agent,
                                                        agent_heartbeats.c.received_at == r.received_at)
                         .values(silent_alerted=r.received_at))
    if out:
        for a in out:
            log.warning("%s", a.summary)
    return AlertStore(engine).save(out) if out else []
