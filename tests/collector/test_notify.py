"""Notifications: alert and weekly-summary e-mails through a real SMTP server with STARTTLS, syslog lines in
RFC 5424 and CEF over a real socket, signed webhooks to a real HTTP receiver, Slack and Teams bodies, routing,
backoff and leases."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from collector.config import CollectorConfig, RulesSection
from collector.db import alerts, make_engine, notify_log, notify_outbox
from collector.migrate import upgrade
from collector.notify import Dispatcher, formats, outbox, signing
from collector.ui_config import NotifySection, Receiver, WeeklySection
from collector.weekly import last_week
from collector.weekly_jobs import send_summaries
from tests.helpers.mail import SmtpServer, WebhookReceiver
from tests.helpers.ui_data import seed_scenario

ZONE = "Europe/Vilnius"


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store holding the synthetic bank; each test copies it."""
    path = tmp_path_factory.mktemp("bank") / "custos.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    seed_scenario(engine)
    engine.dispose()
    yield str(path)


@pytest.fixture
def engine(bank: str, tmp_path: Path) -> Iterator[Engine]:
    import shutil

    shutil.copyfile(bank, tmp_path / "custos.db")
    e = make_engine(f"sqlite:///{tmp_path / 'custos.db'}")
    yield e
    e.dispose()


def _config(*receivers: Receiver) -> CollectorConfig:
    return CollectorConfig(rules=RulesSection(enabled=False), weekly=WeeklySection(timezone=ZONE),
                           notify=NotifySection(receivers=list(receivers), retry_base_seconds=0.01,
                                                retry_max_seconds=0.05))


def test_alert_and_weekly_summary_emails_reach_a_real_smtp_server_over_starttls(engine: Engine,
                                                                              tmp_path: Path) -> None:
    with SmtpServer(tmp_path) as smtp:
        mail = Receiver(name="mail", type="email", smtp_port=smtp.port, ca_file=str(smtp.cert),
                        min_severity="critical", kinds=["alert", "weekly"], to=["soc@bank.example"],
                        sender="custos@bank.example")
        cfg = _config(mail)
        d = Dispatcher(engine, cfg.notify, public_url="https://custos.bank.example")
        d.run_once()
        with engine.connect() as conn:
            critical = set(conn.scalars(select(alerts.c.alert_id).where(alerts.c.severity == "critical")))
        assert critical
        alert_mails = [m for m in smtp.sink.messages if "[custos CRITICAL]" in str(m.message["Subject"])]
        assert len(alert_mails) == len(critical)
        assert all(m.tls for m in smtp.sink.messages)
        linked = {re.search(r"/alerts/([0-9a-f]{32})", m.message.get_body(("plain",)).get_content()).group(1)
                  for m in alert_mails}
        assert linked == critical

        week = last_week(dt.datetime.now(dt.timezone.utc), zoneinfo.ZoneInfo(ZONE))
        teams = send_summaries(engine, cfg, week)
        d.run_once()
        weekly = [m for m in smtp.sink.messages if "weekly access summary" in str(m.message["Subject"])]
        assert sorted(str(m.message["Subject"]).split(" — ")[1] for m in weekly) == sorted(teams)
        risk = next(m for m in weekly if " risk " in str(m.message["Subject"]))
        assert set(risk.rcpt_tos) == {"soc@bank.example", "rkmgr@bank.example"}
        html = risk.message.get_body(("html",)).get_content()
        assert "Weekly access summary: risk" in html and html.count("<svg") == 2
        assert "removable media" in html  # the planted USB copy is among the things worth attention

        send_summaries(engine, cfg, week)  # again: the same week is not mailed twice
        d.run_once()
        assert len([m for m in smtp.sink.messages if "weekly access summary" in str(m.message["Subject"])]) == \
            len(teams)
        with engine.connect() as conn:
            log = conn.execute(select(notify_log.c.ok)).all()
        assert log and all(ok == 1 for (ok,) in log)


