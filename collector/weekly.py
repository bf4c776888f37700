"""The weekly access summary of a team, for its manager: per person — queries, sensitive rows read, distinct
customers touched, exports and removable-media copies, off-hours share, alerts and how they were closed; the
team's totals and the change from the week before; the three things most worth attention, in words; inline
charts. Flagged people get an attestation the manager answers (confirm / question).

    data = build_week(engine, "loans", "2026-W47", zone)
    html = render(data)

Figures come from the stored events and alerts; no customer identifier appears (customers are counted only).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy import Engine, select

from agent.errors import CustosError
from collector import activity, charts
from collector.db import alerts
from collector.triage import SEVERITY_ORDER, STATUS_WORDS

TEMPLATES = Path(__file__).parent / "web" / "templates"


class WeekError(CustosError):
    """A week or team that cannot be summarised."""


def parse_week(week: str) -> dt.date:
    """The Monday of an ISO week such as 2026-W47."""
    try:
        year, _, num = week.upper().partition("-W")
        return dt.date.fromisocalendar(int(year), int(num), 1)
    except ValueError as e:
        raise WeekError(f"{week!r} is not an ISO week; write it as 2026-W47") from e


def week_of(day: dt.date) -> str:
    y, w, _ = day.isocalendar()
    return f"{y}-W{w:02d}"


def last_week(now: dt.datetime, zone: dt.tzinfo) -> str:
    return week_of(now.astimezone(zone).date() - dt.timedelta(days=7))


def shift_week(week: str, weeks: int) -> str:
    return week_of(parse_week(week) + dt.timedelta(weeks=weeks))


@dataclass
class PersonWeek:
    staff_id: str
    name: str
    queries: int = 0
    sensitive_rows: int = 0
    customers: int = 0
    exports: int = 0
    removable: int = 0
    off_hours: int = 0
    alerts: int = 0
    alert_severity: str = ""
    closed: dict[str, int] = field(default_factory=dict)
    open_alerts: int = 0
    top_alert: str = ""

    @property
    def off_hours_share(self) -> float:
        return self.off_hours / self.queries if self.queries else 0.0


@dataclass
class TeamWeek:
    team: str
    week: str
    start: str
    end: str
    people: list[PersonWeek]
    totals: dict[str, float]
    previous: dict[str, float]
    attention: list[str]
    flagged: dict[str, str]  # staff id → why the manager is asked to confirm
    charts: dict[str, str] = field(default_factory=dict)

    def change(self, key: str) -> str:
        now, before = self.totals.get(key, 0), self.previous.get(key, 0)
        if not before:
            return "new" if now else "—"
        pct = 100 * (now - before) / before
        return f"{pct:+.0f}%"

    def as_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeamWeek:
        d = dict(d)
        d["people"] = [PersonWeek(**p) for p in d["people"]]
        return cls(**d)


TOTAL_KEYS = ("queries", "sensitive_rows", "customers", "exports", "removable", "alerts")


def _figures(engine: Engine, people: list[activity.PersonInfo], start: dt.datetime, end: dt.datetime,
             working: Callable[[str, dt.datetime], bool]) -> tuple[dict[str, PersonWeek], dict[str, float]]:
    by = {p.staff_id: PersonWeek(p.staff_id, p.display) for p in people}
    customers: dict[str, set[str]] = defaultdict(set)
    team_customers: set[str] = set()
    for f in activity.facts_of(engine, list(by), start, end):
        pw = by[f.staff_id or ""]
        if f.kind == "db.query":
            pw.queries += 1
            if f.sensitive:
                pw.sensitive_rows += f.rows
            customers[pw.staff_id].update(f.customers)
            if not working(pw.staff_id, f.ts):
                pw.off_hours += 1
        elif f.kind == "file.export" and f.identifiers:
            pw.exports += 1
            if f.destination == "removable":
                pw.removable += 1
    for sid, keys in customers.items():
        by[sid].customers = len(keys)
        team_customers |= keys
    with engine.connect() as conn:
        rows = conn.execute(select(alerts.c.staff_id, alerts.c.severity, alerts.c.status, alerts.c.title)
                            .where(alerts.c.staff_id.in_(list(by)), alerts.c.ts >= start, alerts.c.ts < end)).all()
    for sid, severity, status, title in rows:
        pw = by[sid]
        pw.alerts += 1
        if SEVERITY_ORDER.get(severity, 0) > SEVERITY_ORDER.get(pw.alert_severity, -1):
            pw.alert_severity, pw.top_alert = severity, title
        if status.startswith("closed"):
            pw.closed[STATUS_WORDS.get(status, status).removeprefix("closed: ")] = \
                pw.closed.get(STATUS_WORDS.get(status, status).removeprefix("closed: "), 0) + 1
        else:
            pw.open_alerts += 1
    totals: dict[str, float] = {k: float(sum(getattr(p, k) for p in by.values())) for k in TOTAL_KEYS}
    totals["customers"] = float(len(team_customers))
    totals["off_hours"] = float(sum(p.off_hours for p in by.values()))
    return by, totals


def _attention(team: str, now: dict[str, PersonWeek], before: dict[str, PersonWeek], totals: dict[str, float],
               previous: dict[str, float]) -> tuple[list[str], dict[str, str]]:
    """Candidate observations with a weight; the three heaviest, about different people where possible."""
    found: list[tuple[float, str, str]] = []  # (weight, staff id or "", sentence)
    for p in now.values():
        if p.open_alerts or (p.alerts and p.alert_severity in ("high", "critical")):
            weight = 10 + 5 * SEVERITY_ORDER.get(p.alert_severity, 0) + p.alerts
            state = f"{p.open_alerts} still open" if p.open_alerts else "all closed"
            found.append((weight, p.staff_id, f"{p.name} had {p.alerts} alert{'s' * (p.alerts != 1)} "
                                              f"({state}); the most serious: {p.top_alert} ({p.alert_severity})."))
        if p.removable:
            found.append((40 + p.removable, p.staff_id, f"{p.name} copied {p.removable} file"
                          f"{'s' * (p.removable != 1)} holding customer identifiers to removable media."))
        prev = before.get(p.staff_id)
        if prev is not None and p.customers >= 50 and p.customers >= 3 * max(prev.customers, 1):
            found.append((20 + min(p.customers / max(prev.customers, 1), 20), p.staff_id,
                          f"{p.name} touched {p.customers:,} distinct customers, "
                          f"{p.customers / max(prev.customers, 1):.0f}× the week before ({prev.customers:,})."))
        if p.queries >= 10 and p.off_hours_share >= 0.2:
            found.append((15 + 20 * p.off_hours_share, p.staff_id,
                          f"{p.name} ran {p.off_hours_share:.0%} of their queries outside working hours "
                          f"({p.off_hours} of {p.queries})."))
    rows_now, rows_before = totals.get("sensitive_rows", 0), previous.get("sensitive_rows", 0)
    if rows_before and rows_now >= 2 * rows_before and rows_now > 1000:
        found.append((12, "", f"The team read {rows_now / rows_before:.1f}× as many sensitive rows as the week "
                              f"before ({rows_now:,.0f} against {rows_before:,.0f})."))
    # The three heaviest, a person's second and third observation counting less, so that another person's
    # also gets a place when it matters.
    remaining = sorted(found, key=lambda f: -f[0])
    picked: list[tuple[float, str, str]] = []
    seen: Counter[str] = Counter()
    while remaining and len(picked) < 3:
        best = max(remaining, key=lambda f: f[0] * (0.6 ** seen[f[1]] if f[1] else 1.0))
        remaining.remove(best)
        picked.append(best)
        seen[best[1]] += 1
    flagged: dict[str, str] = {}
    for weight, sid, sentence in sorted(found, key=lambda f: -f[0]):
        if sid and (weight >= 15 or now[sid].alerts):
            flagged.setdefault(sid, sentence)
    if not picked:
        return [f"Nothing in team {team}'s access stood out this week."], flagged
    return [s for _, _, s in picked], flagged


def build_week(engine: Engine, team: str, week: str, zone: dt.tzinfo,
               working: Callable[[str, dt.datetime], bool] | None = None) -> TeamWeek:
    """The summary's figures for `team` in ISO `week` (days in `zone`)."""
    people = [p for p in activity.team_people(engine, team) if p.kind == "person"]
    if not people:
        raise WeekError(f"team {team!r} has nobody in the directory; import it with `custos directory import`")
    working = working or calendar_check(engine)
    monday = parse_week(week)
    start = dt.datetime.combine(monday, dt.time(0), zone)
    end = dt.datetime.combine(monday + dt.timedelta(days=7), dt.time(0), zone)
    now, totals = _figures(engine, people, start, end, working)
    before, previous = _figures(engine, people, start - dt.timedelta(days=7), start, working)
    attention, flagged = _attention(team, now, before, totals, previous)
    ordered = sorted(now.values(), key=lambda p: (-p.alerts, -p.sensitive_rows, p.name))
    tw = TeamWeek(team, week, monday.isoformat(), (monday + dt.timedelta(days=6)).isoformat(), ordered, totals,
                  previous, attention, flagged)
    top = sorted(now.values(), key=lambda p: -p.customers)[:15]
    tw.charts["customers"] = charts.bars([p.name for p in top], [p.customers for p in top],
                                         title="Distinct customers touched", highlight=[p.staff_id in flagged
                                                                                        for p in top])
    tw.charts["rows"] = charts.bars([p.name for p in top], [p.sensitive_rows for p in top],
                                    title="Sensitive rows read", highlight=[p.staff_id in flagged for p in top])
    return tw


