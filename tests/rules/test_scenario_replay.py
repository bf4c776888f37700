"""Fourteen days of the synthetic bank (60 staff, five planted insiders): every insider found, few false alerts."""

from __future__ import annotations

import pytest

from rules.parse import load_rules
from rules.scenario import generate, replay_scenario, score

RULESET = load_rules()


@pytest.mark.parametrize("seed", [7, 8])
def test_every_planted_insider_is_found_with_under_two_false_alerts_per_1000_staff_days(seed: int) -> None:
    scn = generate(seed=seed, days=14)
    assert scn.staff_days == 60 * 14
    alerts, engine = replay_scenario(scn, RULESET)
    report = score(scn, alerts)
    assert report.missed == [], report.missed
    assert set(report.found) == {"night_bulk_reader", "slow_leaker", "usb_after_bulk_read",
                                 "leaver_after_end_date", "shared_account_new_host"}
    assert report.false_per_1000_staff_days < 2, [a.summary for a in report.false_alerts]
    assert not engine.errors


def test_each_insider_is_named_by_the_rule_meant_for_it() -> None:
    scn = generate(seed=7, days=14)
    report = score(scn, replay_scenario(scn, RULESET)[0])
    rules_of = {name: {a.rule_id for a in alerts} for name, alerts in report.found.items()}
    assert "custos.bulk_sensitive_read" in rules_of["night_bulk_reader"]
    assert "custos.spike_own_baseline" in rules_of["slow_leaker"]
    assert "custos.export_after_bulk_read" in rules_of["usb_after_bulk_read"]
    assert "custos.access_after_end_date" in rules_of["leaver_after_end_date"]
    assert "custos.first_seen_origin" in rules_of["shared_account_new_host"]


def test_the_same_seed_gives_the_same_events() -> None:
    a, b = generate(seed=3, days=2), generate(seed=3, days=2)
    assert [e.id for e in a.events] == [e.id for e in b.events]


def test_without_insiders_nothing_is_planted() -> None:
    scn = generate(seed=7, days=3, with_insiders=False)
    assert scn.planted == [] and all(p.end_date is None for p in scn.people)
