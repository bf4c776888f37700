"""The linkage rule kind: reads tied to what later hit the same customers, one alert per person naming them."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.events import DbQuery
from rules.engine import Engine
from rules.errors import RuleSyntaxError
from rules.parse import load_rules, parse_rule
from rules.scenario import generate, replay_scenario
from rules.state import MemoryState
from rules.testing import build_events, test_context, test_key

RULESET = load_rules()
FRAUD = "custos.read_then_fraud"
TAKEOVER = "custos.read_then_account_takeover"


def engine(*rule_ids: str, state: MemoryState | None = None) -> Engine:
    ctx = test_context(RULESET.context_doc)
    return Engine([RULESET.by_id(r) for r in rule_ids], ctx, state or MemoryState(ctx.assignments))


BANK = {"who": "bob", "customers": 2000, "customers_from": 1000, "at": "2026-03-01T10:00:00Z"}  # everyone else


def _frauds(names: list[str], start: str = "2026-03-10T09:00:00Z") -> list[dict[str, object]]:
    t0 = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    return [{"kind": "business.fraud_confirmed", "customer": n, "at": (t0 + dt.timedelta(hours=i)).isoformat(),
             "payload": {"case_id": f"FR-{n}"}} for i, n in enumerate(names)]


def test_the_alert_names_the_reader_and_lists_each_customer_with_its_read_and_its_hit() -> None:
    victims = [f"v{i}" for i in range(4)]
    events = build_events([BANK, {"who": "carol", "customers": victims, "at": "2026-03-02T10:00:00Z"},
                           {"who": "carol", "customers": ["x1", "x2"]}] + _frauds(victims))
    (alert,) = engine(FRAUD).run(events)
    assert alert.staff_id == "carol" and alert.person_name == "Carol Vitols" and alert.severity == "high"
    links = alert.measures["links"]
    assert sorted(x["customer"] for x in links) == sorted(test_key(v) for v in victims[:3])
    assert all(x["read_at"].startswith("2026-03-02T10:00") and x["days"] == pytest.approx(8.0, abs=0.2)
               for x in links)
    assert all(x["what"].startswith("confirmed fraud (case FR-v") for x in links)
    assert "Carol Vitols read 3 customers who were confirmed victims of fraud within 30 days" in alert.summary
    assert alert.measures["read"] == 6 and alert.measures["p"] < 1e-6
    read_id, first_fraud = events[1].id, events[3].id
    assert read_id in alert.evidence and first_fraud in alert.evidence


def test_severity_rises_with_the_number_of_customers_one_alert_per_step() -> None:
    victims = [f"v{i}" for i in range(12)]
    alerts = engine(FRAUD).run(build_events(
        [BANK, {"who": "carol", "customers": victims, "at": "2026-03-02T10:00:00Z"}] + _frauds(victims)))
    assert [(a.severity, a.measures["customers"]) for a in alerts] == [("high", 3), ("critical", 10)]
    assert len({a.alert_id for a in alerts}) == 2


def test_one_fraud_can_complete_the_alerts_of_two_people_who_read_the_customer() -> None:
    victims = ["v1", "v2", "v3"]
    alerts = engine(FRAUD).run(build_events(
        [BANK, {"who": "carol", "customers": victims, "at": "2026-03-02T10:00:00Z"},
         {"who": "alice", "customers": victims, "at": "2026-03-02T11:00:00Z"}] + _frauds(victims)))
    assert sorted(a.staff_id for a in alerts) == ["alice", "carol"]
    assert {a.ts for a in alerts} == {dt.datetime(2026, 3, 10, 11, tzinfo=dt.timezone.utc)}


def test_reads_before_and_fraud_after_a_restart_still_link() -> None:
    victims = ["v1", "v2", "v3"]
    first = MemoryState()
    eng = engine(FRAUD, state=first)
    events = build_events([BANK, {"who": "carol", "customers": victims, "at": "2026-03-02T10:00:00Z"}]
                          + _frauds(victims))
    assert eng.run(events[:3]) == []
    restored = MemoryState()
    for rule_id, part, group, doc in first.take_dirty():
        if doc is not None:
            restored.restore(rule_id, part, group, doc)
    (alert,) = engine(FRAUD, state=restored).run(events[3:])
    assert alert.measures["customers"] == 3


def test_old_trails_and_counts_are_swept_once_no_hit_can_link_them() -> None:
    state = MemoryState()
    eng = engine(FRAUD, state=state)
    eng.run(build_events([{"who": "carol", "customers": 50, "at": "2026-03-02T10:00:00Z"}]))
    assert len(list(state.groups(FRAUD, "trail"))) == 50
    eng.sweep(dt.datetime(2026, 3, 20, tzinfo=dt.timezone.utc).timestamp())
    assert len(list(state.groups(FRAUD, "trail"))) == 50
    eng.sweep(dt.datetime(2026, 4, 10, tzinfo=dt.timezone.utc).timestamp())
    assert list(state.groups(FRAUD, "trail")) == []
    assert len(list(state.groups(FRAUD, "series"))) == 2  # carol's and everyone's reads, for the 90-day period
    eng.sweep(dt.datetime(2026, 6, 10, tzinfo=dt.timezone.utc).timestamp())
    assert list(state.groups(FRAUD, "series")) == []


def test_a_heavy_reader_whose_share_of_the_victims_is_chance_is_not_alerted() -> None:
    # carol reads 30 % of the customers anyone read; 30 % of the victims were among them.
    # The frauds come in mixed, as they do: the rule judges by the hits known so far.
    hers, others = [f"c{1 + 10 * i}" for i in range(30)], [f"c{1001 + 10 * i}" for i in range(70)]
    frauds = [x for b in range(10) for x in hers[3 * b:3 * b + 3] + others[7 * b:7 * b + 7]]
    quiet = engine(FRAUD).run(build_events(
        [{"who": "bob", "customers": 700, "customers_from": 1001, "at": "2026-03-01T10:00:00Z"},
         {"who": "carol", "customers": 300, "at": "2026-03-02T10:00:00Z"}] + _frauds(frauds)))
    assert quiet == []


@pytest.mark.parametrize("change, message", [
    ({"triggers": ["phishing"]}, "is not a trigger"),
    ({"events": ["db.query"]}, "add them to events"),
    ({"severity_steps": {"urgent": 5}}, "must be one of"),
    ({"severity_steps": {"low": 5}}, "may only raise"),
    ({"window": "60d", "period": "30d"}, "period at least as long"),
    ({"max_p": 2}, "probability"),
])
def test_a_wrong_linkage_setting_is_refused_naming_it(change: dict[str, object], message: str) -> None:
    doc = {"id": "site.link", "title": "Link", "kind": "linkage", "severity": "medium",
           "events": ["db.query", "business.fraud_confirmed"], "triggers": ["fraud_confirmed"], **change}
    with pytest.raises(RuleSyntaxError, match=message):
        parse_rule(doc, "site.yaml")


def test_the_synthetic_lending_insider_is_named_with_her_victims_and_nobody_else_is() -> None:
    bank = generate(seed=11, days=14, loan_fraud=True)
    planted = bank.planted[-1]
    alerts, _ = replay_scenario(bank, load_rules())
    linked = [a for a in alerts if a.rule_id in (FRAUD, TAKEOVER)]
    assert linked and {a.staff_id for a in linked} == {planted.who}
    read = {k for e in bank.events if isinstance(e, DbQuery) and e.actor.db_user == planted.who
            for k in e.payload.customer_keys}
    hit = {e.payload.customer_key for e in bank.events  # type: ignore[attr-defined]
           if e.__struct_config__.tag == "business.fraud_confirmed"}  # type: ignore[attr-defined]
    fraud_alerts = [a for a in linked if a.rule_id == FRAUD]
    named = {x["customer"] for a in fraud_alerts for x in a.measures["links"]}
    assert len(named) >= 3 and named <= hit & read  # named when the alert was raised; later victims follow
