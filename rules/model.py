"""The parts every rule has: identity, severity, ATT&CK tags, the events it reads, its filter, grouping,
suppression, allowlists and test cases. Kinds of rule (rules/kinds/) add their own settings.

Rule parts are frozen dataclasses that check themselves in `__post_init__` and remember the file and line they
came from (left out of equality), so a rule read twice from different files compares equal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.events import KINDS
from agent.units import parse_duration
from rules.calendar import WorkPattern
from rules.conditions import Condition, ListRef, Where, parse_condition
from rules.context import Context
from rules.errors import RuleSyntaxError
from rules.fields import Fact, compile_field
from rules.yamlsafe import Located

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,127}$")
_ATTACK = re.compile(r"^T\d{4}(\.\d{3})?$")
MISSING: Any = object()


def _fail(message: str, where: Where, fld: str | None = None) -> RuleSyntaxError:
    return RuleSyntaxError(message, file=where.file, line=where.line, field=fld)


@dataclass(frozen=True)
class AllowWindow:
    """An approved batch window: these accounts (or anyone) may do this during these hours."""

    patterns: tuple[WorkPattern, ...]
    tz: str = "UTC"
    accounts: tuple[str | ListRef, ...] = ()
    where: Where = field(default=Where(), compare=False, repr=False)


@dataclass(frozen=True)
class Allow:
    """What a rule never alerts on: named accounts (staff id, db or OS user), service accounts from the
    directory, approved batch windows, or anything a condition matches."""

    accounts: tuple[str | ListRef, ...] = ()
    service_accounts: bool = True
    windows: tuple[AllowWindow, ...] = ()
    filter: Condition | None = None
    where: Where = field(default=Where(), compare=False, repr=False)

    def compile(self, ctx: Context) -> Callable[[Fact], bool]:
        from rules.calendar import Calendar

        def names(items: tuple[str | ListRef, ...]) -> frozenset[str]:
            out: set[str] = set()
            for a in items:
                out |= ctx.list(a.name) if isinstance(a, ListRef) else {a}
            return frozenset(out)

        accounts = names(self.accounts)
        windows = [(Calendar(w.tz, w.patterns, frozenset(), 0), names(w.accounts)) for w in self.windows]
        cond = self.filter.compile(ctx) if self.filter is not None else None
        services = self.service_accounts

        def who(f: Fact) -> tuple[str | None, ...]:
            a = f.event.actor
            return (f.person.staff_id if f.person else None, a.db_user, a.os_user, a.staff_id)

        def allowed(f: Fact) -> bool:
            if services and f.person is not None and f.person.kind == "service":
                return True
            if accounts and not accounts.isdisjoint(who(f)):
                return True
            for cal, accs in windows:
                if (not accs or not accs.isdisjoint(who(f))) and cal.working(f.t):
                    return True
            return cond is not None and cond(f)

        return allowed


@dataclass(frozen=True)
class RuleTest:
    """One test case of a rule: events (and optionally site context and a final clock time) and how many
    alerts they must raise."""

    name: str
    expect: int
    events: tuple[Mapping[str, Any], ...]
    context: Mapping[str, Any] | None = None
    now: str | None = None
    where: Where = field(default=Where(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise _fail("every test case needs a name", self.where, "tests")
        if self.expect < 0:
            raise _fail("expect must be 0 (quiet) or a number of alerts", self.where, "tests")


@dataclass(frozen=True)
class Rule:
    """Settings every kind of rule shares. Subclasses add theirs and implement `bind`."""

    id: str
    title: str
    severity: str
    tags: tuple[str, ...]
    events: tuple[str, ...]
    description: str = ""
    filter: Condition | None = None
    group_by: tuple[str, ...] = ("person",)
    suppress: float = 86400.0
    allow: Allow = Allow()
    include_system: bool = False
    enabled: bool = True
    summary: str | None = None
    tests: tuple[RuleTest, ...] = ()
    where: Where = field(default=Where(), compare=False, repr=False)

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        w = self.where
        if not _RULE_ID.match(self.id):
            raise _fail("must be 3-128 characters of a-z 0-9 _ . - such as custos.bulk_sensitive_read", w, "id")
        if not self.title.strip():
            raise _fail("give a short title", w, "title")
        if self.severity not in SEVERITIES:
            raise _fail(f"must be one of {', '.join(SEVERITIES)}", w, "severity")
        for tag in self.tags:
            if not _ATTACK.match(tag):
                raise _fail(f"{tag!r} is not a MITRE ATT&CK technique id such as T1213 or T1567.002", w, "tags")
        if not self.events:
            raise _fail("name the event kinds the rule reads, such as [db.query]", w, "events")
        for kind in self.events:
            if kind not in KINDS:
                raise _fail(f"unknown event kind {kind!r}; use one of {', '.join(KINDS)}", w, "events")
        for path in self.group_by:
            try:
                compile_field(path)
            except RuleSyntaxError as e:
                raise _fail(e.reason, w, "group_by") from e
        if self.suppress < 0:
            raise _fail("must be a duration such as 24h", w, "suppress")

    def bind(self, ctx: Context) -> Any:
        """The rule's evaluator for this site context (rules/kinds/)."""
        raise NotImplementedError


