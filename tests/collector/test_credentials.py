"""Credentials against a real collector: who may send, who may read, revocation on the next request, and tokens
kept only as hashes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest
from sqlalchemy import select

from agent import events as ev
from collector import credentials
from collector.db import credentials as credentials_table
from tests.helpers.api import EVENTS, Served, card_event, export_event, loan_event, query_event

UTC = dt.timezone.utc


def _post_with(api: Served, authorization: str | None, event: ev.Envelope) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return httpx.post(api.url + EVENTS, content=b'{"events":[' + ev.encode(event) + b"]}", headers=headers,
                      timeout=30)


def test_missing_unknown_and_malformed_credentials_get_401_and_store_nothing(api: Served) -> None:
    refused = {
        "missing": None,
        "basic": "Basic dXNlcjpwYXNz",
        "bearer alone": "Bearer",
        "unknown": "Bearer cst_" + "A" * 43,
        "one character off": "Bearer " + api.agent_token[:-1] + ("x" if api.agent_token[-1] != "x" else "y"),
        "not ours": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.signature",
        "huge": "Bearer cst_" + "B" * 4000,
    }
    sent = []
    for what, header in refused.items():
        event = query_event()
        sent.append(event.id)
        response = _post_with(api, header, event)
        assert response.status_code == 401, what
        assert response.headers["www-authenticate"] == "Bearer", what
        assert response.json()["detail"], what

    assert api.stored() == {}
    assert _post_with(api, f"Bearer {api.agent_token}", query_event()).json()["accepted"] == 1


def test_a_credential_revoked_while_the_collector_runs_is_refused_on_its_next_request(api: Served) -> None:
    token = api.collector.enroll("branch-7")
    before, after = query_event(), query_event()
    assert api.post_events(before, token=token).json()["accepted"] == 1

    api.collector.cli("agents", "revoke", "branch-7")
    response = api.post_events(after, token=token)

    assert response.status_code == 401
    assert response.json()["detail"] == "unknown or revoked credential"
    assert set(api.stored()) == {before.id}
    assert api.stored()[before.id]["agent"] == "branch-7"

    # Enrolled again, the agent works with its new credential; the old one stays refused.
    new_token = api.collector.enroll("branch-7")
    assert new_token != token
    assert api.post_events(after, token=token).status_code == 401
    assert api.post_events(after, token=new_token).json()["accepted"] == 1


def test_api_tokens_read_events_filtered_by_kind_time_and_agent_and_page_on(api: Served) -> None:
    output = api.collector.cli("tokens", "create", "reader", "--role", "analyst")
    token = output.strip().splitlines()[-1]
    assert token.startswith("cst_") and token == token.strip() and " " not in token
    second_agent = api.collector.enroll("agent-2")

    base = dt.datetime(2026, 11, 1, tzinfo=UTC)
    sent = [
        (query_event(ts=base), api.agent_token),
        (loan_event(ts=base + dt.timedelta(hours=1)), api.agent_token),
        (card_event(ts=base + dt.timedelta(hours=2)), api.agent_token),
        (export_event(ts=base + dt.timedelta(hours=3)), second_agent),
        (query_event(ts=base + dt.timedelta(hours=4)), second_agent),
    ]
    for event, by in sent:  # one batch each, so that ingest order is this order
        assert api.post_events(event, token=by).json()["accepted"] == 1
    q0, loan, card, export, q1 = (e.id for e, _ in sent)

    def ids(**params: object) -> list[str]:
        response = api.get(token=token, **params)
        assert response.status_code == 200, response.text
        return [e["event"]["id"] for e in response.json()["events"]]

    assert ids(kind="db.query") == [q0, q1]
    assert ids(kind="business.*") == [loan, card]
    assert ids(kind="business.card_binding", limit=10) == [card]
    assert ids(kind="db.*") == [q0, q1]
    assert ids(kind="db_*") == []  # a prefix is taken literally: "_" is no wildcard
    assert ids(kind="*") == [q0, loan, card, export, q1]
    assert ids(since="2026-11-01T01:00:00Z", until="2026-11-01T03:00:00Z") == [loan, card]
    assert ids(since="2026-11-01T03:00:00+02:00", until="2026-11-01T03:00:00+00:00") == [loan, card]
    assert ids(since="2026-11-01T04:00:00Z") == [q1]
    assert ids(agent="agent-2") == [export, q1]
    assert ids(agent="agent-2", kind="db.query") == [q1]
    assert ids(agent="nobody") == []

    pages, after = [], None
    for _ in range(5):
        params: dict[str, object] = {"limit": 2} if after is None else {"limit": 2, "after": after}
        page = api.get(token=token, **params).json()
        if not page["events"]:
            assert page["next_after"] is None
            break
        pages.append([e["event"]["id"] for e in page["events"]])
        after = page["next_after"]
        assert after == page["events"][-1]["seq"]
    assert pages == [[q0, loan], [card, export], [q1]]

    full = api.get(token=token, kind="file.export").json()["events"][0]
    exported = next(e for e, _ in sent if e.id == export)
    assert full["agent"] == "agent-2"
    assert full["event"] == json.loads(ev.encode(msgspec.structs.replace(exported, agent_id="agent-2")))


WRONG_READS = [
    ({"since": "2026-11-01T00:00:00"}, "since"),
    ({"until": "yesterday"}, "until"),
    ({"since": "0.5"}, "since"),
    ({"limit": 0}, "limit"),
    ({"limit": 10001}, "limit"),
    ({"after": -1}, "after"),
    ({"after": 2**63}, "after"),
    ({"kind": "x" * 65}, "kind"),
    ({"host": "a\x00b"}, "host"),
]


def test_a_wrong_read_parameter_is_answered_422_naming_it(sqlite_api: Served) -> None:
    for params, name in WRONG_READS:
        response = sqlite_api.get(**params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["detail"].startswith(name), (params, response.text)
    assert sqlite_api.get(since="2026-11-01T00:00:00Z", limit=10000, after=2**63 - 1).status_code == 200


def test_agent_credentials_cannot_read_and_api_tokens_cannot_send(api: Served) -> None:
    assert api.post_events(query_event()).json()["accepted"] == 1

    as_agent = api.get(token=api.agent_token)
    assert as_agent.status_code == 403
    assert "analyst" in as_agent.json()["detail"]

    sent_by_token = query_event()
    response = api.post_events(sent_by_token, token=api.api_token)
    assert response.status_code == 403
    assert sent_by_token.id not in api.stored()

    manager = api.collector.api_token("boss", role="manager")
    assert api.get(token=manager).status_code == 403
    assert api.get().status_code == 200


def test_a_business_source_credential_may_send_only_business_events(api: Served) -> None:
    token = credentials.create(api.engine, "core-banking", "source")
    loan, query = loan_event(), query_event()

    ack = api.post_events(loan, query, token=token).json()

    assert ack["accepted"] == 1
    assert ack["rejected"] == [{"index": 1, "reason": "this credential may send only business.* events",
                                "id": query.id}]
    assert set(api.stored()) == {loan.id}
    assert api.get(token=token).status_code == 403


def test_tokens_are_stored_only_as_hashes(api: Served, db_url: str) -> None:
    tokens = [api.collector.enroll("hash-check-agent"), api.collector.api_token("hash-check-reader"),
              api.agent_token, api.api_token]

    with api.engine.connect() as conn:
        rows = conn.execute(select(credentials_table)).mappings().all()
    assert len(rows) == 4
    stored_text = " ".join(str(v) for row in rows for v in row.values())
    for token in tokens:
        secret = token.removeprefix("cst_")
        assert secret not in stored_text
    assert all(len(row["token_hash"]) == 64 and int(row["token_hash"], 16) >= 0 for row in rows)

    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        files = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        for token in tokens:
            assert token.removeprefix("cst_").encode() not in files


def test_giving_an_active_credentials_name_again_is_refused_in_one_line(api: Served) -> None:
    api.collector.enroll("twice")
    proc = subprocess.run([sys.executable, "-m", "collector", "agents", "enroll", "twice"], env=api.collector.env,
                          cwd=api.collector.workdir, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "exists already" in proc.stderr and "custos agents revoke twice" in proc.stderr
    assert "Traceback" not in proc.stderr
