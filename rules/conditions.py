"""Filters: declarative conditions on event fields, parsed from YAML and compiled to plain predicates.

    filter:
      kind: db.query                         # equals
      payload.statement_type: [SELECT, COPY] # a list means "in"
      payload.rows: {gte: 1000}              # an operator from OPERATORS
      sensitive: [card_number]               # shorthand: classes intersects these
      not: {person.service: true}
      any: [{payload.tables_read: {intersects: {list: sensitive_tables}}}, {customers: {gt: 100}}]

A list-valued field (tables_read, classes) matches when any element does. `{list: NAME}` names a context list.
Nothing is evaluated as code: every operator is a small function from the table below.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.context import Context
from rules.errors import RuleSyntaxError
from rules.fields import Fact, Getter, compile_field
from rules.yamlsafe import Located

Predicate = Callable[[Fact], bool]


@dataclass(frozen=True)
class ListRef:
    """A value taken from the site context's named list at compile time."""

    name: str


def _any(value: Any, test: Callable[[Any], bool]) -> bool:
    if isinstance(value, list):
        return any(test(v) for v in value if v is not None)
    return value is not None and test(value)


_SCALARS = (str, int, float, bool)


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, _SCALARS):
        raise ValueError("must be a plain value (text, number, true/false)")
    return value


def _scalar_or_list(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_scalar(v) for v in value)
    return _scalar(value)


def _values(value: Any) -> Any:
    if isinstance(value, ListRef):
        return value
    return tuple(_scalar(v) for v in value) if isinstance(value, list) else (_scalar(value),)


def _patterns(value: Any) -> Any:
    if isinstance(value, ListRef):
        return value
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise ValueError("takes text patterns such as public.* or pg_dump*")
    return tuple(items)


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number")
    return value


def _regex(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a regular expression as text")
    try:
        return re.compile(value)
    except re.error as e:
        raise ValueError(f"is not a valid regular expression: {e}") from e


def _bool(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _networks(value: Any) -> Any:
    items = value if isinstance(value, list) else [value]
    try:
        return tuple(ipaddress.ip_network(str(v), strict=False) for v in items)
    except ValueError as e:
        raise ValueError(f"must be networks such as 10.0.0.0/8 ({e})") from e


def _resolve(value: Any, ctx: Context) -> frozenset[Any]:
    if isinstance(value, ListRef):
        return ctx.list(value.name)
    return frozenset(value)


def _make_equals(get: Getter, value: Any, ctx: Context) -> Predicate:
    if isinstance(value, tuple):
        return _make_in(get, value, ctx)
    return lambda f: _any(get(f), lambda v: v == value)


def _make_in(get: Getter, value: Any, ctx: Context) -> Predicate:
    allowed = _resolve(value, ctx)

    def pred(f: Fact) -> bool:
        v = get(f)
        if isinstance(v, (list, dict)):
            return not allowed.isdisjoint(v)  # a list's elements, a mapping's keys
        try:
            return v in allowed
        except TypeError:  # an object (payload.process) is in no list of values
            return False
    return pred


def _cached(test: Callable[[str], bool]) -> Callable[[Any], bool]:
    """Statements and program names repeat endlessly: remember the answer for each text seen."""
    seen: dict[str, bool] = {}

    def check(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        hit = seen.get(v)
        if hit is None:
            if len(seen) > 20_000:
                seen.clear()
            hit = seen[v] = test(v)
        return hit
    return check


def _make_glob(get: Getter, value: Any, ctx: Context) -> Predicate:
    pats = [re.compile(fnmatch.translate(str(p))) for p in _resolve(value, ctx)]
    check = _cached(lambda v: any(p.match(v) for p in pats))
    return lambda f: _any(get(f), check)


def _make_regex(get: Getter, value: Any, ctx: Context) -> Predicate:
    check = _cached(lambda v: value.search(v) is not None)
    return lambda f: _any(get(f), check)


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Getter, Any, Context], Predicate]:
    def make(get: Getter, value: Any, ctx: Context) -> Predicate:
        def pred(f: Fact) -> bool:
            v = get(f)
            return isinstance(v, (int, float)) and not isinstance(v, bool) and op(v, value)
        return pred
    return make


def _make_contains(get: Getter, value: Any, ctx: Context) -> Predicate:
    def pred(f: Fact) -> bool:
        v = get(f)
        if isinstance(v, str):
            return isinstance(value, str) and value in v
        return isinstance(v, (list, dict)) and value in v
    return pred


def _make_contains_all(get: Getter, value: Any, ctx: Context) -> Predicate:
    need = _resolve(value, ctx)
    return lambda f: isinstance(v := get(f), (list, dict)) and need.issubset(v)


def _make_exists(get: Getter, value: Any, ctx: Context) -> Predicate:
    def pred(f: Fact) -> bool:
        v = get(f)
        present = v is not None and v != [] and v != {} and v != ""
        return present is value
    return pred


def _make_cidr(get: Getter, value: Any, ctx: Context) -> Predicate:
    def inside(v: Any) -> bool:
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            return False
        return any(ip in n for n in value)
    return lambda f: _any(get(f), inside)


@dataclass(frozen=True)
class Operator:
    check: Callable[[Any], Any]  # validates and normalises the YAML value; raises ValueError saying what to give
    make: Callable[[Getter, Any, Context], Predicate]
    takes_list_ref: bool = False


OPERATORS: dict[str, Operator] = {
    "equals": Operator(_scalar_or_list, _make_equals, True),
    "in": Operator(_values, _make_in, True),
    "intersects": Operator(_values, _make_in, True),
    "glob": Operator(_patterns, _make_glob, True),
    "regex": Operator(_regex, _make_regex),
    "gt": Operator(_number, _compare(lambda a, b: a > b)),
    "gte": Operator(_number, _compare(lambda a, b: a >= b)),
    "lt": Operator(_number, _compare(lambda a, b: a < b)),
    "lte": Operator(_number, _compare(lambda a, b: a <= b)),
    "contains": Operator(_scalar, _make_contains),
    "contains_all": Operator(_values, _make_contains_all, True),
    "exists": Operator(_bool, _make_exists),
    "cidr": Operator(_networks, _make_cidr),
}
COMBINATORS = ("all", "any", "not", "sensitive")


@dataclass(frozen=True)
class Where:
    file: str | None = None
    line: int | None = None


class Condition:
    where: Where

    def compile(self, ctx: Context) -> Predicate:
        raise NotImplementedError


@dataclass(frozen=True)
class FieldTest(Condition):
    field: str
    op: str
    value: Any
    where: Where = field(default=Where(), compare=False, repr=False)

    def __post_init__(self) -> None:
        compile_field(self.field)
        if self.op not in OPERATORS:
            raise RuleSyntaxError(f"unknown operator {self.op!r}; use one of {', '.join(OPERATORS)}",
                                  file=self.where.file, line=self.where.line, field=self.field)

    def compile(self, ctx: Context) -> Predicate:
        return OPERATORS[self.op].make(compile_field(self.field), self.value, ctx)


@dataclass(frozen=True)
class AllOf(Condition):
    parts: tuple[Condition, ...]
    where: Where = field(default=Where(), compare=False, repr=False)

    def compile(self, ctx: Context) -> Predicate:
        preds = [p.compile(ctx) for p in self.parts]
        if len(preds) == 1:
            return preds[0]
        if len(preds) == 2:
            a, b = preds
            return lambda f: a(f) and b(f)
        return lambda f: all(p(f) for p in preds)


@dataclass(frozen=True)
class AnyOf(Condition):
    parts: tuple[Condition, ...]
    where: Where = field(default=Where(), compare=False, repr=False)

    def compile(self, ctx: Context) -> Predicate:
        preds = [p.compile(ctx) for p in self.parts]
        return lambda f: any(p(f) for p in preds)


@dataclass(frozen=True)
class NotOf(Condition):
    part: Condition
    where: Where = field(default=Where(), compare=False, repr=False)

    def compile(self, ctx: Context) -> Predicate:
        pred = self.part.compile(ctx)
        return lambda f: not pred(f)


def _value(raw: Any) -> Any:
    if isinstance(raw, Mapping) and set(raw) == {"list"}:
        return ListRef(str(raw["list"]))
    return raw


def _field_tests(path: str, raw: Any, where: Where, loc: str) -> list[Condition]:
    try:
        compile_field(path)
    except RuleSyntaxError as e:
        raise RuleSyntaxError(e.reason, file=where.file, line=where.line, field=loc) from e
    if isinstance(raw, Mapping) and not (set(raw) == {"list"}):
        if not raw:
            raise RuleSyntaxError("give an operator such as {gte: 10}", file=where.file, line=where.line,
                                  field=loc)
        ops = list(raw.items())
    else:
        ops = [("in" if isinstance(raw, list) or isinstance(_value(raw), ListRef) else "equals", raw)]
    out: list[Condition] = []
    for op, value in ops:
        operator = OPERATORS.get(op)
        if operator is None:
            raise RuleSyntaxError(f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}",
                                  file=where.file, line=where.line, field=loc)
        value = _value(value)
        if isinstance(value, ListRef):
            if not operator.takes_list_ref:
                raise RuleSyntaxError(f"{op} cannot take a {{list: …}}", file=where.file, line=where.line,
                                      field=loc)
        else:
            try:
                value = operator.check(value)
            except ValueError as e:
                raise RuleSyntaxError(f"{op} {e}", file=where.file, line=where.line, field=loc) from e
        out.append(FieldTest(path, op, value, where))
    return out


