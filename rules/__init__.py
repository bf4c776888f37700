"""custos rule engine: declarative YAML rules evaluated over events, with state kept behind a small interface.

Imports neither the collector nor a web framework, so it can be tested, replayed and benchmarked on its own.
"""

from __future__ import annotations

from rules.alerts import Alert
from rules.context import Context
from rules.engine import Engine
from rules.errors import RuleError, RuleProblems, RuleSyntaxError
from rules.parse import RULE_KINDS, RuleSet, load_rules, parse_rule
from rules.state import MemoryState, State

__all__ = ["Alert", "Context", "Engine", "MemoryState", "RULE_KINDS", "RuleError", "RuleProblems", "RuleSet",
           "RuleSyntaxError", "State", "load_rules", "parse_rule"]
