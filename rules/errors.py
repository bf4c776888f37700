"""Errors the rule engine raises: all are `CustosError`s, and a rule file's errors name file, line and field."""

from __future__ import annotations

from agent.errors import CustosError


class RuleError(CustosError):
    """Root of the rule engine's errors."""


class RuleSyntaxError(RuleError):
    """A rule or site file is not valid; the message names where (`file:line: field: what to do`)."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ":".join(str(p) for p in (file, line) if p is not None)
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{field + ': ' if field else ''}{message}")


class RuleProblems(RuleError):
    """Several problems found while reading rule files (raised after collecting them all)."""

    def __init__(self, problems: list[RuleSyntaxError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
