"""Notifications and scheduled jobs with real collector processes: alerts reach a webhook receiver that was down
when they were raised, each once; the weekly job running in two collector processes at the same moment sends each
team's summary once."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import func, select

from agent.events import encode
from collector.db import alerts, job_runs, make_engine, notify_log, notify_outbox
from collector.migrate import upgrade
from collector.rules_state import import_directory
from collector.store import EventStore
from collector.weekly import last_week, parse_week
from rules.identity import Person
from rules.testing import build_events
from tests.helpers.mail import SmtpServer, WebhookReceiver
from tests.helpers.procs import Collector, wait_for

PEOPLE = [Person("alice", "Alice Berg", "loans", manager="mia", db_users=("alice",), os_users=("alice",)),
          Person("bob", "Bob Kalns", "loans", manager="mia", db_users=("bob",), os_users=("bob",)),
          Person("mia", "Mia Ozola", "loans", db_users=("mia",), email="mia@bank.example"),
          Person("frank", "Frank Ozols", "risk", manager="rita", db_users=("frank",), os_users=("frank",)),
          Person("rita", "Rita Liepa", "risk", db_users=("rita",), email="rita@bank.example")]


def _post(collector: Collector, token: str, events: list) -> None:  # type: ignore[type-arg]
    body = b'{"events":[' + b",".join(encode(e) for e in events) + b"]}"
    r = httpx.post(f"{collector.url}/api/v1/events", content=body, timeout=30,
                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text


def test_alerts_raised_while_the_webhook_is_down_all_arrive_once_it_is_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'custos.db'}"
    engine = make_engine(url)
    upgrade(engine)
    import_directory(engine, PEOPLE)
    hook = WebhookReceiver()
    (tmp_path / "collector.toml").write_text(f"""
[weekly]
enabled = false
[notify]
poll_seconds = 0.2
retry_base_seconds = 0.2
retry_max_seconds = 1.0
[[notify.receivers]]
name = "hook"
type = "webhook"
format = "json"
url = "{hook.url}"
timeout_seconds = 2
""")
    collector = Collector(tmp_path / "c", url, config=tmp_path / "collector.toml")
    try:
        collector.upgrade()
        token = collector.enroll("proxy-1")
        collector.start()
        events = build_events([{"who": who, "rows": 6000, "classes": ["card_number"],
                                "at": f"2026-11-23T{10 + i}:00:00Z"}
                               for i, who in enumerate(("alice", "bob", "frank"))])
        _post(collector, token, events)

        def refused_twice() -> bool:
            with engine.connect() as conn:
                n_alerts = conn.scalar(select(func.count()).select_from(alerts))
                tries = conn.execute(select(notify_outbox.c.attempts)).all()
                return bool(n_alerts and n_alerts == len(tries) >= 3 and min(t for (t,) in tries) >= 2)

        wait_for(refused_twice, 60, "alerts stored and their deliveries refused at least twice each")
        assert hook.received() == []
        hook.start()  # the receiver comes back

        with engine.connect() as conn:
            expected = set(conn.scalars(select(alerts.c.alert_id)))

        def all_sent() -> bool:
            with engine.connect() as conn:
                return set(conn.scalars(select(notify_outbox.c.status))) == {"sent"}

        wait_for(all_sent, 60, "every message delivered")
        got = [b["alert_id"] for b in hook.received()]
        assert set(got) == expected and len(got) == len(expected)  # each alert once
        assert {b["type"] for b in hook.received()} == {"custos.alert"}
        with engine.connect() as conn:
            failures = conn.scalar(select(func.count()).select_from(notify_log).where(notify_log.c.ok == 0))
        assert failures >= 2 * len(expected)  # the delivery log keeps the refused attempts too
    finally:
        collector.close()
        hook.close()
        engine.dispose()


def test_the_weekly_job_in_two_collector_processes_sends_each_summary_once(pg_url: str, tmp_path: Path) -> None:
    zone = "Europe/Vilnius"
    engine = make_engine(pg_url)
    upgrade(engine)
    import_directory(engine, PEOPLE)
    week = last_week(dt.datetime.now(dt.timezone.utc), zoneinfo.ZoneInfo(zone))
    monday = dt.datetime.combine(parse_week(week), dt.time(10), dt.timezone.utc)
    EventStore(engine).insert(build_events([{"who": who, "customers": 5, "classes": ["name"], "repeat": 4}
                                            for who in ("alice", "bob", "frank")], start=monday), agent="proxy-1")
    with SmtpServer(tmp_path, tls=False) as smtp:
        (tmp_path / "collector.toml").write_text(f"""
[rules]
enabled = false
[weekly]
timezone = "{zone}"
day_of_week = "*"
hour = "*"
minute = "*"
second = "*/2"
[notify]
poll_seconds = 0.3
[[notify.receivers]]
name = "mail"
type = "email"
smtp_port = {smtp.port}
starttls = false
kinds = ["weekly"]
to = ["security@bank.example"]
""")
        first = Collector(tmp_path / "one", pg_url, config=tmp_path / "collector.toml")
        second = Collector(tmp_path / "two", pg_url, config=tmp_path / "collector.toml")
        try:
            first.start()
            second.start()

            def logs() -> list[str]:
                return [(c.workdir / "collector.log").read_text() for c in (first, second)]

            wait_for(lambda: all(text.count("already run by another process") >= 2 for text in logs()), 60,
                     "both processes firing the weekly job and finding it done")
            wait_for(lambda: len(smtp.sink.messages) >= 2, 30, "the two teams' summaries")
            subjects = Counter(smtp.sink.subjects())
            assert subjects == Counter({f"custos weekly access summary — loans — {week}": 1,
                                        f"custos weekly access summary — risk — {week}": 1})
            assert sum(text.count("built and queued") for text in logs()) == 1
            by_team = {str(m.message["Subject"]).split(" — ")[1]: set(m.rcpt_tos) for m in smtp.sink.messages}
            assert by_team == {"loans": {"mia@bank.example", "security@bank.example"},
                               "risk": {"rita@bank.example", "security@bank.example"}}
            with engine.connect() as conn:
                runs = conn.execute(select(job_runs.c.run_key, job_runs.c.status)).all()
            assert [tuple(r) for r in runs] == [(f"weekly:{week}", "done")]
        finally:
            first.close()
            second.close()
            engine.dispose()
