"""The UI's JSON API and pages in process (FastAPI's test client over the real app): documented in OpenAPI,
API tokens and session cookies with CSRF, manager scoping, the agents page, views recorded in the audit log."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from collector import credentials
from collector.alerts import AlertStore
from collector.app import create_app
from collector.config import CollectorConfig, RulesSection
from collector.db import audit_log, make_engine
from collector.migrate import upgrade
from collector.rules_state import import_directory
from collector.store import EventStore
from collector.ui_config import WeeklySection
from collector.users import create_user
from rules.alerts import Alert
from rules.identity import Person
from rules.testing import build_events

with warnings.catch_warnings():  # starlette asks for `httpx2` when imported with httpx; the client works as is
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PASSWORD = "correct horse battery"
NOW = dt.datetime.now(dt.timezone.utc)


def _alert(n: int, who: str, team: str) -> Alert:
    ts = NOW - dt.timedelta(hours=n)
    return Alert(f"{n:032x}", "custos.bulk_sensitive_read", "Bulk read", "high", ("T1213",), who, ts, ts, ts,
                 f"{who} read 9,000 card rows", (), staff_id=who, person_name=who.title(), team=team)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    e = make_engine(sqlite_url)
    upgrade(e)
    import_directory(e, [Person("alice", "Alice Berg", "loans", db_users=("alice",)),
                         Person("frank", "Frank Ozols", "risk", db_users=("frank",))])
    AlertStore(e).save([_alert(1, "alice", "loans"), _alert(2, "frank", "risk")])
    create_user(e, "ana", "analyst", PASSWORD)
    create_user(e, "mona", "manager", PASSWORD, team="risk")
    yield e
    e.dispose()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    config = CollectorConfig(rules=RulesSection(enabled=False), weekly=WeeklySection(enabled=False))
    with TestClient(create_app(config, engine)) as c:
        yield c


def _log_in(client: TestClient, name: str) -> str:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": name, "password": PASSWORD, "csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    alerts_page = client.get("/summaries")
    return re.search(r'name="csrf" value="([^"]+)"', alerts_page.text).group(1)  # type: ignore[union-attr]


def test_the_api_is_in_the_openapi_spec(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"get", "patch"} <= set(paths["/api/v1/alerts/{alert_id}"])
    for p in ("/api/v1/alerts", "/api/v1/summaries", "/api/v1/summaries/{team}/{week}",
              "/api/v1/attestations/{attestation_id}"):
        assert p in paths
    assert "/alerts" not in paths and "/login" not in paths  # pages are not API


def test_an_analyst_token_lists_and_updates_alerts(client: TestClient, engine: Engine) -> None:
    token = credentials.create(engine, "soar", "api", "analyst")
    auth = {"Authorization": f"Bearer {token}"}
    listed = client.get("/api/v1/alerts", headers=auth).json()
    assert [a["who"] for a in listed] == ["alice", "frank"]  # most recent (higher risk) first
    r = client.patch(f"/api/v1/alerts/{1:032x}", headers=auth, json={"status": "closed_benign", "comment": "batch"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "closed_benign" and [h["field"] for h in body["history"]] == ["status", "comment"]
    assert client.patch(f"/api/v1/alerts/{1:032x}", headers=auth, json={"status": "gone"}).status_code == 422
    assert client.get("/api/v1/alerts").status_code == 401


def test_a_cookie_session_must_send_its_csrf_token_to_change_anything(client: TestClient) -> None:
    csrf = _log_in(client, "ana")
    target = f"/api/v1/alerts/{2:032x}"
    assert client.patch(target, json={"status": "acknowledged"}).status_code == 403
    assert client.patch(target, json={"status": "acknowledged"}, headers={"X-CSRF-Token": "nope"}).status_code == 403
    ok = client.patch(target, json={"status": "acknowledged"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["status"] == "acknowledged"


def test_a_manager_sees_and_reads_only_their_team(client: TestClient, engine: Engine) -> None:
    csrf = _log_in(client, "mona")
    assert [a["team"] for a in client.get("/api/v1/alerts").json()] == ["risk"]
    assert client.get(f"/api/v1/alerts/{1:032x}").status_code == 404
    assert client.get(f"/api/v1/alerts/{2:032x}").status_code == 200
    r = client.patch(f"/api/v1/alerts/{2:032x}", json={"status": "closed_fp"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403  # managers comment; analysts decide
    assert client.get("/people/alice").status_code == 404 and client.get("/people/frank").status_code == 200
    with engine.connect() as conn:
        seen = conn.execute(select(audit_log.c.actor, audit_log.c.subject, audit_log.c.staff_id)
                            .where(audit_log.c.action == "view", audit_log.c.subject != "alerts")).all()
    assert [tuple(s) for s in seen] == [("mona", "alert", "frank"), ("mona", "person", "frank")]


def test_the_agents_page_shows_silent_agents_in_red(client: TestClient, engine: Engine) -> None:
    now = dt.datetime.now(dt.timezone.utc)  # not the module's NOW: the suite may have run for a while since
    fresh = now - dt.timedelta(minutes=1)
    stale = now - dt.timedelta(hours=2)
    for agent, at in (("proxy-1", fresh), ("ws-7", stale)):
        EventStore(engine).insert(build_events([{"kind": "agent.heartbeat", "at": at.isoformat(), "source":
                                                 {"type": "agent"}, "payload": {"spool_depth": 42}}]), agent=agent)
    credentials.create(engine, "never-seen", "agent")
    _log_in(client, "ana")
    html = client.get("/agents").text
    rows = dict(re.findall(r'<tr class="([a-z]*)" data-agent="([^"]+)"', html)[i][::-1] for i in range(3))
    assert rows == {"proxy-1": "", "ws-7": "silent", "never-seen": "silent"}
    assert "42" in html


@pytest.mark.parametrize(("target", "status", "says"), [
    ("/api/v1/summaries?team=a%00b", 422, "team: holds a NUL character"),
    ("/api/v1/alerts?limit=5&who=x%00", 422, "who: holds a NUL character"),
    ("/api/v1/alerts/a%00b", 404, "no such resource: the path holds a NUL character"),
])
def test_a_nul_character_in_any_parameter_is_refused_by_name_on_postgresql(pg_url: str, target: str, status: int,
                                                                          says: str) -> None:
    e = make_engine(pg_url)
    upgrade(e)
    token = credentials.create(e, "soar", "api", "analyst")
    config = CollectorConfig(rules=RulesSection(enabled=False), weekly=WeeklySection(enabled=False))
    try:
        with TestClient(create_app(config, e), raise_server_exceptions=True) as c:
            r = c.get(target, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status and r.json()["detail"].startswith(says)
            assert c.get("/api/v1/summaries?team=risk", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        e.dispose()
