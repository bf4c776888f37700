"""The event as rules see it (`Fact`: the stored event plus who did it and from where), and field paths.

A field path is compiled once into a getter. Paths start with an envelope field (`kind`, `host`, `agent_id`,
`source.type`, `actor.db_user`), the payload (`payload.rows`, `payload.process.name`), the person behind the event
(`person`, `person.team`, `person.after_end_date`) or a derived field:

    origin      the client address of a database event, else the host the event was seen on
    site        the network site (context `sites`) of `origin`
    program     the client program: application_name, else the process name
    classes     sensitive classes in the event: a query's sensitive_classes, a file's identifier counts > 0
    customers   customer identifiers touched: a query's customer key count, a file's identifier total
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from agent.events import Envelope
from rules.errors import RuleSyntaxError
from rules.identity import Person

Getter = Callable[["Fact"], Any]


class Fact:
    """One event under evaluation. Built by the engine; rules read it through compiled getters."""

    __slots__ = ("event", "kind", "t", "payload", "person", "who", "site", "origin", "memo", "system",
                 "tied_program")

    def __init__(self, event: Envelope, kind: str, person: Person | None, who: str, origin: str | None,
                 site: str | None) -> None:
        self.event = event
        self.kind = kind
        self.t = event.ts.timestamp()
        self.payload = event.payload  # type: ignore[attr-defined]
        self.person = person
        self.who = who
        self.origin = origin
        self.site = site
        self.memo: dict[Any, bool] = {}  # results of filters and allowlists that several rules share
        self.system = kind == "db.query" and self.payload.system  # a database-internal read: nobody's
        self.tied_program: str | None = None  # the client program a staff agent saw on this socket

    @property
    def id(self) -> str:
        return self.event.id

    @property
    def ts(self) -> dt.datetime:
        return self.event.ts

    @property
    def rows(self) -> int:
        return getattr(self.payload, "rows", None) or 0

    @property
    def customer_keys(self) -> list[str]:
        return getattr(self.payload, "customer_keys", None) or []

    @property
    def customers(self) -> int:
        p = self.payload
        keys = getattr(p, "customer_keys", None)
        if keys is not None:
            return max(getattr(p, "customer_keys_total", None) or 0, len(keys))
        counts = getattr(p, "counts", None)
        return sum(counts.values()) if counts else 0

    @property
    def classes(self) -> list[str]:
        p = self.payload
        classes = getattr(p, "sensitive_classes", None)
        if classes is not None:
            return classes  # type: ignore[no-any-return]
        counts = getattr(p, "counts", None)
        return [k for k, v in counts.items() if v > 0] if counts else []

    @property
    def program(self) -> str | None:
        p = self.payload
        name = getattr(p, "application_name", None)
        if name:
            return name  # type: ignore[no-any-return]
        proc = getattr(p, "process", None)
        return proc.name if proc is not None else self.tied_program


def _attr_chain(root: Callable[[Fact], Any], names: list[str]) -> Getter:
    if not names:
        return root
    if len(names) == 1:
        (a,) = names

        def one(f: Fact) -> Any:
            obj = root(f)
            if obj is None:
                return None
            return obj.get(a) if isinstance(obj, dict) else getattr(obj, a, None)
        return one

    def chain(f: Fact) -> Any:
        obj = root(f)
        for n in names:
            if obj is None:
                return None
            obj = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        return obj
    return chain


_PERSON_FIELDS = {"staff_id", "name", "team", "manager", "end_date", "kind", "shift", "after_end_date",
                  "service", "known"}


def _person_field(name: str) -> Getter:
    if name == "after_end_date":
        return lambda f: f.person is not None and f.person.ended_before(f.event.ts)
    if name == "service":
        return lambda f: f.person is not None and f.person.kind == "service"
    if name == "known":
        return lambda f: f.person is not None
    return lambda f: getattr(f.person, name) if f.person is not None else None


DERIVED: dict[str, Getter] = {
    "kind": lambda f: f.kind,
    "person": lambda f: f.who,
    "origin": lambda f: f.origin,
    "site": lambda f: f.site,
    "program": lambda f: f.program,
    "classes": lambda f: f.classes,
    "customers": lambda f: f.customers,
    "id": lambda f: f.event.id,
    "ts": lambda f: f.event.ts,
    "host": lambda f: f.event.host,
    "agent_id": lambda f: f.event.agent_id,
    "schema": lambda f: f.event.schema,
    "database": lambda f: getattr(f.payload, "database", None),
}
ROOTS = {"payload", "actor", "source", "person"}


def compile_field(path: str) -> Getter:
    """A getter for `path`; raises RuleSyntaxError for a path no event can have."""
    if not isinstance(path, str) or not path:
        raise RuleSyntaxError("a field path is text such as payload.rows or person.team")
    head, _, rest = path.partition(".")
    if not rest:
        if head in DERIVED:
            return DERIVED[head]
        raise RuleSyntaxError(
            f"unknown field {path!r}; use one of {', '.join(sorted(DERIVED))} or a path under "
            "payload., actor., source., person.")
    names = rest.split(".")
    if head == "person":
        if len(names) != 1 or names[0] not in _PERSON_FIELDS:
            raise RuleSyntaxError(f"unknown person field {path!r}; use one of "
                                  + ", ".join("person." + n for n in sorted(_PERSON_FIELDS)))
        return _person_field(names[0])
    if head == "payload":
        return _attr_chain(lambda f: f.payload, names)
    if head == "actor":
        return _attr_chain(lambda f: f.event.actor, names)
    if head == "source":
        return _attr_chain(lambda f: f.event.source, names)
    raise RuleSyntaxError(f"unknown field {path!r}; paths start with payload., actor., source. or person.")
