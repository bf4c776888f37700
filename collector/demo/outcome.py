"""What the rules made of the bank: the alerts the collector stored, set against the planted scenarios' ground
truth — which insiders were found and by which rules, which were missed, which wait for a rule kind this
checkout does not have yet, and the false alerts (alerts that belong to no planted scenario).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import select

from collector.demo.bank import TITLES, DemoBank
from rules.scenario import Report, score

SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
PENDING_WHY = {"linkage": "needs the `linkage` rule kind (loan-fraud linkage), not in this checkout yet"}


@dataclass(frozen=True, slots=True)
class SeenAlert:
    """An alert as the collector stored it: what scoring and the table need."""

    alert_id: str
    rule_id: str
    severity: str
    staff_id: str | None
    group: str
    ts: dt.datetime
    summary: str
    measures: dict[str, Any]


def read_alerts(engine: Any) -> list[SeenAlert]:
    from collector.db import alerts

    q = select(alerts.c.alert_id, alerts.c.rule_id, alerts.c.severity, alerts.c.staff_id, alerts.c.group_key,
               alerts.c.ts, alerts.c.summary, alerts.c.measures).order_by(alerts.c.ts, alerts.c.id)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [SeenAlert(r[0], r[1], r[2], r[3], r[4], r[5] if r[5].tzinfo else r[5].replace(tzinfo=dt.timezone.utc),
                      r[6], json.loads(r[7]) if r[7] else {}) for r in rows]


@dataclass
class Outcome:
    bank: DemoBank
    alerts: list[SeenAlert]
    report: Report

    @property
    def all_found(self) -> bool:
        return not self.report.missed

    def rows(self) -> list[tuple[str, str, str, list[SeenAlert]]]:
        """(scenario name, who, FOUND / MISSED / PENDING, its alerts) in the order the scenarios were planted."""
        out = []
        for p in self.bank.scenario.planted:
            found = self.report.found.get(p.name, [])
            state = "FOUND" if found else ("PENDING" if p.name in self.report.pending else "MISSED")
            who = self.bank.person(p.who) if not p.who.startswith("db:") else f"account {p.who[3:]}"
            out.append((p.name, who, state, found))
        return out


def outcome(bank: DemoBank, alerts: list[SeenAlert], kinds: set[str]) -> Outcome:
    return Outcome(bank, alerts, score(bank.scenario, alerts, kinds=kinds))


def _short(rule_id: str) -> str:
    return rule_id.removeprefix("custos.")


def print_outcome(out: IO[str], result: Outcome) -> None:
    report, bank = result.report, result.bank
    out.write(f"\n{'planted insider scenario':<36} {'who':<38} {'result':<8} alerts by rule\n")
    for name, who, state, found in result.rows():
        by_rule = Counter(_short(a.rule_id) for a in found)
        rules = ", ".join(f"{r} {n}" if n > 1 else r for r, n in by_rule.most_common())
        if state == "PENDING":
            needs = next(p.needs for p in bank.scenario.planted if p.name == name) or ""
            rules = PENDING_WHY.get(needs, f"needs the `{needs}` rule kind")
        elif state == "MISSED":
            rules = "no alert"
        out.write(f"{TITLES.get(name, name):<36} {who:<38} {state:<8} {rules}\n")
        if found:
            top = max(found, key=lambda a: (SEVERITY_RANK.get(a.severity, 0), -a.ts.timestamp()))
            summary = top.summary if len(top.summary) <= 200 else top.summary[:199] + "…"
            out.write(f"{'':<36} └ {top.severity}: {summary}\n")
    n_false = len(report.false_alerts)
    planted = len(bank.scenario.planted)
    counted = planted - len(report.pending)
    out.write(f"\n{len(report.found)} of {counted} planted scenarios found"
              + (f" ({len(report.pending)} pending)" if report.pending else "")
              + f"; {len(result.alerts)} alerts in all; {n_false} false alert{'' if n_false == 1 else 's'} in "
              f"{report.staff_days:,} staff-days ({report.false_per_1000_staff_days:.2f} per 1,000)\n")
    for a in report.false_alerts:
        out.write(f"  false: {_short(a.rule_id)}: {a.summary}\n")
