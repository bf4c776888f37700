"""Alerts: what a rule says when it fires, with the evidence and a sentence a manager understands."""

from __future__ import annotations

import datetime as dt
import hashlib
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.errors import RuleSyntaxError


@dataclass(frozen=True)
class Alert:
    """One alert. `alert_id` is derived from rule, group and the event that completed the rule, so evaluating
    the same events again (after a restart, or in a replay) yields the same id."""

    alert_id: str
    rule_id: str
    title: str
    severity: str
    tags: tuple[str, ...]
    group: str
    ts: dt.datetime  # when the rule was completed (event time)
    first_ts: dt.datetime
    last_ts: dt.datetime
    summary: str
    evidence: tuple[str, ...]  # event ids, oldest first
    staff_id: str | None = None
    person_name: str | None = None
    team: str | None = None
    measures: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "rule_id": self.rule_id, "title": self.title, "severity": self.severity,
            "tags": list(self.tags), "group": self.group, "ts": self.ts.isoformat(),
            "first_ts": self.first_ts.isoformat(), "last_ts": self.last_ts.isoformat(), "summary": self.summary,
            "evidence": list(self.evidence), "staff_id": self.staff_id, "person_name": self.person_name,
            "team": self.team, "measures": dict(self.measures),
        }


def alert_id(rule_id: str, group: str, anchor: str) -> str:
    return hashlib.sha256(f"{rule_id}\x1f{group}\x1f{anchor}".encode()).hexdigest()[:32]


def utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)


def check_template(template: str) -> None:
    """Refuse anything but plain `{name}` / `{name:,}` fields: a template never reaches into objects."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise RuleSyntaxError(f"not a valid summary template: {e}", field="summary") from e
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if not name.isidentifier() or conv:
            raise RuleSyntaxError(f"summary fields are plain names such as {{person}}, not {{{name}}}",
                                  field="summary")
        if spec and spec not in (",", ",.0f", ".1f", ".0f", ",.1f"):
            raise RuleSyntaxError(f"summary format {spec!r} is not allowed; use , or .1f", field="summary")


class _Values(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def render(template: str, values: Mapping[str, Any]) -> str:
    try:
        return string.Formatter().vformat(template, (), _Values(values))
    except (ValueError, TypeError):
        return template


def span_words(first: dt.datetime, last: dt.datetime, zone: dt.tzinfo) -> str:
    """`between 02:10 and 02:40 on Sunday 1 March` in the person's own time zone."""
    a, b = first.astimezone(zone), last.astimezone(zone)
    day = f"{a:%A} {a.day} {a:%B}"
    if a.date() != b.date():
        return f"between {a:%H:%M} on {day} and {b:%H:%M} on {b:%A} {b.day} {b:%B}"
    if (b - a).total_seconds() < 60:
        return f"at {a:%H:%M} on {day}"
    return f"between {a:%H:%M} and {b:%H:%M} on {day}"


def number(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() or v >= 100 else f"{v:,.1f}"
