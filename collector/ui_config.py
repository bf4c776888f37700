"""collector.toml sections of the web UI, notifications and the weekly summary:

    [web]
    session_hours = 12
    lockout_failures = 5          # wrong passwords in a row before the account is locked …
    lockout_minutes = 15          # … for this long
    secure_cookies = "auto"       # "auto": Secure when the collector serves TLS; true / false to force
    silent_agent_minutes = 15     # an agent with no heartbeat for longer is shown in red
    public_url = "https://custos.example"   # for links in e-mails

    [weekly]
    enabled = true
    timezone = "Europe/Vilnius"   # the organisation's
    day_of_week = "mon"           # when the summary of the past week is built and sent (APScheduler cron fields)
    hour = "8"
    minute = "0"
    second = "0"
    misfire_grace_minutes = 720   # a run missed while every collector was down still runs once within this
    remind_after_days = 3         # unanswered attestations: remind the manager …
    escalate_after_days = 7       # … then tell the security team

    [notify]
    poll_seconds = 2.0
    retry_base_seconds = 5.0      # first retry after this, doubling …
    retry_max_seconds = 900.0     # … up to this
    max_attempts = 50             # then the message is kept as dead, in the outbox and the delivery log
    [[notify.receivers]]
    name = "soc"
    type = "webhook"              # webhook | email | syslog
    format = "slack"              # webhook: json | slack | teams; syslog: rfc5424 | cef
    url = "https://hooks.example/…"
    secret_env = "CUSTOS_SOC_HOOK_SECRET"   # optional: sign each POST (Custos-Signature) with this variable's secret
    min_severity = "high"         # alerts below this are not sent here
    teams = []                    # only these teams' alerts (empty: all)
    kinds = ["alert"]             # alert | weekly | reminder | escalation
"""

from __future__ import annotations

import zoneinfo
from typing import Literal

import msgspec

SEVERITIES = ("info", "low", "medium", "high", "critical")
KINDS = ("alert", "weekly", "reminder", "escalation")


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class WebSection(_Section):
    enabled: bool = True
    session_hours: float = 12.0
    lockout_failures: int = 5
    lockout_minutes: float = 15.0
    secure_cookies: bool | Literal["auto"] = "auto"
    silent_agent_minutes: float = 15.0
    public_url: str | None = None  # how people reach the UI (links in e-mails), such as https://custos.bank.lt

    def __post_init__(self) -> None:
        if self.lockout_failures < 1:
            raise ValueError("lockout_failures: must be 1 or more")
        if self.session_hours <= 0:
            raise ValueError("session_hours: must be more than 0")


class WeeklySection(_Section):
    enabled: bool = True
    timezone: str = "UTC"
    day_of_week: str = "mon"
    hour: str = "8"
    minute: str = "0"
    second: str = "0"
    misfire_grace_minutes: float = 720.0
    remind_after_days: float = 3.0
    escalate_after_days: float = 7.0
    reminder_check_minutes: float = 60.0

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: {self.timezone!r} is not an IANA zone such as Europe/Vilnius") from None
        if self.escalate_after_days < self.remind_after_days:
            raise ValueError("escalate_after_days: must not be before remind_after_days")


class Receiver(_Section):
    name: str
    type: Literal["webhook", "email", "syslog"]
    format: Literal["json", "slack", "teams", "rfc5424", "cef", "html"] = "json"
    min_severity: Literal["info", "low", "medium", "high", "critical"] = "info"
    teams: list[str] = msgspec.field(default_factory=list)
    kinds: list[Literal["alert", "weekly", "reminder", "escalation"]] = msgspec.field(
        default_factory=lambda: ["alert"])
    timeout_seconds: float = 10.0
    # webhook
    url: str | None = None
    secret_env: str | None = None  # sign each POST with HMAC-SHA256 under the secret in this environment variable
    # email
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 587
    starttls: bool = True
    ca_file: str | None = None  # trust this CA for STARTTLS (a site CA); default: the system's
    username: str | None = None
    password_env: str | None = None  # the SMTP password is read from this environment variable
    sender: str = "custos@localhost"
    to: list[str] = msgspec.field(default_factory=list)  # weekly and reminders also go to the team's manager
    # syslog
    host: str = "127.0.0.1"
    port: int = 514
    protocol: Literal["udp", "tcp"] = "udp"
    app_name: str = "custos"

    def __post_init__(self) -> None:
        if self.type == "webhook" and not self.url:
            raise ValueError(f"receivers.{self.name}.url: a webhook receiver needs url")
        if self.type == "webhook" and self.format not in ("json", "slack", "teams"):
            raise ValueError(f"receivers.{self.name}.format: a webhook sends json, slack or teams")
        if self.secret_env is not None and self.type != "webhook":
            raise ValueError(f"receivers.{self.name}.secret_env: only webhooks are signed")
        if self.type == "syslog" and self.format not in ("rfc5424", "cef"):
            raise ValueError(f"receivers.{self.name}.format: syslog sends rfc5424 or cef")


class NotifySection(_Section):
    enabled: bool = True
    poll_seconds: float = 2.0
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 900.0
    max_attempts: int = 50
    receivers: list[Receiver] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        names = [r.name for r in self.receivers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"receivers: names must differ; {', '.join(sorted(dup))} appears twice")
        if self.retry_base_seconds <= 0 or self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("retry_base_seconds: must be > 0 and not above retry_max_seconds")
