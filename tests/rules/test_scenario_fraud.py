"""The synthetic bank's lending system and the loan-fraud insider (rules/scenario_fraud.py), and the scenario's
local times in any season."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import msgspec
import pytest

from agent.events import DbQuery, encode
from rules.parse import RULE_KINDS, load_rules
from rules.scenario import TZ, Scenario, generate, replay_scenario, score

SEED = 5


@pytest.fixture(scope="module")
def bank() -> Scenario:
    return generate(seed=SEED, days=14, loan_fraud=True)


def _kind(e: object) -> str:
    return str(e.__struct_config__.tag)  # type: ignore[attr-defined]


def test_lending_activity_leaves_the_rest_of_the_bank_as_it_was(bank: Scenario) -> None:
    plain = generate(seed=SEED, days=14)
    insider = bank.planted[-1].who

    def content(scn: Scenario) -> Counter[bytes]:
        return Counter(encode(msgspec.structs.replace(e, id="0" * 8 + "-0000-7000-8000-" + "0" * 12))
                       for e in scn.events if not _kind(e).startswith("business.")
                       and not (isinstance(e, DbQuery) and e.actor.db_user == insider))

    assert content(bank) == content(plain)
    assert [p.name for p in plain.planted] == [p.name for p in bank.planted][:-1]


def test_every_victim_was_read_by_the_insider_before_the_fraud_hit_them(bank: Scenario) -> None:
    planted = bank.planted[-1]
    assert planted.name == "loan_fraud_link" and planted.needs == "linkage"
    person = next(p for p in bank.people if p.staff_id == planted.who)
    assert person.team == "call_centre"
    frauds = [e for e in bank.events if _kind(e) == "business.fraud_confirmed"]
    assert len(frauds) >= 8
    reads: dict[str, dt.datetime] = {}
    for e in bank.events:
        if isinstance(e, DbQuery) and e.actor.db_user == person.staff_id:
            for key in e.payload.customer_keys:
                reads.setdefault(key, e.ts)
    for fraud in frauds:
        key = fraud.payload.customer_key  # type: ignore[attr-defined]
        assert key in reads and reads[key] < fraud.ts
        loans = [e for e in bank.events if _kind(e) == "business.loan_application"
                 and e.payload.customer_key == key and e.payload.new_device]  # type: ignore[attr-defined]
        assert loans and reads[key] < loans[0].ts < fraud.ts
        assert planted.start <= reads[key] and fraud.ts <= planted.end
    # The insider's reads look like her colleagues': one customer each, name and phone, in her shift.
    mine = [e for e in bank.events if isinstance(e, DbQuery) and e.actor.db_user == person.staff_id]
    assert {len(e.payload.customer_keys) for e in mine} == {1}
    assert {tuple(e.payload.sensitive_classes) for e in mine} == {("name", "phone")}


def test_the_loan_fraud_link_is_pending_without_a_linkage_rule_and_found_with_one(bank: Scenario) -> None:
    rs = load_rules()
    kinds = {r.kind for r in rs.rules}
    alerts, engine = replay_scenario(bank, rs)
    report = score(bank, alerts, kinds=kinds)
    assert report.missed == [] and not engine.errors
    if "linkage" in RULE_KINDS:
        assert "loan_fraud_link" in report.found and report.pending == []
    else:
        assert report.pending == ["loan_fraud_link"]
        assert score(bank, alerts, kinds=kinds | {"linkage"}).missed == ["loan_fraud_link"]
    assert len(report.false_alerts) <= 2


@pytest.mark.parametrize("start", [dt.date(2026, 6, 1), dt.date(2026, 10, 19)])
def test_work_keeps_local_hours_in_summer_and_across_the_clock_change(start: dt.date) -> None:
    scn = generate(seed=SEED, days=14, start=start)
    loans = {p.staff_id for p in scn.people if p.team == "loans" and p.manager}
    hours = [e.ts.astimezone(TZ).hour for e in scn.events
             if isinstance(e, DbQuery) and e.actor.db_user in loans and (e.ts.astimezone(TZ).date() - start).days < 7]
    assert min(hours) >= 7 and max(hours) <= 19
    end = dt.datetime.combine(start + dt.timedelta(days=14), dt.time(0), TZ)
    beats = [e.ts for e in scn.events if _kind(e) == "agent.heartbeat" and e.agent_id == "proxy-core"]
    assert end - dt.timedelta(minutes=6) < max(beats) < end
