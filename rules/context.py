"""What a site tells the rules about itself: named lists (honeytoken customers, service accounts, sensitive tables),
network sites (CIDR → name), working calendars per team, the staff directory and work assignments, and overrides
of built-in rule settings.

A site keeps these in `context.yaml` in its rule directory:

    context:
      lists: {honeytokens: [<64-hex customer key>, …], service_accounts: [svc_batch]}
      sites: {hq: [10.1.0.0/16], branch-7: [10.7.0.0/16]}
      calendars: {default: {tz: Europe/Vilnius, hours: [mon-fri 08:00-18:00], holidays: [2026-12-24]},
                  teams: {call_centre: {tz: Europe/Vilnius, hours: [mon-sun 07:00-23:00]}}}
      overrides: {custos.bulk_sensitive_read: {limit: 20000}}
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rules.calendar import Calendar, calendar_from_mapping
from rules.errors import RuleSyntaxError
from rules.identity import Directory, Person, person_from_mapping
from rules.yamlsafe import Located, load_yaml_file

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Context:
    """Site knowledge the rules read; built once and shared by every rule of an engine."""

    lists: dict[str, frozenset[str]] = field(default_factory=dict)
    sites: dict[str, tuple[Network, ...]] = field(default_factory=dict)
    calendar: Calendar = field(default_factory=Calendar)
    team_calendars: dict[str, Calendar] = field(default_factory=dict)
    directory: Directory = field(default_factory=Directory)
    assignments: dict[str, frozenset[str]] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    _site_cache: dict[str, str | None] = field(default_factory=dict, repr=False)
    _person_calendars: dict[str, Calendar] = field(default_factory=dict, repr=False)
    # compiled filters and allowlists, shared by the rules that have equal ones: (memo key, predicate)
    compiled: dict[Any, tuple[int, Any]] = field(default_factory=dict, repr=False)

    def shared(self, part: Any, compile: Any) -> tuple[int, Any]:
        """One compiled predicate per distinct filter or allowlist, with a key for per-event memos."""
        hit = self.compiled.get(part)
        if hit is None:
            hit = self.compiled[part] = (len(self.compiled), compile(self))
        return hit

    def list(self, name: str) -> frozenset[str]:
        return self.lists.get(name, frozenset())

    def site_of(self, addr: str | None) -> str | None:
        """The site whose network holds `addr`, or None (unknown address, or not an IP address)."""
        if not addr:
            return None
        if addr in self._site_cache:
            return self._site_cache[addr]
        site = None
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            ip = None
        if ip is not None:
            site = next((name for name, nets in self.sites.items() if any(ip in n for n in nets)), None)
        if len(self._site_cache) > 100_000:
            self._site_cache.clear()
        self._site_cache[addr] = site
        return site

    def calendar_for(self, person: Person | None) -> Calendar:
        """The person's own shift if the HR import gave one, else their team's calendar, else the default."""
        if person is None:
            return self.calendar
        cal = self._person_calendars.get(person.staff_id)
        if cal is None:
            base = self.team_calendars.get(person.team or "", self.calendar)
            cal = base.with_patterns(person.shift.split("|")) if person.shift else base
            self._person_calendars[person.staff_id] = cal
        return cal

    def set_directory(self, directory: Directory) -> None:
        self.directory = directory
        self._person_calendars.clear()


def _where(doc: Any, key: str) -> int | None:
    return doc.line_of(key) if isinstance(doc, Located) else None


def context_from_mapping(doc: Mapping[str, Any], *, file: str | None = None,
                         hash_names: Any = None) -> Context:
    """A Context from the mapping under `context:`. `hash_names` (tests only) turns readable customer names in
    lists and assignments into keys."""
    known = {"lists", "sites", "calendars", "directory", "assignments", "overrides"}
    for key in doc:
        if key not in known:
            raise RuleSyntaxError(f"unknown context section; use one of {', '.join(sorted(known))}",
                                  file=file, line=_where(doc, key), field=key)
    ctx = Context()

    def fail(key: str, message: str, cause: Exception | None = None) -> RuleSyntaxError:
        return RuleSyntaxError(message, file=file, line=_where(doc, key), field=key)

    for name, values in (doc.get("lists") or {}).items():
        if not isinstance(values, list):
            raise fail("lists", f"{name}: must be a list")
        items = [str(v) for v in values]
        if hash_names is not None and name in ("honeytokens",):
            items = [hash_names(v) for v in items]
        ctx.lists[name] = frozenset(items)
    for name, nets in (doc.get("sites") or {}).items():
        try:
            ctx.sites[str(name)] = tuple(ipaddress.ip_network(str(n), strict=False) for n in nets)
        except (ValueError, TypeError) as e:
            raise fail("sites", f"{name}: must be a list of networks such as 10.1.0.0/16 ({e})") from e
    cals = doc.get("calendars") or {}
    try:
        if "default" in cals:
            ctx.calendar = calendar_from_mapping(cals["default"])
        for team, cal in (cals.get("teams") or {}).items():
            merged = {"tz": ctx.calendar.tz, "holidays": [str(h) for h in ctx.calendar.holidays]}
            merged.update(cal)
            ctx.team_calendars[str(team)] = calendar_from_mapping(merged)
    except RuleSyntaxError as e:
        raise fail("calendars", f"{e.field + ': ' if e.field else ''}{e.reason}") from e
    people = []
    for row in (doc.get("directory") or {}).get("people", []) or []:
        try:
            people.append(person_from_mapping(row))
        except RuleSyntaxError as e:
            raise fail("directory", f"{e.field}: {e.reason}") from e
    ctx.directory = Directory.of(people)
    for staff, keys in (doc.get("assignments") or {}).items():
        items = [str(k) for k in keys]
        ctx.assignments[str(staff)] = frozenset(hash_names(k) for k in items) if hash_names else frozenset(items)
    for rule_id, changes in (doc.get("overrides") or {}).items():
        if not isinstance(changes, Mapping):
            raise fail("overrides", f"{rule_id}: must map settings to new values, such as {{limit: 20000}}")
        ctx.overrides[str(rule_id)] = dict(changes)
    return ctx


def load_context_file(path: str | Path) -> Context:
    doc = load_yaml_file(path)
    if not isinstance(doc, Mapping) or "context" not in doc or not isinstance(doc["context"], Mapping):
        raise RuleSyntaxError("a context file holds one mapping under `context:`", file=str(path))
    return context_from_mapping(doc["context"], file=str(path))
