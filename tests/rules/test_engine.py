"""The engine: identity enrichment, system reads, rule failures isolated, and state that survives a dump/load."""

from __future__ import annotations

import datetime as dt
import json

from rules.engine import Engine
from rules.parse import load_rules
from rules.state import MemoryState
from rules.testing import build_events, test_context

RULESET = load_rules()


def engine(rule_ids: list[str] | None = None, state: MemoryState | None = None) -> Engine:
    ctx = test_context(RULESET.context_doc)
    rules = [r for r in RULESET.rules if rule_ids is None or r.id in rule_ids]
    return Engine(rules, ctx, state or MemoryState(ctx.assignments))


def test_a_staff_agents_session_ties_a_shared_db_account_to_the_person_at_the_keyboard() -> None:
    eng = engine(["custos.bulk_sensitive_read"])
    events = build_events([
        # the staff agent on Tina's machine sees psql connect from 10.1.0.9:50111 as OS user tina
        {"kind": "db.session", "actor": {"os_user": "tina"}, "source": {"type": "staff"},
         "payload": {"phase": "start", "client_addr": "10.1.0.9", "client_port": 50111,
                     "process": {"pid": 4242, "name": "psql"}}},
        # the proxy sees the shared account `teller` on that socket
        {"who": "teller", "rows": 6000, "classes": ["card_number"],
         "payload": {"client_addr": "10.1.0.9", "client_port": 50111}},
    ])
    (alert,) = eng.run(events)
    assert alert.staff_id == "tina" and alert.person_name == "Tina Egle"
    assert eng.fact(events[1]).program == "psql"  # the program the staff agent saw, as the proxy cannot


def test_a_shared_account_without_a_tie_names_the_account_not_a_person() -> None:
    eng = engine(["custos.bulk_sensitive_read"])
    (alert,) = eng.run(build_events([{"who": "teller", "rows": 6000, "classes": ["card_number"]}]))
    assert alert.staff_id is None and alert.group == "db:teller"


def test_system_reads_never_count_as_a_persons_reads_in_any_rule() -> None:
    eng = engine()
    system = build_events([{"who": "alice", "rows": 100000, "customers": 300, "classes":
                            ["name", "national_id", "phone", "card_number"], "payload": {"system": True},
                            "at": "2026-03-07T23:00:00Z", "repeat": 20, "every": "1m"}])
    assert eng.run(system) == []


def test_a_rule_that_raises_is_counted_and_the_others_still_run() -> None:
    eng = engine(["custos.bulk_sensitive_read", "custos.honeytoken_read"])

    class Broken(Exception):
        pass

    def boom(f, state):  # type: ignore[no-untyped-def]
        raise Broken("bug")
    bulk = next(e for e in eng.evaluators if e.id == "custos.bulk_sensitive_read")
    bulk.observe = boom  # type: ignore[method-assign]
    alerts = eng.run(build_events([{"who": "carol", "rows": 6000, "classes": ["card_number"],
                                    "customers": ["canary-1"]}]))
    assert [a.rule_id for a in alerts] == ["custos.honeytoken_read"]
    assert eng.errors["custos.bulk_sensitive_read"] == 1


def _scenario() -> list:  # type: ignore[type-arg]
    specs = []
    for day in range(2, 14):
        for who in ("alice", "bob", "bea", "ben"):
            specs.append({"who": who, "at": f"2026-03-{day:02d}T08:{10 + len(specs) % 40:02d}:00Z",
                          "customers": 20, "customers_from": day * 100, "classes": ["phone"],
                          "payload": {"client_addr": "10.1.0.5"}, "rows": 20})
    specs.append({"who": "alice", "at": "2026-03-13T23:00:00Z", "customers": 200, "customers_from": 9000,
                  "classes": ["card_number"], "rows": 6000, "payload": {"client_addr": "10.2.0.8"}})
    return build_events(specs)


def test_state_dumped_and_loaded_midway_gives_the_same_alerts_as_one_run() -> None:
    events = _scenario()
    whole = engine()
    expected = [a.alert_id for a in whole.run(events)]
    assert len(expected) >= 4  # bulk, off-hours, spike, first-seen origin…

    first = engine()
    got = [a.alert_id for a in first.run(events[:30])]
    dumped = json.loads(json.dumps([(r, p, g, first.state.peek(r, p, g).dump())  # type: ignore[attr-defined]
                                    for (r, p), groups in first.state.data.items()  # type: ignore[attr-defined]
                                    for g in groups]))
    restored = MemoryState(first.state._assignments)  # type: ignore[attr-defined]
    for r, p, g, doc in dumped:
        restored.restore(r, p, g, doc)
    second = engine(state=restored)
    got += [a.alert_id for a in second.run(events[30:])]
    assert got == expected


def test_evaluating_the_same_events_again_gives_the_same_alert_ids() -> None:
    events = _scenario()
    assert [a.alert_id for a in engine().run(events)] == [a.alert_id for a in engine().run(events)]


def test_a_sweep_forgets_stale_windows_and_socket_ties_but_keeps_fresh_ones() -> None:
    eng = engine(["custos.bulk_sensitive_read"])
    eng.run(build_events([
        {"kind": "db.session", "actor": {"os_user": "tina"}, "source": {"type": "staff"}, "at": "2026-03-01T09:00:00Z",
         "payload": {"phase": "start", "client_addr": "10.1.0.9", "client_port": 50111}},
        {"who": "alice", "rows": 10, "classes": ["phone"], "at": "2026-03-01T09:00:00Z"},
        {"who": "bob", "rows": 10, "classes": ["phone"], "at": "2026-03-04T09:00:00Z"},
    ]))
    state = eng.state
    assert eng.sweep(dt.datetime(2026, 3, 4, 10, tzinfo=dt.timezone.utc).timestamp()) == 2
    assert state.peek("custos.bulk_sensitive_read", "window", "alice") is None
    assert state.peek("custos.bulk_sensitive_read", "window", "bob") is not None
    assert state.peek("_identity", "mark", "10.1.0.9:50111") is None
    assert ("custos.bulk_sensitive_read", "window", "alice") in state.dirty  # a store deletes its row


def test_an_approved_batch_window_allows_its_account_only_in_its_hours(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "r.yaml").write_text(
        "id: site.any_card_read\ntitle: Any card read\nkind: match\nseverity: low\ntags: [T1213]\n"
        "events: [db.query]\nfilter: {sensitive: [card_number]}\nsuppress: 0s\n"
        "allow:\n  windows: [{hours: 'mon-fri 01:00-05:00', tz: Europe/Vilnius, accounts: [bob]}]\n")
    rs = load_rules([tmp_path], builtin=False)
    ctx = test_context(rs.context_doc)
    eng = Engine(rs.rules, ctx, MemoryState())
    alerts = eng.run(build_events([
        {"who": "bob", "classes": ["card_number"], "at": "2026-03-03T00:30:00Z"},   # 02:30 Vilnius: approved
        {"who": "bob", "classes": ["card_number"], "at": "2026-03-03T09:30:00Z"},   # 11:30: not in the window
        {"who": "alice", "classes": ["card_number"], "at": "2026-03-03T00:31:00Z"},  # not her window
    ]))
    assert [(a.staff_id, a.ts.hour) for a in alerts] == [("bob", 9), ("alice", 0)]


def test_the_rules_package_imports_neither_the_collector_nor_a_web_framework() -> None:
    import subprocess
    import sys
    code = ("import sys, rules, rules.engine, rules.parse, rules.testing, rules.scenario; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('collector', 'fastapi', 'starlette', 'sqlalchemy')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
