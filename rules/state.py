"""The rule engine's state interface, and the in-memory implementation used by tests, replays and benchmarks.

Rules keep everything they remember in *slots*: one object (a Window, Series, Seen, Steps, Presence or Mark from
rules/windows.py) per rule, part and group. Taking a slot marks it changed, so a store-backed state (the
collector's) writes exactly the changed slots at its next checkpoint. Work assignments for need-to-know rules
are read through the same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from rules.windows import PARTS

T = TypeVar("T")


class State(Protocol):
    def slot(self, rule_id: str, part: str, group: str, factory: Callable[[], T]) -> T:
        """The slot for (rule, part, group), made by `factory` if new; the caller may change it."""

    def peek(self, rule_id: str, part: str, group: str) -> Any | None:
        """The slot if it exists, without marking it changed."""

    def groups(self, rule_id: str, part: str) -> Iterator[tuple[str, Any]]:
        """Every (group, slot) a rule keeps for a part (for clock ticks and peer groups)."""

    def touch(self, rule_id: str, part: str, group: str) -> None:
        """Mark a slot changed (after changing one obtained through `groups` or `peek`)."""

    def drop(self, rule_id: str, part: str, group: str) -> None:
        """Forget a slot (a window gone stale, an old socket tie)."""

    def assignments(self, staff_id: str) -> frozenset[str] | None:
        """The customer keys in a person's work assignment, or None when the person has no assignment."""


class MemoryState:
    """State kept in dictionaries; `dirty` lists the slots changed since `clean()`."""

    def __init__(self, assignments: Mapping[str, frozenset[str]] | None = None) -> None:
        self.data: dict[tuple[str, str], dict[str, Any]] = {}
        self.dirty: set[tuple[str, str, str]] = set()
        self._assignments: dict[str, frozenset[str]] = dict(assignments or {})

    def slot(self, rule_id: str, part: str, group: str, factory: Callable[[], T]) -> T:
        groups = self.data.get((rule_id, part))
        if groups is None:
            groups = self.data[(rule_id, part)] = {}
        obj = groups.get(group)
        if obj is None:
            obj = groups[group] = factory()
        self.dirty.add((rule_id, part, group))
        return obj  # type: ignore[no-any-return]

    def peek(self, rule_id: str, part: str, group: str) -> Any | None:
        groups = self.data.get((rule_id, part))
        return groups.get(group) if groups is not None else None

    def groups(self, rule_id: str, part: str) -> Iterator[tuple[str, Any]]:
        return iter(list(self.data.get((rule_id, part), {}).items()))

    def touch(self, rule_id: str, part: str, group: str) -> None:
        self.dirty.add((rule_id, part, group))

    def drop(self, rule_id: str, part: str, group: str) -> None:
        groups = self.data.get((rule_id, part))
        if groups is not None and groups.pop(group, None) is not None:
            self.dirty.add((rule_id, part, group))

    def assignments(self, staff_id: str) -> frozenset[str] | None:
        return self._assignments.get(staff_id)

    def set_assignments(self, assignments: Mapping[str, frozenset[str]]) -> None:
        self._assignments = dict(assignments)

    # -- for stores ------------------------------------------------------------------------------------------

    def take_dirty(self) -> list[tuple[str, str, str, Any | None]]:
        """The changed slots as (rule, part, group, JSON-able data or None when dropped); clears the marks."""
        out = []
        for rule_id, part, group in self.dirty:
            obj = self.peek(rule_id, part, group)
            out.append((rule_id, part, group, obj.dump() if obj is not None else None))
        self.dirty.clear()
        return out

    def restore(self, rule_id: str, part: str, group: str, doc: Any) -> None:
        cls = PARTS[part]
        self.data.setdefault((rule_id, part), {})[group] = cls.load(doc)

    def slot_count(self) -> int:
        return sum(len(g) for g in self.data.values())