def parse_condition(raw: Any, *, file: str | None = None, line: int | None = None,
                    path: str = "filter") -> Condition:
    """A Condition from its YAML form; errors name the file, line and the path inside the filter."""
    if not isinstance(raw, Mapping) or not raw:
        raise RuleSyntaxError("a condition is a mapping such as {payload.rows: {gte: 1000}}", file=file,
                              line=line, field=path)
    where = Where(file, raw.line if isinstance(raw, Located) else line)
    parts: list[Condition] = []
    for key, value in raw.items():
        kline = raw.line_of(key) if isinstance(raw, Located) else where.line
        kwhere = Where(file, kline)
        loc = f"{path}.{key}"
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise RuleSyntaxError(f"{key} takes a non-empty list of conditions", file=file, line=kline,
                                      field=loc)
            subs = tuple(parse_condition(v, file=file, line=kline, path=f"{loc}[{i}]") for i, v in enumerate(value))
            parts.append(AllOf(subs, kwhere) if key == "all" else AnyOf(subs, kwhere))
        elif key == "not":
            parts.append(NotOf(parse_condition(value, file=file, line=kline, path=loc), kwhere))
        elif key == "sensitive":
            if value is True:
                parts.append(FieldTest("classes", "exists", True, kwhere))
            elif isinstance(value, list) and value or isinstance(_value(value), ListRef):
                parts.extend(_field_tests("classes", {"intersects": value}, kwhere, loc))
            else:
                raise RuleSyntaxError("sensitive takes true or a list of classes such as [card_number]",
                                      file=file, line=kline, field=loc)
        elif key == "field":
            rest = {k: v for k, v in raw.items() if k != "field"}
            return AllOf(tuple(_field_tests(str(value), rest, where, f"{path}.{value}")), where)
        else:
            parts.extend(_field_tests(key, value, kwhere, loc))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts), where)
