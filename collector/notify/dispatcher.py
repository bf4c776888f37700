"""The dispatcher: turns new alerts into outbox messages for the receivers that want them, and delivers due
messages. Every collector process runs one; the outbox's unique keys and leases make that safe."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
from collections.abc import Callable

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from collector.db import alerts, ui_cursors
from collector.notify import formats, outbox
from collector.notify.senders import DeliveryError, send
from collector.ui_config import NotifySection

log = logging.getLogger("custos.notify")
ALERT_CURSOR = "notify.alerts"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def advance_cursor(conn: Connection, name: str, value: int, now: dt.datetime) -> None:
    """Move a cursor forward (never back, whichever process writes last)."""
    ins = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    stmt = ins(ui_cursors).values(name=name, value=value, updated_at=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], where=ui_cursors.c.value < value,
                                            set_={"value": value, "updated_at": now}))


def read_cursor(conn: Connection, name: str) -> int:
    return int(conn.scalar(select(ui_cursors.c.value).where(ui_cursors.c.name == name)) or 0)


class Dispatcher:
    def __init__(self, engine: Engine, cfg: NotifySection, *, public_url: str | None = None,
                 clock: Callable[[], dt.datetime] = _now) -> None:
        self.engine = engine
        self.cfg = cfg
        self.public_url = public_url.rstrip("/") if public_url else None
        self.clock = clock
        self.receivers = {r.name: r for r in cfg.receivers}
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def scan_alerts(self, batch: int = 500) -> int:
        """Enqueue alerts stored since the last scan; returns how many messages were new."""
        new = 0
        now = self.clock()
        with self.engine.begin() as conn:
            after = read_cursor(conn, ALERT_CURSOR)
            rows = conn.execute(select(alerts).where(alerts.c.id > after).order_by(alerts.c.id).limit(batch)).all()
            for r in rows:
                m = dict(r._mapping)
                m["tags"] = json.loads(m["tags"])
                targets = outbox.route(self.cfg.receivers, "alert", severity=m["severity"], team=m["team"])
                url = f"{self.public_url}/alerts/{m['alert_id']}" if self.public_url else None
                new += outbox.enqueue(conn, targets, "alert", m["alert_id"], formats.alert_message(m, url), now=now)
            if rows:
                advance_cursor(conn, ALERT_CURSOR, int(rows[-1]._mapping["id"]), now)
        return new

    def deliver_due(self) -> int:
        """Try every due message once; returns how many were delivered."""
        delivered = 0
        for item in outbox.claim_due(self.engine, self.clock()):
            receiver = self.receivers.get(item.receiver)
            if receiver is None:
                outbox.finish(self.engine, item, False, "receiver no longer configured",
                              NotifySection(max_attempts=1), self.clock())
                continue
            try:
                detail = send(receiver, item.payload, str(item.id))
                ok = True
            except DeliveryError as e:
                detail, ok = str(e), False
            status = outbox.finish(self.engine, item, ok, detail, self.cfg, self.clock())
            delivered += ok
            if not ok:
                log.warning("%s to %s not delivered (%s); %s", item.kind, item.receiver, detail, status)
        return delivered

    def run_once(self) -> int:
        if self.receivers:
            self.scan_alerts()
        return self.deliver_due()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="custos-notify", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the database may be briefly away; the outbox keeps everything
                log.exception("notification pass failed; trying again")
            self._wake.wait(self.cfg.poll_seconds)
            self._wake.clear()
