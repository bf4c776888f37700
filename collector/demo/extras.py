"""The parts of custos the demo uses when this checkout has them, and says are coming when it does not.

Each is found by its module, never assumed, so that the demo runs on any checkout and picks a part up the day it
lands:

- the web UI and its users (`collector.web`, `collector.users`): demo log-ins for an analyst and a manager;
- the weekly summary (`collector.weekly_jobs`): each team's summary of the bank's second week, written as HTML;
- the business-event intake (`POST /api/v1/business-events`): where the lending system sends its records when
  the collector serves it; otherwise the lending system's events travel like any agent's;
- the `linkage` rule kind (rules/kinds): without it, the loan-fraud scenario is reported as pending.

These are the extension points: a part whose interface changes is adapted here and nowhere else in the demo.
"""

from __future__ import annotations

import importlib.util
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from agent.events import Envelope
from collector.demo.bank import DemoError

BUSINESS_PATH = "/api/v1/business-events"
ANALYST_USER = "analyst"
MANAGER_TEAM = "loans"  # two of the planted insiders sit in loans: the manager has something to look at


def has(module: str) -> bool:
    """Whether `module` can be imported from this checkout (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def has_web_ui() -> bool:
    return has("collector.web") and has("collector.users")


# -- the web UI's users ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    name: str
    role: str
    team: str | None
    password: str

    def describe(self) -> str:
        sees = f"sees team {self.team} only" if self.team else "sees every alert"
        return f"{self.name} / {self.password}  ({self.role}, {sees})"


def create_demo_users(engine: Any) -> list[Login]:
    """An analyst and the loans team's manager with fresh random passwords, when the UI exists; else none."""
    if not has("collector.users"):
        return []
    from collector.users import create_user

    logins = [Login(ANALYST_USER, "analyst", None, secrets.token_urlsafe(12)),
              Login(f"manager-{MANAGER_TEAM}", "manager", MANAGER_TEAM, secrets.token_urlsafe(12))]
    for login in logins:
        create_user(engine, login.name, login.role, login.password, team=login.team)
    return logins


# -- the weekly summary ------------------------------------------------------------------------------------------


def has_weekly() -> bool:
    return has("collector.weekly_jobs")


def write_weekly_summaries(engine: Any, config_path: Path, teams: list[str], week: str, outdir: Path) -> list[Path]:
    """Each team's weekly access summary of `week` (kept in the UI too), as HTML files in `outdir`."""
    from collector.config import load_config
    from collector.weekly_jobs import make_summary

    config = load_config(config_path)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for team in teams:
        _, html = make_summary(engine, config, team, week, keep=True)
        path = outdir / f"weekly-{team}-{week}.html"
        path.write_text(html, encoding="utf-8")
        written.append(path)
    return written


# -- business events ---------------------------------------------------------------------------------------------


def serves_business_records(openapi: dict[str, Any]) -> bool:
    """Whether the collector (its OpenAPI document) takes business records at their own intake."""
    return BUSINESS_PATH in openapi.get("paths", {})


def business_record(event: Envelope) -> dict[str, Any]:
    """The lending system's flat record of a `business.*` event: type, time, its own id, and the payload's
    fields (the customer already as the site's keyed hash)."""
    payload = msgspec.to_builtins(event.payload)  # type: ignore[attr-defined]
    kind = str(event.__struct_config__.tag)
    return {"type": kind.removeprefix("business."), "ts": event.ts.isoformat(), "id": event.id, **payload}


class RecordFeed:
    """The lending system posting its records to the collector's business-event intake, as it would in a bank:
    no agent in between. Posted records are acknowledged at once, so `shipped` is what was written."""

    def __init__(self, http: Any, token: str) -> None:
        self.http, self.token = http, token
        self.written = 0

    def put(self, events: list[Envelope]) -> int:
        for i in range(0, len(events), 1000):
            chunk = [business_record(e) for e in events[i:i + 1000]]
            answer = self.http.post(BUSINESS_PATH, json={"records": chunk},
                                    headers={"Authorization": f"Bearer {self.token}"})
            if answer.status_code != 200:
                raise DemoError(f"the business-event intake answered {answer.status_code}: {answer.text[:300]}")
            refused = answer.json().get("rejected") or []
            if refused:
                raise DemoError(f"the business-event intake refused {len(refused)} records, the first because: "
                                f"{refused[0].get('reason')}")
        self.written += len(events)
        return len(events)

    def shipped(self) -> int:
        return self.written

    def close(self) -> None:
        pass


# -- rule kinds --------------------------------------------------------------------------------------------------


def rule_ids() -> set[str]:
    """The ids of the built-in rules."""
    from rules.parse import load_rules

    return {r.id for r in load_rules().rules}


def rule_kinds(rule_dirs: list[Path]) -> set[str]:
    """The kinds of the enabled rules the collector runs (built-in and the site's)."""
    from rules.parse import load_rules

    return {r.kind for r in load_rules([str(d) for d in rule_dirs]).rules if r.enabled}
