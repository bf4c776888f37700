"""What a message looks like for each kind of receiver: JSON, Slack and Teams webhooks, e-mail, syslog
(RFC 5424) and CEF. A message is a plain dict made when it is enqueued; it is rendered at delivery."""

from __future__ import annotations

import datetime as dt
import socket
from email.message import EmailMessage
from typing import Any

from agent import __version__

SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
CEF_SEVERITY = {"critical": 10, "high": 8, "medium": 5, "low": 3, "info": 1}
COLOUR = {"critical": "8B0000", "high": "D64545", "medium": "F0B429", "low": "2F6FDF", "info": "7B8794"}
AUTHPRIV = 10  # syslog facility for security messages
ENTERPRISE = 32473  # the example private enterprise number of RFC 5612, for our structured-data id


def alert_message(a: Any, url: str | None) -> dict[str, Any]:
    """The message for an alert row (collector.triage.AlertRow or a mapping with the same fields)."""
    get = a.get if isinstance(a, dict) else lambda k, d=None: getattr(a, k, d)
    return {"type": "custos.alert", "alert_id": get("alert_id"), "rule_id": get("rule_id"), "title": get("title"),
            "severity": get("severity"), "staff_id": get("staff_id"), "person": get("person_name"),
            "team": get("team"), "ts": str(get("ts")), "first_ts": str(get("first_ts")),
            "last_ts": str(get("last_ts")), "summary": get("summary"), "tags": list(get("tags") or []),
            "url": url}


def subject(msg: dict[str, Any]) -> str:
    if msg.get("type") == "custos.alert":
        who = msg.get("person") or msg.get("staff_id") or "unknown"
        return f"[custos {msg.get('severity', '').upper()}] {msg.get('title')} — {who}"
    return str(msg.get("subject") or "custos")


def text(msg: dict[str, Any]) -> str:
    if msg.get("type") == "custos.alert":
        lines = [str(msg.get("summary")), "", f"Rule: {msg.get('title')} ({msg.get('rule_id')})",
                 f"Severity: {msg.get('severity')}", f"Team: {msg.get('team') or '-'}",
                 f"When: {msg.get('first_ts')} to {msg.get('last_ts')}"]
        if msg.get("url"):
            lines.append(f"Open: {msg['url']}")
        return "\n".join(lines)
    return str(msg.get("text") or msg.get("subject") or "")


def webhook_body(msg: dict[str, Any], fmt: str) -> dict[str, Any]:
    if fmt == "slack":
        link = f"\n<{msg['url']}|Open in custos>" if msg.get("url") else ""
        return {"text": f"{subject(msg)}\n{msg.get('summary') or msg.get('text', '')}",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                                                        "text": f"*{subject(msg)}*\n{text(msg)}{link}"}}]}
    if fmt == "teams":
        facts = [{"name": k.capitalize(), "value": str(msg.get(k) or "-")} for k in ("severity", "team", "rule_id")
                 if msg.get("type") == "custos.alert"]
        card: dict[str, Any] = {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                                "summary": subject(msg), "themeColor": COLOUR.get(str(msg.get("severity")), "2F6FDF"),
                                "title": subject(msg), "text": msg.get("summary") or msg.get("text", ""),
                                "sections": [{"facts": facts}] if facts else []}
        if msg.get("url"):
            card["potentialAction"] = [{"@type": "OpenUri", "name": "Open in custos",
                                        "targets": [{"os": "default", "uri": msg["url"]}]}]
        return card
    return {k: v for k, v in msg.items() if k != "html"}


def email(msg: dict[str, Any], sender: str, to: list[str]) -> EmailMessage:
    em = EmailMessage()
    em["Subject"] = subject(msg)
    em["From"] = sender
    em["To"] = ", ".join(to)
    em["Date"] = dt.datetime.now(dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
    em.set_content(text(msg))
    if msg.get("html"):
        em.add_alternative(str(msg["html"]), subtype="html")
    return em


def _sd_value(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def rfc5424(msg: dict[str, Any], app: str, *, body: str | None = None, now: dt.datetime | None = None) -> str:
    sev = SYSLOG_SEVERITY.get(str(msg.get("severity")), 5)
    ts = (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    fields = {k: msg.get(k) for k in ("alert_id", "rule_id", "severity", "staff_id", "team") if msg.get(k)}
    sd = "[custos@%d %s]" % (ENTERPRISE, " ".join(f'{k}="{_sd_value(v)}"' for k, v in fields.items())) \
        if fields else "-"
    msgid = "alert" if msg.get("type") == "custos.alert" else str(msg.get("type", "notice")).split(".")[-1]
    content = body if body is not None else (msg.get("summary") or subject(msg))
    return f"<{AUTHPRIV * 8 + sev}>1 {ts} {socket.gethostname()[:255] or '-'} {app[:48]} - {msgid[:32]} {sd} {content}"


def _cef_header(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("|", "\\|")


def _cef_ext(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def cef(msg: dict[str, Any]) -> str:
    sev = CEF_SEVERITY.get(str(msg.get("severity")), 3)
    ext = {"externalId": msg.get("alert_id"), "suser": msg.get("staff_id"), "suid": msg.get("person"),
           "cs1Label": "team", "cs1": msg.get("team"), "cs2Label": "attack", "cs2": ",".join(msg.get("tags") or []),
           "start": msg.get("first_ts"), "end": msg.get("last_ts"), "msg": msg.get("summary"),
           "request": msg.get("url")}
    tail = " ".join(f"{k}={_cef_ext(v)}" for k, v in ext.items() if v)
    return (f"CEF:0|custos|custos|{_cef_header(__version__)}|{_cef_header(msg.get('rule_id') or msg.get('type'))}|"
            f"{_cef_header(msg.get('title') or subject(msg))}|{sev}|{tail}")
