"""Realistic data for UI tests and screenshots: the rule engine's synthetic bank (rules/scenario.py) over the
last two complete weeks, stored as the collector stores it — directory, assignments, events and the alerts the
built-in rules raise on them — plus UI users."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict

from sqlalchemy import Engine

from collector.alerts import AlertStore
from collector.rules_state import import_assignments, import_directory
from collector.store import EventStore
from collector.users import create_user
from rules.parse import load_rules
from rules.scenario import Scenario, generate, replay_scenario

PASSWORD = "correct horse battery"


def scenario_start(today: dt.date) -> dt.date:
    """The Monday two weeks before this week's: the scenario's 14 days are the last two complete weeks."""
    return today - dt.timedelta(days=today.weekday() + 14)


def seed_scenario(engine: Engine, *, seed: int = 7, today: dt.date | None = None) -> Scenario:
    today = today or dt.datetime.now(dt.timezone.utc).date()
    scn = generate(seed=seed, days=14, start=scenario_start(today))
    people = [dataclasses.replace(p, email=f"{p.staff_id}@bank.example") if p.staff_id.endswith("mgr") else p
              for p in scn.people]
    import_directory(engine, people)
    import_assignments(engine, [(s, k) for s, keys in scn.assignments.items() for k in keys], "portfolio")
    by_agent = defaultdict(list)
    for ev in scn.events:
        by_agent[ev.agent_id].append(ev)
    store = EventStore(engine)
    for agent, evs in by_agent.items():
        for i in range(0, len(evs), 5000):
            store.insert(evs[i:i + 5000], agent=agent)
    alerts, _ = replay_scenario(scn, load_rules())
    AlertStore(engine).save(alerts)
    return scn


def add_users(engine: Engine) -> None:
    create_user(engine, "ana", "analyst", PASSWORD)
    create_user(engine, "adm", "admin", PASSWORD)
    create_user(engine, "mona", "manager", PASSWORD, team="risk", email="mona@bank.example")
    create_user(engine, "lars", "manager", PASSWORD, team="loans", email="lars@bank.example")
