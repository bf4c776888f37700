"""PostgreSQL's connection lines (log_connections, log_disconnections) as db.session payloads, and `Who`: what
a log line says about its session."""

from __future__ import annotations

import re
from typing import NamedTuple

from agent.events import DbSessionPayload
from agent.tailers.emit import name

_AUTHORIZED = re.compile(
    r"^(?:replication )?connection authorized: user=(?P<user>\S*)(?: database=(?P<db>\S*))?"
    r"(?: application_name=(?P<app>.*?))?(?P<tls> SSL enabled \(.*\))?(?: GSS \(.*\))?$",
    re.DOTALL,
)
_DISCONNECTION = re.compile(
    r"^disconnection: session time: \S+ user=(?P<user>\S*) database=(?P<db>\S*) host=(?P<host>\S*)"
    r"(?: port=(?P<port>\d+))?"
)
_NEVER_LOGGED = ["auth_method", "server_addr", "server_port", "process"]


class Who(NamedTuple):
    """Whose line it is: what a log line says besides its time and message (the same for a whole session)."""

    session: str  # %c or csvlog session_id; the pid when neither is logged
    user: str | None = None
    database: str | None = None
    application_name: str | None = None
    client_addr: str | None = None
    client_port: int | None = None


Found = tuple[DbSessionPayload, str | None]  # the payload and the database user


def session_start(who: Who, msg: str, context_unknown: tuple[str, ...]) -> Found | None:
    """`connection authorized: user=… database=… application_name=…[ SSL enabled (…)]`: (payload, db user)."""
    m = _AUTHORIZED.match(msg)
    if m is None:
        return None
    app = m.group("app") if m.group("app") is not None else who.application_name
    payload = DbSessionPayload(
        session_id=who.session,
        phase="start",
        database=name(m.group("db") or who.database),
        application_name=name(app, 1024),
        client_addr=who.client_addr,
        client_port=who.client_port,
        tls=m.group("tls") is not None,
        unknown=_NEVER_LOGGED + [u for u in context_unknown if u in ("client_addr", "client_port")],
    )
    return payload, m.group("user") or who.user


def session_end(who: Who, msg: str) -> Found | None:
    """`disconnection: session time: … user=… database=… host=… port=…`: (payload, db user)."""
    m = _DISCONNECTION.match(msg)
    if m is None:
        return None
    port = m.group("port")
    payload = DbSessionPayload(
        session_id=who.session,
        phase="end",
        database=name(m.group("db") or who.database),
        application_name=who.application_name,
        client_addr=name(m.group("host"), 64) or who.client_addr,
        client_port=int(port) if port and int(port) <= 65535 else who.client_port,
        unknown=[*_NEVER_LOGGED, "tls"],
    )
    return payload, m.group("user") or who.user
