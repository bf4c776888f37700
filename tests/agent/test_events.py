from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from agent import events as ev
from agent.ids import uuid7, uuid7_time_ms


def query_event(**payload: object) -> ev.Envelope:
    p = {"session_id": "s1", "statement_type": "SELECT", "fingerprint": "abc", "statement": "SELECT ?"}
    p.update(payload)
    return ev.new_event(ev.DbQuery, ev.DbQueryPayload(**p), source=ev.Source(type="proxy"),  # type: ignore[arg-type]
                        actor=ev.Actor(db_user="alice"))


def test_an_event_round_trips_through_json() -> None:
    e = query_event(rows=12, tables_read=["public.customers"])
    assert ev.decode(ev.encode(e)) == e


def test_ids_sort_by_time_and_never_go_backwards() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5000
    assert abs(uuid7_time_ms(ids[-1]) / 1000 - dt.datetime.now().timestamp()) < 5


def test_every_kind_has_a_payload_type() -> None:
    assert set(ev.KINDS) >= {"db.query", "db.session", "file.export", "device.mount", "agent.heartbeat",
                              "business.loan_application", "business.contact_change", "business.card_binding",
                              "business.fraud_confirmed"}
    for kind, cls in ev.KINDS.items():
        assert ev.PAYLOAD_TYPES[kind].__name__.endswith("Payload"), kind


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda d: d.update(ts="2026-11-27T03:00:00"), "$.ts"),
        (lambda d: d.update(kind="db.nonsense"), "$.kind"),
        (lambda d: d["payload"].update(rows="many"), "$.payload.rows"),
        (lambda d: d["payload"].pop("session_id"), "session_id"),
        (lambda d: d.update(schema=99), "$.schema"),
        (lambda d: d["payload"].update(customer_keys=["not-a-hash"]), "$.payload.customer_keys[0]"),
        (lambda d: d["payload"].update(customer_keys=["ab" * 32, "AB" * 32]), "$.payload.customer_keys[1]"),
        (lambda d: d["payload"].update(sensitive_classes=["name", "Card"]), "$.payload.sensitive_classes[1]"),
        (lambda d: d.update(id=d["id"].upper()), "$.id"),
        (lambda d: d.update(id=d["id"][:14] + "4" + d["id"][15:]), "$.id"),
        (lambda d: d["source"].update(type="Proxy"), "$.source.type"),
    ],
)
def test_a_bad_event_is_refused_naming_the_field(mutate, where) -> None:  # type: ignore[no-untyped-def]
    doc = msgspec.json.decode(ev.encode(query_event()))
    mutate(doc)
    with pytest.raises(msgspec.ValidationError) as info:
        ev.decode(msgspec.json.encode(doc))
    assert where in str(info.value)
