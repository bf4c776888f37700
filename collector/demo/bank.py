"""The demo's bank: rules/scenario.py's synthetic bank (60 staff in five teams, 50,000 customers, fourteen days,
six planted insiders with their ground truth), each event assigned to the agent that would have seen it, and the
files a site gives custos about itself: the staff directory, work assignments and the rules' site context.

Events keep their own historical timestamps; the rule engine judges them by those, so fourteen days can be
replayed in well under a minute.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from agent.errors import CustosError
from agent.events import Envelope
from rules.scenario import CONTEXT, TZ, Scenario, generate

DAYS = 14
CUSTOMERS = 50_000
ASSIGNMENT_SOURCE = "loan_portfolio"
TITLES = {  # planted scenario → the words the summary table uses
    "night_bulk_reader": "night-time bulk reader",
    "slow_leaker": "slow leaker under every fixed limit",
    "usb_after_bulk_read": "export to USB after a bulk read",
    "leaver_after_end_date": "leaver reading after the end date",
    "shared_account_new_host": "shared account from a new host",
    "loan_fraud_link": "loan-fraud link",
}


class DemoError(CustosError):
    """A part of the demo could not be set up or did not come up; the message says which and what to do."""


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent of the demo site: its credential name (also its agent_id), the kind of credential, and whether
    its events of a day are sent before the others'. Staff workstations go first: their `db.session` events tie
    a database connection to the person at the keyboard, and the rules need that tie before the proxy's queries
    on the same connection arrive."""

    name: str
    credential: Literal["agent", "source"]
    first: bool
    what: str


AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec("ws-hq", "agent", True, "staff workstations at headquarters (loans, call centre, risk, IT)"),
    AgentSpec("ws-branch-north", "agent", True, "staff workstations at the northern branch (collections)"),
    AgentSpec("audit-core", "agent", True, "the audit-log tailer on the core database"),
    AgentSpec("proxy-core", "agent", False, "the PostgreSQL proxy in front of the core database"),
    AgentSpec("lending", "source", False, "the lending system's business events (a business source)"),
)
BRANCH_TEAMS = frozenset({"collections"})  # their workstations are at the branch (scenario: 10.2.0.0/16)


def monday_of(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def default_start(today: dt.date) -> dt.date:
    """The Monday two weeks before this week's: fourteen days that ended last Sunday at midnight."""
    return monday_of(today) - dt.timedelta(days=DAYS)


@dataclass
class DemoBank:
    seed: int
    start: dt.date
    scenario: Scenario
    by_day: list[dict[str, list[Envelope]]]  # day → agent name → its events of that day, in time order

    @property
    def days(self) -> int:
        return len(self.by_day)

    @property
    def total(self) -> int:
        return len(self.scenario.events)

    @property
    def end(self) -> dt.datetime:
        """Local midnight after the last day, in UTC: every event of the bank is before it."""
        midnight = dt.datetime.combine(self.start + dt.timedelta(days=self.days), dt.time(0), TZ)
        return midnight.astimezone(dt.timezone.utc)

    @property
    def teams(self) -> list[str]:
        return sorted({p.team for p in self.scenario.people if p.team})

    def person(self, staff_id: str) -> str:
        p = next((p for p in self.scenario.people if p.staff_id == staff_id), None)
        return f"{p.name} ({staff_id}, {p.team})" if p is not None and p.name else staff_id

    def day_label(self, day: int) -> str:
        return (self.start + dt.timedelta(days=day)).strftime("%a %d %b")

    def write_directory(self, path: Path) -> int:
        """The staff directory as an HR export: the CSV `custos directory import` reads."""
        columns = ["staff_id", "name", "team", "manager", "end_date", "db_users", "os_users", "kind", "shift"]
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for p in self.scenario.people:
                w.writerow({"staff_id": p.staff_id, "name": p.name, "team": p.team or "", "manager": p.manager or "",
                            "end_date": p.end_date.isoformat() if p.end_date else "",
                            "db_users": ";".join(p.db_users), "os_users": ";".join(p.os_users), "kind": p.kind,
                            "shift": p.shift or ""})
        return len(self.scenario.people)

    def assignments(self) -> list[tuple[str, str]]:
        """(staff id, customer key) of every loan officer's and collector's portfolio, for need-to-know rules."""
        return sorted((sid, key) for sid, keys in self.scenario.assignments.items() for key in keys)

    def write_site_rules(self, directory: Path, without: tuple[str, ...] = ()) -> Path:
        """The site's rule directory: its context (sites, calendars, lists) beside the built-in rules, and the
        rules left out (`without`, rule ids) as overrides."""
        directory.mkdir(parents=True, exist_ok=True)
        context = dict(CONTEXT)
        if without:
            context["overrides"] = {rule_id: {"enabled": False} for rule_id in without}
        path = directory / "context.yaml"
        path.write_text("# The demo bank's context: where its networks are, when its teams work, its batch account.\n"
                        + yaml.safe_dump({"context": context}, sort_keys=False), encoding="utf-8")
        return path


def agent_for(event: Envelope, teams: dict[str, str | None]) -> str:
    """The agent whose spool the event goes into: the proxy, the audit tailer, the lending system, or the
    workstation agent of the site where the person sits."""
    name = event.agent_id
    if name.startswith("ws-"):
        return "ws-branch-north" if teams.get(name.removeprefix("ws-")) in BRANCH_TEAMS else "ws-hq"
    if name in {a.name for a in AGENTS}:
        return name
    raise DemoError(f"the scenario made an event of agent {name!r}, which the demo site does not run; "
                    "add it to collector/demo/bank.py AGENTS")


def build_bank(seed: int, start: dt.date | None = None, *, now: dt.datetime | None = None) -> DemoBank:
    """The bank of `seed` over the fourteen days from the Monday of `start`'s week (default: the two weeks that
    ended last Sunday)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    first = monday_of(start) if start is not None else default_start(now.astimezone(TZ).date())
    end = dt.datetime.combine(first + dt.timedelta(days=DAYS), dt.time(0), TZ)
    if end > now:
        raise DemoError(f"--start {first}: its fourteen days end on {end:%Y-%m-%d}, which is not past yet; give a "
                        f"day at least two weeks ago, such as {default_start(now.astimezone(TZ).date())}")
    scenario = generate(seed=seed, days=DAYS, start=first, customers=CUSTOMERS, loan_fraud=True)
    teams = {p.staff_id: p.team for p in scenario.people}
    by_day: list[dict[str, list[Envelope]]] = [{} for _ in range(DAYS)]
    for event in scenario.events:
        day = min(max((event.ts.astimezone(TZ).date() - first).days, 0), DAYS - 1)
        by_day[day].setdefault(agent_for(event, teams), []).append(event)
    return DemoBank(seed, first, scenario, by_day)
