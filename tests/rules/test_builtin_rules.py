"""Every built-in rule's own test cases (the `tests:` in its YAML) pass: positives fire, negatives stay quiet."""

from __future__ import annotations

import pytest

from rules.parse import RULE_KINDS, load_rules
from rules.testing import run_case

RULESET = load_rules()
CASES = [(rule, case) for rule in RULESET.rules for case in rule.tests]

ISSUE_RULES = {
    "custos.bulk_sensitive_read", "custos.off_hours_sensitive_read", "custos.identity_kit_read",
    "custos.low_and_slow_30d", "custos.low_and_slow_90d", "custos.honeytoken_read", "custos.outside_assignment",
    "custos.spike_own_baseline", "custos.spike_peer_group", "custos.first_seen_origin",
    "custos.sensitive_table_export", "custos.export_after_bulk_read", "custos.identifiers_to_removable",
    "custos.access_after_end_date", "custos.dormant_account", "custos.customer_enumeration", "custos.agent_silent",
}


@pytest.mark.parametrize("rule, case", CASES, ids=[f"{r.id}: {c.name}" for r, c in CASES])
def test_builtin_rule_case(rule, case) -> None:  # type: ignore[no-untyped-def]
    result = run_case(rule, case, RULESET.context_doc)
    assert result.error is None, result.error
    assert result.got == case.expect, f"{rule.id}: {case.name}: {result.got} alerts, expected {case.expect}: " + \
        "; ".join(a.summary for a in result.alerts)


def test_every_builtin_rule_has_a_positive_and_a_negative_case() -> None:
    for rule in RULESET.rules:
        assert any(c.expect > 0 for c in rule.tests), f"{rule.id} has no case that fires"
        assert any(c.expect == 0 for c in rule.tests), f"{rule.id} has no case that stays quiet"


def test_the_builtin_set_covers_the_rules_the_issue_lists_and_every_kind() -> None:
    ids = {r.id for r in RULESET.rules}
    assert ISSUE_RULES <= ids
    assert {r.kind for r in RULESET.rules} == set(RULE_KINDS)


def test_builtin_rules_load_without_problems_and_carry_attack_tags() -> None:
    assert RULESET.problems == []
    for rule in RULESET.rules:
        assert rule.tags and all(t.startswith("T") for t in rule.tags)
        assert rule.description.strip()


def test_an_alert_says_who_when_and_by_how_much() -> None:
    rule = RULESET.by_id("custos.spike_own_baseline")
    case = next(c for c in rule.tests if c.expect)
    (alert,) = run_case(rule, case, RULESET.context_doc).alerts
    assert alert.staff_id == "alice" and alert.team == "loans"
    assert "Alice Berg" in alert.summary and "7.5×" in alert.summary and "Thursday 12 March" in alert.summary
    assert alert.measures["value"] == 150 and alert.measures["median"] == 20
