"""Backfill: evaluate stored history with fresh rule state, for a new or changed rule (`custos rules replay`).

Events are read in event-time order, so windows and baselines see history as it happened. The live rule state
is not touched. Absence rules are ticked on event time each minute of history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec
from sqlalchemy import Engine, and_, or_, select

from agent.events import Envelope, Event
from collector.db import events
from collector.rules_state import load_assignments, load_directory, merged_directory
from rules.alerts import Alert
from rules.engine import Engine as RuleEngine
from rules.parse import load_rules_strict
from rules.state import MemoryState

_decoder: msgspec.json.Decoder[Envelope] = msgspec.json.Decoder(Event)  # type: ignore[arg-type]


@dataclass
class ReplayResult:
    alerts: list[Alert]
    evaluated: int
    suppress: dict[str, float]


def replay(engine: Engine, rule_dirs: list[str | Path], since: dt.datetime, rule_ids: list[str] | None = None,
           *, page: int = 5000) -> ReplayResult:
    rs = load_rules_strict(rule_dirs)
    rules = [rs.by_id(r) for r in rule_ids] if rule_ids else rs.rules
    rules = [replace(r, enabled=True) for r in rules] if rule_ids else rules
    rs.context.set_directory(merged_directory(rs.context.directory, load_directory(engine)))
    state = MemoryState(load_assignments(engine))
    rule_engine = RuleEngine(rules, rs.context, state)
    out: list[Alert] = []
    evaluated = 0
    last: tuple[dt.datetime, int] | None = None
    next_tick: float | None = None
    started: float | None = None
    while True:
        q = select(events.c.ts, events.c.seq, events.c.body).where(events.c.ts >= since)
        if last is not None:
            q = q.where(or_(events.c.ts > last[0], and_(events.c.ts == last[0], events.c.seq > last[1])))
        with engine.connect() as conn:
            rows = conn.execute(q.order_by(events.c.ts, events.c.seq).limit(page)).all()
        if not rows:
            break
        for ts, seq, body in rows:
            t = ts.timestamp()
            if started is None:
                started, next_tick = t, t + 60
            while next_tick is not None and t >= next_tick:
                out.extend(rule_engine.tick(next_tick, started))
                next_tick += 60
            out.extend(rule_engine.evaluate(_decoder.decode(body)))
            evaluated += 1
        last = (rows[-1][0], int(rows[-1][1]))
    return ReplayResult(out, evaluated, {r.id: r.suppress for r in rules})
