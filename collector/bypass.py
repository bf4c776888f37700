"""Database-proxy bypass: a staff machine talking to a database server directly, around the proxy that audits it.

The proxy reports every session it carries as a `db.session` event naming its client (address, port) and the
server behind it (`server_addr`, `server_port`): those servers are the *upstreams* (kept in `proxy_upstreams`,
with any configured in `integrity.upstreams`). A staff agent reports every connection of its machine to a
database endpoint, also as a `db.session` (agent/netwatch.py), naming its own address and port and the remote
end. A staff connection whose remote end is an upstream went around the proxy — unless the proxy reported a
session from that very client address and port (a proxy in the path that keeps the server's address).

Staff sessions are judged once `grace` seconds old, so that the proxy's report of the same session has arrived;
a cursor (`job_cursors`, "bypass") remembers how far the stored events were looked at.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Iterable

import msgspec
from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent.events import DbSession, Envelope, Event
from collector.alerts import AlertStore
from collector.db import events, job_cursors, proxy_upstreams
from collector.integrity import integrity_alert, upsert
from collector.integrity_config import endpoint
from rules.alerts import Alert

log = logging.getLogger("custos.bypass")
CURSOR = "bypass"
STAFF_SOURCES = ("db_connections",)
BATCH = 5000
_decoder: msgspec.json.Decoder[Envelope] = msgspec.json.Decoder(Event)  # type: ignore[arg-type]


def normalise(addr: str | None) -> str:
    """An address as one spelling: IPv4-mapped IPv6 as IPv4, brackets off."""
    text = (addr or "").strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _sessions(conn: Connection, cond: object, limit: int | None = None) -> list[tuple[int, dt.datetime, DbSession]]:
    q = select(events.c.seq, events.c.received_at, events.c.body).where(
        events.c.kind == "db.session", cond).order_by(events.c.seq)  # type: ignore[arg-type]
    if limit is not None:
        q = q.limit(limit)
    out = []
    for seq, received_at, body in conn.execute(q):
        try:
            e = _decoder.decode(body)
        except msgspec.DecodeError:
            continue
        if isinstance(e, DbSession):
            out.append((int(seq), received_at, e))
    return out


def _proxy_saw(conn: Connection, staff: DbSession, window: dt.timedelta) -> bool:
    p = staff.payload
    near = _sessions(conn, (events.c.source_type == "proxy") & events.c.ts.between(staff.ts - window,
                                                                                     staff.ts + window))
    return any(normalise(e.payload.client_addr) == normalise(p.client_addr) and e.payload.client_port == p.client_port
               for _, _, e in near)


def _alert(staff: DbSession) -> Alert:
    p = staff.payload
    who = staff.actor.os_user or "someone"
    program = f" with {p.process.name} (pid {p.process.pid})" if p.process is not None and p.process.name else ""
    server = f"{p.server_addr}:{p.server_port}"
    return integrity_alert(
        "custos.proxy_bypass", "Database reached around its proxy", staff.host, anchor=staff.id, ts=staff.ts,
        evidence=[staff.id], summary=f"{who} on {staff.host} connected{program} straight to the database server "
        f"{server}, around the proxy that audits it: what was read there is not in the audit trail",
        measures={"server": server, "client": f"{p.client_addr}:{p.client_port}", "os_user": staff.actor.os_user})


def learn(conn: Connection, engine: Engine, sessions: Iterable[DbSession], now: dt.datetime) -> None:
    """Remember the servers the proxy's sessions name."""
    insert = sqlite_insert if engine.dialect.name == "sqlite" else pg_insert
    for e in sessions:
        p = e.payload
        if e.source.type == "proxy" and p.server_addr and p.server_port:
            conn.execute(insert(proxy_upstreams).values(addr=normalise(p.server_addr), port=p.server_port,
                                                        first_seen=now).on_conflict_do_nothing())


def look(engine: Engine, *, grace: float, configured: Iterable[str] = (), now: dt.datetime | None = None) -> list[str]:
    """Judge the staff sessions stored since the last look and at least `grace` seconds old; returns alert ids."""
    now = now or dt.datetime.now(dt.timezone.utc)
    cutoff = now - dt.timedelta(seconds=grace)
    window = dt.timedelta(seconds=max(grace, 60.0))
    found: list[Alert] = []
    with engine.begin() as conn:
        q = select(job_cursors.c.value).where(job_cursors.c.name == CURSOR)
        if engine.dialect.name == "postgresql":
            q = q.with_for_update()
        after = int(conn.scalar(q) or 0)
        rows = _sessions(conn, events.c.seq > after, BATCH)
        settled = [r for r in rows if r[1] <= cutoff]
        if len(settled) < len(rows):  # stop at the first session still inside its grace period
            settled = rows[: next(i for i, r in enumerate(rows) if r[1] > cutoff)]
        if not settled:
            return []
        learn(conn, engine, [e for _, _, e in settled], now)
        upstreams = {(normalise(h), p) for h, p in (endpoint(e) for e in configured)}
        upstreams |= {(a, int(p)) for a, p in conn.execute(select(proxy_upstreams.c.addr, proxy_upstreams.c.port))}
        for _, _, e in settled:
            p = e.payload
            if e.source.type not in STAFF_SOURCES or p.phase == "end":
                continue
            if (normalise(p.server_addr), p.server_port) not in upstreams:
                continue  # to the proxy, or to a database nobody proxies
            if not _proxy_saw(conn, e, window):
                found.append(_alert(e))
        upsert(conn, engine, job_cursors, {"name": CURSOR}, {"value": settled[-1][0], "updated_at": now})
    for a in found:
        log.warning("%s", a.summary)
    return AlertStore(engine).save(found) if found else []
