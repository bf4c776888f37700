"""Notifications: an outbox in the database (nothing is lost while a receiver is down), routing by kind,
severity and team, webhook (JSON, Slack, Teams), e-mail (SMTP with STARTTLS) and syslog (RFC 5424, CEF) senders,
retries with backoff and a delivery log. `Dispatcher` runs in every collector process; a lease on each message
keeps two processes from sending the same one at the same time."""

from collector.notify.dispatcher import Dispatcher
from collector.notify.outbox import enqueue, route

__all__ = ["Dispatcher", "enqueue", "route"]
