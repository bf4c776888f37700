"""String formats of the event schema (ids, keyed hashes, source types, class names), checked without a regular
expression per value.

msgspec's `Meta(pattern=…)` runs Python's `re` on every value it decodes, which was over half of the collector's
decode time for a batch of `db.query` events (one id, a source type, sensitive classes and customer keys each).
A `Shape` is put beside the `Meta` in a field's `Annotated[…]` (msgspec ignores it): the pattern still goes into
the JSON Schema, and `shape_error` checks the decoded event with plain string operations, once per event type
planned from the type hints.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import msgspec

_HEX = "0123456789abcdef"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_NAME_CHARS = _LOWER + "0123456789_"


@dataclass(frozen=True, slots=True)
class Shape:
    """A string format: the regular expression it is documented as, and the function that checks it."""

    pattern: str
    check: Callable[[str], bool]

    def error(self, path: str) -> str:
        return f"Expected `str` matching regex {self.pattern!r} - at `{path}`"

    def schema(self) -> dict[str, str]:
        return {"pattern": self.pattern}


def _is_event_id(s: str) -> bool:
    return (len(s) == 36 and s[8] == s[13] == s[18] == s[23] == "-" and s[14] == "7" and s[19] in "89ab"
            and s.count("-") == 4 and not s.strip(_HEX + "-"))


def _is_hex64(s: str) -> bool:
    return len(s) == 64 and not s.strip(_HEX)


def _is_source_type(s: str) -> bool:
    return 0 < len(s) <= 64 and s[0] in _LOWER and not s.strip(_NAME_CHARS + ".-")


def _is_class_name(s: str) -> bool:
    return 0 < len(s) <= 64 and s[0] in _LOWER and not s.strip(_NAME_CHARS)


EVENT_ID = Shape(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", _is_event_id)
HEX64 = Shape(r"^[0-9a-f]{64}$", _is_hex64)
SOURCE_TYPE = Shape(r"^[a-z][a-z0-9_.-]{0,63}$", _is_source_type)
CLASS_NAME = Shape(r"^[a-z][a-z0-9_]{0,63}$", _is_class_name)


# A plan step: field name, the Shape of its value(s) or the plan of the Struct it holds, and whether it is a list.
_Step = tuple[str, "Shape | None", "tuple[Any, ...]", bool]
_plans: dict[type, tuple[_Step, ...]] = {}


def shape_error(obj: msgspec.Struct, path: str = "$") -> str | None:
    """The first value of `obj` (a decoded Struct, nested ones included) that breaks its Shape, said the way
    msgspec says a pattern mismatch; None when every value fits."""
    plan = _plans.get(type(obj))
    if plan is None:
        plan = _plans[type(obj)] = _plan(type(obj))
    return _check(obj, plan, path)


def _check(obj: Any, plan: tuple[_Step, ...], path: str) -> str | None:
    for name, shape, sub, many in plan:
        value = getattr(obj, name)
        if value is None:
            continue
        if shape is not None:
            if many:
                if not all(map(shape.check, value)):
                    i = next(i for i, v in enumerate(value) if not shape.check(v))
                    return shape.error(f"{path}.{name}[{i}]")
            elif not shape.check(value):
                return shape.error(f"{path}.{name}")
        elif many:
            for i, item in enumerate(value):
                if (err := _check(item, sub, f"{path}.{name}[{i}]")) is not None:
                    return err
        elif (err := _check(value, sub, f"{path}.{name}")) is not None:
            return err
    return None


def _plan(cls: type) -> tuple[_Step, ...]:
    steps: list[_Step] = []
    for name, hint in get_type_hints(cls, include_extras=True).items():
        if name not in cls.__struct_fields__:  # type: ignore[attr-defined]
            continue
        shape, struct, many = _inspect(hint)
        if shape is not None:
            steps.append((name, shape, (), many))
        elif struct is not None and (sub := _plan(struct)):
            steps.append((name, None, sub, many))
    return tuple(steps)


def _inspect(hint: Any, many: bool = False) -> tuple[Shape | None, type | None, bool]:
    """What a field holds: (its Shape, or the Struct type inside it, and whether it is a list of them)."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *extras = get_args(hint)
        for extra in extras:
            if isinstance(extra, Shape):
                return extra, None, many
        return _inspect(base, many)
    if origin in (Union, types.UnionType):
        found = [_inspect(a, many) for a in get_args(hint) if a is not type(None)]
        return found[0] if len(found) == 1 else (None, None, many)
    if origin is list and not many:
        return _inspect(get_args(hint)[0], True)
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return None, hint, many
    return None, None, many