def test_email_is_not_sent_in_clear_text_when_the_server_offers_no_starttls(engine: Engine, tmp_path: Path) -> None:
    with SmtpServer(tmp_path, tls=False) as smtp:
        mail = Receiver(name="mail", type="email", smtp_port=smtp.port, min_severity="critical", to=["soc@b.example"])
        d = Dispatcher(engine, _config(mail).notify)
        d.run_once()
        assert smtp.sink.messages == []
        with engine.connect() as conn:
            errors = {e for (e,) in conn.execute(select(notify_outbox.c.last_error))}
        assert any("STARTTLS" in (e or "") for e in errors)


def test_syslog_receivers_get_rfc5424_and_cef_lines(engine: Engine) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        port = udp.getsockname()[1]
        plain = Receiver(name="siem", type="syslog", format="rfc5424", port=port, min_severity="critical")
        cef = Receiver(name="arcsight", type="syslog", format="cef", port=port, min_severity="critical")
        Dispatcher(engine, _config(plain, cef).notify).run_once()
        with engine.connect() as conn:
            n = len(list(conn.scalars(select(alerts.c.alert_id).where(alerts.c.severity == "critical"))))
        lines = [udp.recv(8192).decode() for _ in range(2 * n)]
    pattern = re.compile(r"^<82>1 \S+Z \S+ custos - alert \[custos@32473 alert_id=\"[0-9a-f]{32}\" "
                         r"rule_id=\"custos\.[a-z_]+\" severity=\"critical\"")
    assert all(pattern.match(line) for line in lines), lines[0]
    cefs = [line for line in lines if " CEF:0|custos|custos|" in line]
    assert len(cefs) == n
    assert all("|10|externalId=" in line for line in cefs)


def test_slack_and_teams_bodies_carry_the_summary_and_the_link() -> None:
    msg = formats.alert_message({"alert_id": "a" * 32, "rule_id": "custos.bulk_sensitive_read", "title": "Bulk read",
                                 "severity": "high", "staff_id": "lo07", "person_name": "Lina B", "team": "loans",
                                 "summary": "Lina B read 9,000 rows | with = signs", "tags": ["T1213"]},
                                "https://custos.example/alerts/x")
    slack = formats.webhook_body(msg, "slack")
    assert "Lina B read 9,000 rows" in slack["text"] and "<https://custos.example/alerts/x|" in \
        slack["blocks"][0]["text"]["text"]
    teams = formats.webhook_body(msg, "teams")
    assert teams["@type"] == "MessageCard" and teams["themeColor"] == "D64545"
    assert teams["potentialAction"][0]["targets"][0]["uri"] == "https://custos.example/alerts/x"
    line = formats.cef(msg)
    assert "msg=Lina B read 9,000 rows | with \\= signs" in line  # CEF extension escaping
    assert line.startswith("CEF:0|custos|custos|") and "|custos.bulk_sensitive_read|Bulk read|8|" in line


def test_routing_follows_kind_severity_and_team() -> None:
    soc = Receiver(name="soc", type="webhook", url="http://127.0.0.1:1/", min_severity="high")
    loans = Receiver(name="loans", type="webhook", url="http://127.0.0.1:1/", teams=["loans"])
    weekly = Receiver(name="w", type="email", kinds=["weekly"])
    every = [soc, loans, weekly]
    assert [r.name for r in outbox.route(every, "alert", severity="medium", team="loans")] == ["loans"]
    assert [r.name for r in outbox.route(every, "alert", severity="critical", team="risk")] == ["soc"]
    assert [r.name for r in outbox.route(every, "weekly", team="risk")] == ["w"]


