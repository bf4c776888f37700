"""Running rules' own test cases, and building events from their short YAML form.

A test event is a mapping; everything has a default so that a case says only what matters:

    - at: 2026-03-02T02:10:00Z     # event time (with zone); default: one minute after the previous event
      who: alice                    # db_user (db.* events) or os_user (others); see TEST_CONTEXT's directory
      kind: db.query                # default db.query
      rows: 6000                    # payload.rows
      classes: [card_number]        # db.query: sensitive_classes; file.export: counts (`{card_number: 120}`)
      customers: 40                 # 40 customer keys c1…c40 (or a list of names; `customers_from: 100`)
      customer: c7                  # business.* events: the customer the record is about (payload.customer_key)
      tables: [public.cards]        # tables_read
      repeat: 10                    # the same event 10 times, `every: 1m` apart
      payload: {…}                  # any other payload field; actor:, source:, host: as in the event schema

Customer names become keys with `test_key` (a plain SHA-256, for tests only; production keys are keyed HMACs).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.events import KINDS, Envelope
from agent.ids import uuid7
from agent.units import parse_duration
from rules.alerts import Alert
from rules.context import Context, context_from_mapping
from rules.engine import Engine, as_event
from rules.errors import RuleSyntaxError
from rules.model import Rule, RuleTest
from rules.parse import RuleSet, _merge_context
from rules.state import MemoryState


def test_key(name: str) -> str:
    """A customer key for tests: 64 hex characters derived from a readable name (hex keys pass unchanged)."""
    if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return name
    return hashlib.sha256(f"custos-test:{name}".encode()).hexdigest()


test_key.__test__ = False  # type: ignore[attr-defined]  # not a pytest test

TEST_CONTEXT: dict[str, Any] = {
    "lists": {"honeytokens": ["canary-1", "canary-2"]},
    "sites": {"hq": ["10.1.0.0/16"], "branch-north": ["10.2.0.0/16"]},
    "calendars": {
        "default": {"tz": "Europe/Vilnius", "hours": ["mon-fri 08:00-18:00"], "holidays": ["2026-03-11"]},
        "teams": {"call_centre": {"hours": ["mon-sun 07:00-22:00"]}},
    },
    "directory": {"people": [
        {"staff_id": "alice", "name": "Alice Berg", "team": "loans", "manager": "mia", "db_users": "alice",
         "os_users": "alice"},
        {"staff_id": "bob", "name": "Bob Kalns", "team": "loans", "manager": "mia", "db_users": "bob",
         "os_users": "bob"},
        {"staff_id": "bea", "name": "Bea Ozola", "team": "loans", "manager": "mia", "db_users": "bea",
         "os_users": "bea"},
        {"staff_id": "ben", "name": "Ben Liepa", "team": "loans", "manager": "mia", "db_users": "ben",
         "os_users": "ben"},
        {"staff_id": "carol", "name": "Carol Vitols", "team": "call_centre", "db_users": "carol",
         "os_users": "carol"},
        {"staff_id": "dave", "name": "Dave Zarins", "team": "it", "db_users": "dave;teller", "os_users": "dave"},
        {"staff_id": "tina", "name": "Tina Egle", "team": "it", "db_users": "tina;teller", "os_users": "tina"},
        {"staff_id": "erin", "name": "Erin Smits", "team": "loans", "end_date": "2026-03-01", "db_users": "erin",
         "os_users": "erin"},
        {"staff_id": "frank", "name": "Frank Ozols", "team": "risk", "shift": "mon-fri 22:00-06:00",
         "db_users": "frank", "os_users": "frank"},
        {"staff_id": "svc_batch", "name": "Nightly batch", "kind": "service", "db_users": "svc_batch"},
    ]},
    "assignments": {"alice": [f"c{i}" for i in range(1, 21)]},
}
BASE_TIME = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)  # a Monday
_DB_KINDS = ("db.query", "db.session")


def _parse_time(value: Any) -> dt.datetime:
    when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise RuleSyntaxError(f"test event time {value!r} needs a zone, such as 2026-03-02T10:00:00Z", field="at")
    return when.astimezone(dt.timezone.utc)


def _customer_keys(spec: Any, start: int) -> list[str]:
    if isinstance(spec, int):
        return [test_key(f"c{i}") for i in range(start, start + spec)]
    return [test_key(str(n)) for n in spec]


def build_events(specs: Iterable[Mapping[str, Any]], start: dt.datetime = BASE_TIME) -> list[Envelope]:
    """Events from the short form above, in the order given (times may go backwards: late events)."""
    out: list[Envelope] = []
    when = start - dt.timedelta(minutes=1)
    for n, spec in enumerate(specs):
        spec = dict(spec)
        kind = spec.pop("kind", "db.query")
        if kind not in KINDS:
            raise RuleSyntaxError(f"unknown event kind {kind!r}", field=f"events[{n}].kind")
        when = _parse_time(spec.pop("at")) if "at" in spec else when + dt.timedelta(minutes=1)
        repeat = int(spec.pop("repeat", 1))
        every = parse_duration(spec.pop("every", "1m"))
        who = spec.pop("who", None)
        payload = dict(spec.pop("payload", {}) or {})
        actor = dict(spec.pop("actor", {}) or {})
        if who is not None:
            actor.setdefault("db_user" if kind in _DB_KINDS else "os_user", who)
        default_type = "proxy" if kind in _DB_KINDS else "business" if kind.startswith("business.") else "staff"
        source = spec.pop("source", {"type": default_type, "name": "test"})
        host = spec.pop("host", "ws-test")
        start_key = int(spec.pop("customers_from", 1))
        if "customers" in spec:
            payload["customer_keys"] = _customer_keys(spec.pop("customers"), start_key)
        if "customer" in spec:
            payload["customer_key"] = test_key(str(spec.pop("customer")))
        if "rows" in spec:
            payload["rows"] = spec.pop("rows")
        if "tables" in spec:
            payload["tables_read"] = spec.pop("tables")
        if "classes" in spec:
            classes = spec.pop("classes")
            if kind == "file.export":
                payload["counts"] = classes if isinstance(classes, Mapping) else {c: 100 for c in classes}
            else:
                payload["sensitive_classes"] = list(classes)
        agent_id = spec.pop("agent_id", "agent-test")
        if spec:
            raise RuleSyntaxError(f"unknown test event fields {', '.join(sorted(spec))}", field=f"events[{n}]")
        payload = {**_payload_defaults(kind, n), **payload}
        for i in range(repeat):
            ts = when + dt.timedelta(seconds=every * i)
            doc = {"kind": kind, "id": uuid7(int(ts.timestamp() * 1e9)), "ts": ts.isoformat(), "host": host,
                   "source": source, "actor": actor, "agent_id": agent_id, "payload": payload}
            out.append(as_event(doc))
        when = when + dt.timedelta(seconds=every * (repeat - 1))
    return out


def _payload_defaults(kind: str, n: int) -> dict[str, Any]:
    if kind == "db.query":
        return {"session_id": f"s{n}", "statement_type": "SELECT", "fingerprint": "f0", "statement": "SELECT ?"}
    if kind == "db.session":
        return {"session_id": f"s{n}", "phase": "start"}
    if kind == "file.export":
        return {"path": f"/home/u/export{n}.csv", "action": "created", "size": 1000, "destination": "local"}
    if kind == "device.mount":
        return {"action": "added", "mount_point": "/media/usb"}
    if kind == "business.loan_application":
        return {"application_id": f"L{n}"}
    if kind == "business.contact_change":
        return {"field": "phone"}
    if kind == "business.fraud_confirmed":
        return {"case_id": f"FR-{n}", "confirmed_on": "2026-03-02"}
    if kind == "business.device_login":
        return {"device_id": f"dev-{n}"}
    if kind == "business.card_binding":
        return {"action": "bind"}
    if kind == "agent.heartbeat":
        return {"version": "test", "uptime_s": 1.0, "spool_depth": 0, "spool_bytes": 0, "dropped": 0,
                "dead_lettered": 0}
    return {}


@dataclass
class CaseResult:
    rule_id: str
    case: str
    expected: int
    got: int
    alerts: list[Alert] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.got == self.expected


def test_context(base_doc: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Context:
    """The context a rule test runs in: the rule set's context, TEST_CONTEXT, then the case's own."""
    doc: dict[str, Any] = copy.deepcopy(dict(base_doc or {}))
    _merge_context(doc, copy.deepcopy(TEST_CONTEXT))
    if extra:
        _merge_context(doc, extra)
    doc.pop("overrides", None)
    return context_from_mapping(doc, hash_names=test_key)


test_context.__test__ = False  # type: ignore[attr-defined]


def run_case(rule: Rule, case: RuleTest, base_doc: Mapping[str, Any] | None = None) -> CaseResult:
    try:
        ctx = test_context(base_doc, case.context)
        events = build_events(case.events)
        engine = Engine([dataclasses.replace(rule, enabled=True)], ctx, MemoryState(ctx.assignments))
        alerts = engine.run(events)
        if case.now is not None:
            alerts += engine.tick(_parse_time(case.now), started=events[0].ts if events else None)
        if engine.errors:
            return CaseResult(rule.id, case.name, case.expect, len(alerts), alerts,
                              f"the rule raised on {sum(engine.errors.values())} events (see the log)")
        return CaseResult(rule.id, case.name, case.expect, len(alerts), alerts)
    except RuleSyntaxError as e:
        return CaseResult(rule.id, case.name, case.expect, -1, [], str(e))


def run_rule_tests(ruleset: RuleSet, rule_id: str | None = None) -> list[CaseResult]:
    """Every test case of every rule (or of one rule), in rule order."""
    results = []
    for rule in ruleset.rules:
        if rule_id is not None and rule.id != rule_id:
            continue
        for case in rule.tests:
            results.append(run_case(rule, case, ruleset.context_doc))
    return results