def calendar_check(engine: Engine, rule_dirs: list[str] | None = None) -> Callable[[str, dt.datetime], bool]:
    """working(staff_id, when) from the rule engine's calendars (team hours, personal shifts, holidays)."""
    from collector.rules_state import load_directory, merged_directory
    from rules.parse import load_rules

    ctx = load_rules(rule_dirs or [], collect=True).context
    ctx.set_directory(merged_directory(ctx.directory, load_directory(engine)))

    def working(staff_id: str, when: dt.datetime) -> bool:
        return ctx.calendar_for(ctx.directory.people.get(staff_id)).working(when.timestamp())

    return working


_env: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _env
    if _env is None:
        _env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                  undefined=jinja2.StrictUndefined)
        _env.filters["num"] = lambda v: f"{v:,.0f}"
        _env.filters["pct"] = lambda v: f"{v:.0%}"
    return _env


def render_context(tw: TeamWeek, link: str | None = None) -> dict[str, Any]:
    closed = Counter[str]()
    for p in tw.people:
        closed.update(p.closed)
    return {"tw": tw, "link": link, "closed": dict(closed),
            "charts": {k: jinja2.utils.markupsafe.Markup(v) for k, v in tw.charts.items()}}


def render(tw: TeamWeek, *, link: str | None = None) -> str:
    """The summary as one self-contained HTML page (inline CSS and SVG), as e-mailed and saved by the CLI."""
    return environment().get_template("weekly_email.html").render(**render_context(tw, link))