def test_a_failing_message_backs_off_doubling_and_a_leased_one_is_not_taken_twice(engine: Engine) -> None:
    cfg = NotifySection(retry_base_seconds=10, retry_max_seconds=60, max_attempts=4)
    now = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.timezone.utc)
    hook = Receiver(name="hook", type="webhook", url="http://127.0.0.1:1/")
    with engine.begin() as conn:
        assert outbox.enqueue(conn, [hook], "alert", "x1", {"summary": "s"}, now=now) == 1
        assert outbox.enqueue(conn, [hook], "alert", "x1", {"summary": "s"}, now=now) == 0  # once per key
    delays = []
    t = now
    for _ in range(4):
        (item,) = outbox.claim_due(engine, t)
        assert outbox.claim_due(engine, t) == []  # leased: another process gets nothing
        status = outbox.finish(engine, item, False, "refused", cfg, t)
        with engine.connect() as conn:
            next_at = conn.scalar(select(notify_outbox.c.next_at))
        delays.append((next_at - t).total_seconds())
        t = next_at
    assert status == "dead"
    assert 9 <= delays[0] <= 11 and 18 <= delays[1] <= 22 and 36 <= delays[2] <= 44
    assert outbox.claim_due(engine, t + dt.timedelta(days=1)) == []  # dead: kept, not retried


SECRET = "a-secret-shared-with-the-soc"


def test_webhook_posts_are_signed_and_a_retry_keeps_its_delivery_id(engine: Engine,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOS_SOC_HOOK_SECRET", SECRET)
    hook = WebhookReceiver(refuse_first=1)
    hook.start()
    try:
        soc = Receiver(name="soc", type="webhook", format="json", url=hook.url, min_severity="critical",
                       secret_env="CUSTOS_SOC_HOOK_SECRET")
        t = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.timezone.utc)
        cfg = NotifySection(receivers=[soc], retry_base_seconds=10, retry_max_seconds=60)
        first = Dispatcher(engine, cfg, clock=lambda: t)
        n = first.scan_alerts()
        assert n >= 2
        assert first.deliver_due() == n - 1  # the receiver refuses its first request
        later = Dispatcher(engine, cfg, clock=lambda: t + dt.timedelta(minutes=5))
        assert later.deliver_due() == 1
    finally:
        hook.close()

    requests = hook.requests
    assert len(requests) == n + 1
    with engine.connect() as conn:
        outbox_ids = {str(i) for i in conn.scalars(select(notify_outbox.c.id))}
    deliveries = [signing.verify(SECRET.encode(), headers, body) for headers, body in requests]
    assert set(deliveries) == outbox_ids and len(outbox_ids) == n
    assert deliveries.count(deliveries[0]) == 2  # the refused message came again under the same id
    assert sorted(b["alert_id"] for b in hook.received()) == sorted(
        json.loads(body)["alert_id"] for _, body in requests[1:])

    headers, body = requests[-1]
    with pytest.raises(signing.BadSignature, match="does not match the body"):
        signing.verify(SECRET.encode(), headers, body.replace(b"critical", b"low"))
    with pytest.raises(signing.BadSignature, match="does not match the body"):
        signing.verify(b"another-secret", headers, body)
    with pytest.raises(signing.BadSignature, match="beyond the 300 s tolerance"):
        signing.verify(SECRET.encode(), headers, body, now=time.time() + 301)
    with pytest.raises(signing.BadSignature, match="no Custos-Signature header"):
        signing.verify(SECRET.encode(), {k: v for k, v in headers.items() if k != "Custos-Signature"}, body)


def test_a_webhook_whose_secret_is_missing_keeps_its_messages_and_says_which_variable(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUSTOS_SOC_HOOK_SECRET", raising=False)
    hook = WebhookReceiver()
    hook.start()
    try:
        soc = Receiver(name="soc", type="webhook", format="json", url=hook.url, min_severity="critical",
                       secret_env="CUSTOS_SOC_HOOK_SECRET")
        dispatcher = Dispatcher(engine, NotifySection(receivers=[soc]))
        assert dispatcher.scan_alerts() >= 1
        assert dispatcher.deliver_due() == 0
    finally:
        hook.close()
    assert hook.requests == []  # nothing goes out unsigned
    with engine.connect() as conn:
        assert set(conn.scalars(select(notify_outbox.c.status))) == {"pending"}
        details = set(conn.scalars(select(notify_log.c.detail)))
    assert details and all("CUSTOS_SOC_HOOK_SECRET" in d for d in details)


def test_only_webhooks_take_a_signing_secret() -> None:
    with pytest.raises(ValueError, match="receivers.mail.secret_env: only webhooks are signed"):
        Receiver(name="mail", type="email", secret_env="X")
