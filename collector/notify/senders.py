"""Delivery to one receiver: raises DeliveryError saying what went wrong, returns a short note when delivered."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
from typing import Any

import httpx

from agent.errors import CustosError
from collector.notify import formats, signing
from collector.ui_config import Receiver


class DeliveryError(CustosError):
    """A receiver did not take a message; the outbox retries it later."""


def send(receiver: Receiver, msg: dict[str, Any], delivery: str) -> str:
    """Deliver `msg`; `delivery` names the message the same way on every retry (webhooks send it as a header)."""
    try:
        if receiver.type == "webhook":
            return _webhook(receiver, msg, delivery)
        if receiver.type == "email":
            return _email(receiver, msg)
        return _syslog(receiver, msg)
    except DeliveryError:
        raise
    except (OSError, httpx.HTTPError, smtplib.SMTPException, ssl.SSLError) as e:
        raise DeliveryError(f"{type(e).__name__}: {e}") from e


def _webhook(r: Receiver, msg: dict[str, Any], delivery: str) -> str:
    secret = None
    if r.secret_env:
        value = os.environ.get(r.secret_env, "")
        if not value:
            raise DeliveryError(f"the environment variable {r.secret_env} (receivers.{r.name}.secret_env) is empty: "
                                "set it to the webhook's signing secret in the collector's environment")
        secret = value.encode()
    body = json.dumps(formats.webhook_body(msg, r.format), ensure_ascii=False, separators=(",", ":")).encode()
    head = {"Content-Type": "application/json", **signing.headers(secret, delivery, body)}
    resp = httpx.post(str(r.url), content=body, headers=head, timeout=r.timeout_seconds)
    if not 200 <= resp.status_code < 300:
        raise DeliveryError(f"HTTP {resp.status_code} from the webhook")
    return f"HTTP {resp.status_code}"


def _email(r: Receiver, msg: dict[str, Any]) -> str:
    to = sorted({*r.to, *(msg.get("to") or [])})
    if not to:
        raise DeliveryError("no recipient: set `to` on the receiver, or an e-mail for the team's manager")
    em = formats.email(msg, r.sender, to)
    with smtplib.SMTP(r.smtp_host, r.smtp_port, timeout=r.timeout_seconds) as smtp:
        smtp.ehlo()
        if r.starttls:
            if not smtp.has_extn("starttls"):
                raise DeliveryError("the SMTP server does not offer STARTTLS; refusing to send in clear text")
            smtp.starttls(context=ssl.create_default_context(cafile=r.ca_file))
            smtp.ehlo()
        if r.username:
            smtp.login(r.username, os.environ.get(r.password_env or "", ""))
        refused = smtp.send_message(em)
    if refused:
        raise DeliveryError(f"refused recipients: {', '.join(sorted(refused))}")
    return f"mailed to {len(to)} recipient(s)"


def _syslog(r: Receiver, msg: dict[str, Any]) -> str:
    line = formats.rfc5424(msg, r.app_name, body=formats.cef(msg) if r.format == "cef" else None)
    data = line.encode("utf-8")
    if r.protocol == "udp":
        with socket.socket(socket.AF_INET6 if ":" in r.host else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data[:8192], (r.host, r.port))
        return "sent over UDP"
    with socket.create_connection((r.host, r.port), timeout=r.timeout_seconds) as s:
        s.sendall(str(len(data)).encode() + b" " + data)  # RFC 6587 octet counting
    return "sent over TCP"
