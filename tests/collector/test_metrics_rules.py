"""/metrics says how far the rule worker has got, so that a monitor (or the demo) can tell stored from evaluated."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import func, select

from agent import events as ev
from collector.db import events
from tests.helpers.api import Served, query_event
from tests.helpers.procs import wait_for


def _gauge(api: Served, name: str) -> float:
    text = httpx.get(api.url + "/metrics", timeout=10).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m is not None, f"{name} is not in /metrics"
    return float(m.group(1))


def test_metrics_show_the_rule_worker_reaching_the_last_stored_seq(sqlite_api: Served) -> None:
    api = sqlite_api
    assert _gauge(api, "custos_rules_evaluated_seq") == 0
    bulk = ev.new_event(ev.DbQuery, ev.DbQueryPayload(  # 6,000 card rows at once: custos.bulk_sensitive_read
        session_id="s2", statement_type="SELECT", fingerprint="f2", statement="SELECT pan FROM cards",
        rows=6000, sensitive_classes=["card_number"]), source=ev.Source(type="proxy"), actor=ev.Actor(db_user="bob"))
    assert api.post_events(*[query_event() for _ in range(24)], bulk).json()["accepted"] == 25
    with api.engine.connect() as conn:
        last = conn.scalar(select(func.max(events.c.seq)))
    wait_for(lambda: _gauge(api, "custos_rules_evaluated_seq") >= last, 30, "the rule worker to reach the last seq")
    assert _gauge(api, "custos_rules_evaluated_seq") == last
    assert _gauge(api, "custos_rules_events_evaluated") == 25
    assert _gauge(api, "custos_rules_alerts") == 1
