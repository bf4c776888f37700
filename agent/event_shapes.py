"""String formats of the event schema (ids, keyed hashes, source types, class names), checked after decoding
rather than by the decoder.

With `Meta(pattern=…)` msgspec runs a regular expression for every such value as it decodes: 5.5 µs for a
typical `db.query` event against 1.4 µs without the patterns. A `Shape` is put beside the `Meta` in a field's
`Annotated[…]` (msgspec ignores it): the pattern still goes into the JSON Schema, and `shape_errors` checks a
whole batch with one match per field (the values joined), event by event only where that fails, following a
plan made once per event type from its type hints.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import msgspec

_SEP = "\x00"  # joins the values of a list for one match; no format allows it, and no value may hold it


@dataclass(frozen=True, slots=True)
class Shape:
    """A string format: the regular expression it is documented as (whole-string match), compiled once."""

    pattern: str
    _one: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _many: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = self.pattern.removeprefix("^").removesuffix("$")
        object.__setattr__(self, "_one", re.compile(body))
        object.__setattr__(self, "_many", re.compile(f"(?:{body})(?:{_SEP}(?:{body}))*"))

    def check(self, value: str) -> bool:
        return self._one.fullmatch(value) is not None

    def check_all(self, values: list[str]) -> bool:
        """`check` of every value, in one match of the values joined."""
        if not values:
            return True
        joined = _SEP.join(values)
        return joined.count(_SEP) == len(values) - 1 and self._many.fullmatch(joined) is not None

    def error(self, path: str) -> str:
        return f"Expected `str` matching regex {self.pattern!r} - at `{path}`"

    def schema(self) -> dict[str, str]:
        return {"pattern": self.pattern}


EVENT_ID = Shape(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HEX64 = Shape(r"^[0-9a-f]{64}$")
SOURCE_TYPE = Shape(r"^[a-z][a-z0-9_.-]{0,63}$")
CLASS_NAME = Shape(r"^[a-z][a-z0-9_]{0,63}$")


# A plan step: how to get the value from the event, its Shape, whether it is a list, and its path for messages.
_Step = tuple[Callable[[Any], Any], Shape, bool, str]
_plans: dict[type, tuple[_Step, ...]] = {}


def shape_error(obj: msgspec.Struct) -> str | None:
    """The first value of `obj` (a decoded Struct, nested ones included) that breaks its Shape, said the way
    msgspec says a pattern mismatch; None when every value fits."""
    for step in _plan_of(type(obj)):
        if (err := _step_error(obj, *step)) is not None:
            return err
    return None


def shape_errors(objs: Sequence[msgspec.Struct]) -> dict[int, str]:
    """`shape_error` of each of `objs` that has one, by index. Each field is checked for all the Structs of a
    type at once (one match of their values joined); Struct by Struct only where that fails."""
    by_type: dict[type, list[int]] = {}
    for i, obj in enumerate(objs):
        by_type.setdefault(type(obj), []).append(i)
    bad: dict[int, str] = {}
    for cls, indices in by_type.items():
        for step in _plan_of(cls):
            get, shape, many, _ = step
            values = [get(objs[i]) for i in indices]
            flat = [x for v in values if v for x in v] if many else [v for v in values if v is not None]
            if shape.check_all(flat):
                continue
            for i in indices:
                if i not in bad and (err := _step_error(objs[i], *step)) is not None:
                    bad[i] = err
    return bad


def _step_error(obj: Any, get: Callable[[Any], Any], shape: Shape, many: bool, path: str) -> str | None:
    value = get(obj)
    if value is None:
        return None
    if many:
        if not shape.check_all(value):
            i = next(i for i, v in enumerate(value) if not shape.check(v))
            return shape.error(f"{path}[{i}]")
    elif not shape.check(value):
        return shape.error(path)
    return None


def _plan_of(cls: type) -> tuple[_Step, ...]:
    plan = _plans.get(cls)
    if plan is None:
        plan = _plans[cls] = _plan(cls)
    return plan


def _plan(cls: type, prefix: tuple[str, ...] = (), optional: bool = False) -> tuple[_Step, ...]:
    """The checks of `cls`, nested Structs flattened into paths (`payload.customer_keys`)."""
    steps: list[_Step] = []
    for name, hint in get_type_hints(cls, include_extras=True).items():
        if name not in cls.__struct_fields__:  # type: ignore[attr-defined]
            continue
        shape, struct, many, maybe = _inspect(hint)
        names = (*prefix, name)
        if shape is not None:
            get = _getter(names) if optional else attrgetter(".".join(names))
            steps.append((get, shape, many, "$." + ".".join(names)))
        elif struct is not None:
            inner = _plan(struct, names, optional or maybe)
            if inner and many:
                raise TypeError(f"{cls.__name__}.{name}: a list of Structs with shaped strings is not supported")
            steps += inner
    return tuple(steps)


def _getter(names: tuple[str, ...]) -> Callable[[Any], Any]:
    """Like attrgetter("a.b.c"), but None as soon as a Struct on the way is absent."""
    def get(obj: Any) -> Any:
        for name in names:
            if obj is None:
                return None
            obj = getattr(obj, name)
        return obj
    return get


def _inspect(hint: Any, many: bool = False) -> tuple[Shape | None, type | None, bool, bool]:
    """What a field holds: its Shape or the Struct type inside it, whether it is a list, whether it may be None."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *extras = get_args(hint)
        for extra in extras:
            if isinstance(extra, Shape):
                return extra, None, many, False
        return _inspect(base, many)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        found = [_inspect(a, many) for a in args if a is not type(None)]
        if len(found) != 1:
            return None, None, many, False
        shape, struct, many, _ = found[0]
        return shape, struct, many, type(None) in args
    if origin is list and not many:
        return _inspect(get_args(hint)[0], True)
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return None, hint, many, False
    return None, None, many, False