class Reader:
    """Reads a rule's YAML mapping field by field. In `collect` mode a bad field is noted and reading goes on,
    so lint reports every problem; otherwise the first problem is raised."""

    def __init__(self, doc: Mapping[str, Any], file: str | None, problems: list[RuleSyntaxError] | None) -> None:
        self.doc, self.file, self.problems = doc, file, problems
        self.used: set[str] = set()
        self.failed = False

    def line(self, key: str | None = None) -> int | None:
        if isinstance(self.doc, Located):
            return self.doc.line_of(key) if key else self.doc.line
        return None

    def where(self, key: str | None = None) -> Where:
        return Where(self.file, self.line(key))

    def problem(self, message: str, key: str | None) -> None:
        err = RuleSyntaxError(message, file=self.file, line=self.line(key), field=key)
        self.failed = True
        if self.problems is None:
            raise err
        self.problems.append(err)

    def take(self, key: str, convert: Callable[[Any], Any], default: Any = MISSING) -> Any:
        self.used.add(key)
        if key not in self.doc:
            if default is MISSING:
                self.problem("is required", key)
                return None
            return default
        try:
            return convert(self.doc[key])
        except RuleSyntaxError as e:
            err = RuleSyntaxError(e.reason, file=e.file or self.file, line=e.line or self.line(key),
                                  field=e.field if e.field and e.field.startswith(key) else
                                  (f"{key}.{e.field}" if e.field else key))
            self.failed = True
            if self.problems is None:
                raise err from e
            self.problems.append(err)
        except (ValueError, TypeError) as e:
            self.problem(str(e), key)
        return None if default is MISSING else default

    def unknown(self, allowed: set[str]) -> None:
        for key in self.doc:
            if key not in allowed:
                self.problem(f"unknown field for a {self.doc.get('kind', '?')} rule; check the spelling "
                             f"(known: {', '.join(sorted(allowed))})", key)


# -- converters for Reader.take ------------------------------------------------------------------------------


def text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be text")
    return v


def duration(v: Any) -> float:
    return parse_duration(v)


def positive(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ValueError("must be a positive number")
    return float(v)


def non_negative(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError("must be zero or a positive number")
    return float(v)


def whole(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError("must be a whole number of 1 or more")
    return v


def flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def texts(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of text values")
    return tuple(v)


def choice(*options: str) -> Callable[[Any], str]:
    def convert(v: Any) -> str:
        if v not in options:
            raise ValueError(f"must be one of {', '.join(options)}, not {v!r}")
        return str(v)
    return convert


def fields(v: Any) -> tuple[str, ...]:
    out = texts(v)
    for p in out:
        compile_field(p)
    return out


def condition(file: str | None, key: str) -> Callable[[Any], Condition]:
    def convert(v: Any) -> Condition:
        return parse_condition(v, file=file, line=v.line if isinstance(v, Located) else None, path=key)
    return convert


def accounts(v: Any) -> tuple[str | ListRef, ...]:
    items = v if isinstance(v, list) else [v]
    out: list[str | ListRef] = []
    for a in items:
        if isinstance(a, Mapping) and set(a) == {"list"}:
            out.append(ListRef(str(a["list"])))
        elif isinstance(a, str):
            out.append(a)
        else:
            raise ValueError("must be account names or {list: NAME}")
    return tuple(out)


def allow(file: str | None) -> Callable[[Any], Allow]:
    def convert(v: Any) -> Allow:
        if not isinstance(v, Mapping):
            raise ValueError("must be a mapping with accounts, service_accounts, windows or filter")
        r = Reader(v, file, None)
        r.unknown({"accounts", "service_accounts", "windows", "filter"})
        wins = []
        for i, w in enumerate(r.take("windows", lambda x: x if isinstance(x, list) else [x], [])):
            wr = Reader(w, file, None) if isinstance(w, Mapping) else None
            if wr is None:
                raise RuleSyntaxError("each window is {hours: 'mon-fri 01:00-05:00', tz: …, accounts: […]}",
                                      field=f"windows[{i}]")
            wr.unknown({"hours", "tz", "accounts"})
            hours = wr.take("hours", texts)
            wins.append(AllowWindow(tuple(WorkPattern.parse(h) for h in hours), wr.take("tz", text, "UTC"),
                                    wr.take("accounts", accounts, ()), wr.where()))
        return Allow(r.take("accounts", accounts, ()), r.take("service_accounts", flag, True), tuple(wins),
                     r.take("filter", condition(file, "allow.filter"), None), r.where())
    return convert


def tests(file: str | None) -> Callable[[Any], tuple[RuleTest, ...]]:
    def convert(v: Any) -> tuple[RuleTest, ...]:
        if not isinstance(v, list):
            raise ValueError("must be a list of test cases")
        out = []
        for i, case in enumerate(v):
            if not isinstance(case, Mapping):
                raise RuleSyntaxError("each test case is a mapping with name, expect and events",
                                      field=f"[{i}]")
            r = Reader(case, file, None)
            r.unknown({"name", "expect", "events", "context", "now"})
            expect = r.take("expect", lambda x: {"alert": 1, "quiet": 0}.get(x, x) if isinstance(x, str)
                            else int(x))
            if not isinstance(expect, int):
                raise RuleSyntaxError("expect is quiet, alert or a number of alerts", line=r.line("expect"),
                                      field=f"[{i}].expect")
            evs = r.take("events", lambda x: tuple(x) if isinstance(x, list) else (_ for _ in ()).throw(
                ValueError("must be a list of events")))
            out.append(RuleTest(r.take("name", text), expect, evs, r.take("context", dict, None),
                                r.take("now", str, None), r.where()))
        return tuple(out)
    return convert
