"""/healthz and /metrics of a real collector, and what it answers while its database is gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import events as ev
from tests.conftest import PG_DSN
from tests.helpers.api import Served, as_dict, batch, query_event, raw, served
from tests.helpers.procs import wait_for


def _samples(api: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(api.url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_answers_ok_with_the_version(sqlite_api: Served) -> None:
    response = httpx.get(sqlite_api.url + "/healthz", timeout=10)

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["version"]


def test_metrics_count_events_by_result_batches_by_status_auth_failures_and_latency(sqlite_api: Served) -> None:
    api = sqlite_api
    bad = raw(dict(as_dict(query_event()), kind="db.nonsense"))
    body = batch(ev.encode(query_event()), bad, ev.encode(query_event()))
    assert api.post(body).json()["accepted"] == 2
    assert api.post(body).json()["duplicates"] == 2
    assert api.post(b"not json").status_code == 400
    assert httpx.post(api.url + "/api/v1/events", content=body, timeout=10).status_code == 401
    assert api.post(body, token="cst_" + "Z" * 43).status_code == 401
    assert api.post(body, token=api.api_token).status_code == 403
    assert api.get(token="").status_code == 401

    m = _samples(api)

    def value(name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("custos_ingest_events_total", result="accepted") == 2
    assert value("custos_ingest_events_total", result="duplicate") == 2
    assert value("custos_ingest_events_total", result="rejected") == 2
    assert {s: value("custos_ingest_batches_total", status=s) for s in ("200", "400", "401", "403")} == {
        "200": 2, "400": 1, "401": 2, "403": 1}
    assert value("custos_auth_failures_total", reason="missing") == 2
    assert value("custos_auth_failures_total", reason="refused") == 1
    assert value("custos_ingest_batch_seconds_count") == 6
    assert value("custos_ingest_batch_seconds_sum") > 0
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in m.items() if k[0] == "custos_ingest_batch_seconds_bucket")
    assert buckets[-1] == (float("inf"), 6)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative


@pytest.fixture
def pg_served(pg_url: str, tmp_path: Path) -> Iterator[tuple[Served, str]]:
    with served(tmp_path / "collector", pg_url) as api:
        yield api, pg_url.rsplit("/", 1)[1]


def _allow_connections(database: str, allow: bool) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


def test_a_lost_database_is_answered_503_with_retry_after_until_it_is_back(pg_served: tuple[Served, str]) -> None:
    api, database = pg_served
    assert api.post_events(query_event()).json()["accepted"] == 1

    _allow_connections(database, False)
    try:
        health = httpx.get(api.url + "/healthz", timeout=30)
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        lost = query_event()
        refused = api.post_events(lost)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "retry later" in refused.json()["detail"]
        assert api.get().status_code == 503
    finally:
        _allow_connections(database, True)

    wait_for(lambda: httpx.get(api.url + "/healthz", timeout=30).status_code == 200, 30, "healthz to recover")
    assert api.post_events(lost).json()["accepted"] == 1  # the agent's retry is stored
    assert len(api.stored()) == 2
    m = _samples(api)
    assert m[("custos_ingest_batches_total", (("status", "503"),))] == 1
