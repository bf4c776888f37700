"""Working calendars: when a team (or one person, from the HR import) is expected to work, in its own time zone.

A pattern is text such as `mon-fri 08:00-18:00` or `sat,sun 22:00-06:00` (a shift past midnight belongs to the
day it starts). A calendar is one or more patterns, a time zone, holidays and a grace period either side.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.errors import RuleSyntaxError

DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_PATTERN = re.compile(r"^\s*([a-z,\- ]+?)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class WorkPattern:
    days: frozenset[int]
    start: int  # minutes after local midnight
    end: int  # may be <= start: the shift ends the next day

    @classmethod
    def parse(cls, text: str) -> WorkPattern:
        m = _PATTERN.match(text.lower())
        if not m:
            raise RuleSyntaxError(f'must look like "mon-fri 08:00-18:00", not {text!r}')
        days: set[int] = set()
        for part in m.group(1).replace(" ", "").split(","):
            lo, _, hi = part.partition("-")
            if lo not in DAYS or (hi and hi not in DAYS):
                raise RuleSyntaxError(f"unknown day in {text!r}; use mon tue wed thu fri sat sun")
            a, b = DAYS[lo], DAYS[hi or lo]
            days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
        h1, m1, h2, m2 = (int(g) for g in m.groups()[1:])
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
            raise RuleSyntaxError(f"not a time of day in {text!r}")
        return cls(frozenset(days), h1 * 60 + m1, h2 * 60 + m2)

    def covers(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or ((weekday - 1) % 7 in self.days
                                                                    and minute < self.end)


@dataclass(frozen=True)
class Calendar:
    """When work is expected; `working(t)` answers for a Unix time."""

    tz: str = "UTC"
    patterns: tuple[WorkPattern, ...] = (WorkPattern(frozenset(range(5)), 8 * 60, 18 * 60),)
    holidays: frozenset[dt.date] = frozenset()
    grace_minutes: int = 30
    _cache: dict[int, bool] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "_zone", zoneinfo.ZoneInfo(self.tz))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise RuleSyntaxError(f"unknown time zone {self.tz!r}; use an IANA name such as Europe/Vilnius",
                                  field="tz") from e
        if self.grace_minutes < 0:
            raise RuleSyntaxError("must be zero or more minutes", field="grace_minutes")

    @property
    def zone(self) -> dt.tzinfo:
        return self._zone  # type: ignore[attr-defined,no-any-return]

    def local(self, t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, self.zone)

    def _at(self, t: float) -> bool:
        local = self.local(t)
        if local.date() in self.holidays:
            return False
        minute = local.hour * 60 + local.minute
        return any(p.covers(local.weekday(), minute) for p in self.patterns)

    def working(self, t: float) -> bool:
        """True when `t` falls within working time, widened by the grace period either side."""
        key = int(t // 60)
        hit = self._cache.get(key)
        if hit is None:
            g = self.grace_minutes * 60
            hit = self._at(t) or (g > 0 and (self._at(t - g) or self._at(t + g)))
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def with_patterns(self, patterns: Iterable[str]) -> Calendar:
        """This calendar (zone, holidays, grace) with someone's own shift patterns instead of the team's."""
        return Calendar(self.tz, tuple(WorkPattern.parse(p) for p in patterns), self.holidays, self.grace_minutes)


def calendar_from_mapping(doc: Mapping[str, Any], *, holidays: Iterable[dt.date] = ()) -> Calendar:
    """A calendar from `{tz, hours: [patterns], holidays: [dates], grace: 30m}`; errors name the field."""
    known = {"tz", "hours", "holidays", "grace_minutes"}
    for key in doc:
        if key not in known:
            raise RuleSyntaxError(f"unknown calendar field; use one of {', '.join(sorted(known))}", field=key)
    hours = doc.get("hours", ["mon-fri 08:00-18:00"])
    if isinstance(hours, str):
        hours = [hours]
    try:
        patterns = tuple(WorkPattern.parse(str(h)) for h in hours)
    except RuleSyntaxError as e:
        raise RuleSyntaxError(e.reason, field="hours") from e
    days: set[dt.date] = set(holidays)
    for h in doc.get("holidays", []) or []:
        try:
            days.add(dt.date.fromisoformat(str(h)))
        except ValueError as e:
            raise RuleSyntaxError(f"must be a date such as 2026-12-25, not {h!r}", field="holidays") from e
    grace = doc.get("grace_minutes", 30)
    if not isinstance(grace, int) or isinstance(grace, bool):
        raise RuleSyntaxError("must be a whole number of minutes", field="grace_minutes")
    return Calendar(str(doc.get("tz", "UTC")), patterns, frozenset(days), grace)
