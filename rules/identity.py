"""Who did it: the staff directory (db and OS accounts → staff id, team, manager, end date) and the ties a staff
agent's `db.session` makes between a client socket and the OS user behind it.

The directory is imported (a CSV or YAML file, or the collector's `directory_*` tables); socket ties are learned
from events as they stream by and kept in the rule state, so a restart keeps them.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rules.errors import RuleSyntaxError

PERSON_KINDS = ("person", "service", "shared")


@dataclass(frozen=True, slots=True)
class Person:
    """One entry of the staff directory. `kind` is `person`, `service` (a batch account) or `shared`."""

    staff_id: str
    name: str = ""
    team: str | None = None
    manager: str | None = None
    end_date: dt.date | None = None
    db_users: tuple[str, ...] = ()
    os_users: tuple[str, ...] = ()
    kind: str = "person"
    shift: str | None = None  # a personal working pattern such as "mon-fri 22:00-06:00"
    email: str | None = None

    def __post_init__(self) -> None:
        if not self.staff_id:
            raise RuleSyntaxError("every person needs a staff_id", field="staff_id")
        if self.kind not in PERSON_KINDS:
            raise RuleSyntaxError(f"must be one of {', '.join(PERSON_KINDS)}, not {self.kind!r}", field="kind")

    @property
    def display(self) -> str:
        return self.name or self.staff_id

    def ended_before(self, when: dt.datetime) -> bool:
        return self.end_date is not None and when.date() > self.end_date


def _split(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(p.strip() for p in value.replace(",", ";").split(";") if p.strip())
    return tuple(str(v).strip() for v in value if str(v).strip())


def person_from_mapping(row: Mapping[str, Any]) -> Person:
    """A Person from a CSV row or YAML mapping; multi-valued fields may be lists or `a;b` text."""
    end = row.get("end_date") or None
    try:
        end_date = dt.date.fromisoformat(str(end)) if end else None
    except ValueError as e:
        raise RuleSyntaxError(f"must be a date such as 2026-11-30, not {end!r}", field="end_date") from e
    return Person(
        staff_id=str(row.get("staff_id") or "").strip(),
        name=str(row.get("name") or "").strip(),
        team=(str(row["team"]).strip() or None) if row.get("team") else None,
        manager=(str(row["manager"]).strip() or None) if row.get("manager") else None,
        end_date=end_date,
        db_users=_split(row.get("db_users")),
        os_users=_split(row.get("os_users")),
        kind=str(row.get("kind") or "person").strip(),
        shift=(str(row["shift"]).strip() or None) if row.get("shift") else None,
        email=(str(row["email"]).strip() or None) if row.get("email") else None,
    )


def read_directory_csv(path: str | Path) -> list[Person]:
    """People from a directory export: columns staff_id,name,team,manager,end_date,db_users,os_users,kind,shift."""
    people = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                people.append(person_from_mapping(row))
            except RuleSyntaxError as e:
                raise RuleSyntaxError(e.reason, file=str(path), line=n, field=e.field) from e
    return people


@dataclass(slots=True)
class Directory:
    """Look-ups from accounts to people. A db account mapped to several people is shared: it names nobody."""

    people: dict[str, Person] = field(default_factory=dict)
    db_index: dict[str, str | None] = field(default_factory=dict)
    os_index: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, people: Iterable[Person]) -> Directory:
        d = cls()
        for p in people:
            d.add(p)
        return d

    def add(self, person: Person) -> None:
        self.people[person.staff_id] = person
        for index, names in ((self.db_index, person.db_users), (self.os_index, person.os_users)):
            for name in names:
                known = index.get(name, person.staff_id)
                index[name] = person.staff_id if known == person.staff_id else None  # None: shared

    def by_db_user(self, name: str) -> Person | None:
        sid = self.db_index.get(name)
        return self.people.get(sid) if sid else None

    def by_os_user(self, name: str) -> Person | None:
        sid = self.os_index.get(name)
        return self.people.get(sid) if sid else self.people.get(name)

    def team_of(self, staff_id: str) -> str | None:
        p = self.people.get(staff_id)
        return p.team if p else None

    def __len__(self) -> int:
        return len(self.people)
