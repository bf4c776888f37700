"""A real collector served for API tests, with an agent credential and an API token, and ways to build events
and bodies (including deliberately broken ones) and to look into the store directly, not through the API."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import socket
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, select

from agent import events as ev
from collector import credentials
from collector.db import events as events_table
from collector.db import make_engine
from collector.migrate import upgrade
from tests.helpers.procs import Collector

EVENTS = "/api/v1/events"


def query_event(*, ts: dt.datetime | None = None, agent_id: str = "", host: str = "db01",
                staff_id: str | None = None) -> ev.Envelope:
    return ev.new_event(
        ev.DbQuery,
        ev.DbQueryPayload(session_id="s1", statement_type="SELECT", fingerprint="f1", statement="SELECT ?"),
        source=ev.Source(type="proxy", name="pg-main"), actor=ev.Actor(db_user="alice", staff_id=staff_id),
        ts=ts, agent_id=agent_id, host=host,
    )


def loan_event(*, ts: dt.datetime | None = None) -> ev.Envelope:
    return ev.new_event(ev.LoanApplication, ev.LoanApplicationPayload(customer_key="ab" * 32, application_id="L1"),
                        source=ev.Source(type="core-banking"), ts=ts)


def card_event(*, ts: dt.datetime | None = None) -> ev.Envelope:
    return ev.new_event(ev.CardBinding, ev.CardBindingPayload(customer_key="cd" * 32, action="bind"),
                        source=ev.Source(type="core-banking"), ts=ts)


def export_event(*, ts: dt.datetime | None = None) -> ev.Envelope:
    return ev.new_event(ev.FileExport, ev.FileExportPayload(path="/home/a/x.csv", action="created", size=10,
                                                            destination="removable"),
                        source=ev.Source(type="files"), ts=ts)


def as_dict(event: ev.Envelope) -> dict[str, Any]:
    return json.loads(ev.encode(event))


def raw(obj: Any) -> bytes:
    """One element of a batch as JSON bytes (ensure_ascii=False keeps any non-ASCII as UTF-8)."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def batch(*elements: bytes) -> bytes:
    """A batch body from raw elements, so that tests can put bytes no JSON encoder would produce in one event."""
    return b'{"events":[' + b",".join(elements) + b"]}"


@dataclass
class Served:
    """A running collector and what a test needs to talk to it and to check its store."""

    collector: Collector
    engine: Engine
    agent_name: str
    agent_token: str
    api_token: str
    verify: bool | ssl.SSLContext = False

    @property
    def url(self) -> str:
        return self.collector.url

    def post(self, body: bytes, *, token: str | None = None, headers: Mapping[str, str] | None = None,
             gzipped: bool = False) -> httpx.Response:
        h = {"Content-Type": "application/json", "Authorization": f"Bearer {token or self.agent_token}"}
        if gzipped:
            body = gzip.compress(body, 1)
            h["Content-Encoding"] = "gzip"
        h.update(headers or {})
        return httpx.post(self.url + EVENTS, content=body, headers=h, timeout=30, verify=self.verify)

    def post_events(self, *events: ev.Envelope, token: str | None = None) -> httpx.Response:
        return self.post(batch(*(ev.encode(e) for e in events)), token=token)

    def get(self, path: str = EVENTS, *, token: str | None = None, **params: Any) -> httpx.Response:
        h = {"Authorization": f"Bearer {token or self.api_token}"} if token != "" else {}
        return httpx.get(self.url + path, params=params, headers=h, timeout=30, verify=self.verify)

    def stored(self) -> dict[str, dict[str, Any]]:
        """Every stored row by event id, read from the database itself."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(events_table)).mappings().all()
        ids = [r["event_id"] for r in rows]
        assert len(ids) == len(set(ids)), "an event id is stored twice"
        return {r["event_id"]: dict(r) for r in rows}


def prepare(database_url: str, agent_name: str = "agent-1", api_name: str = "analyst-1") -> tuple[Engine, str, str]:
    """Migrate the database and make an agent credential and an analyst token (in process: faster than the CLI,
    which tests/collector/test_credentials.py exercises on its own)."""
    engine = make_engine(database_url)
    upgrade(engine)
    return (engine, credentials.create(engine, agent_name, "agent"),
            credentials.create(engine, api_name, "api", "analyst"))


@contextmanager
def served(workdir: Path, database_url: str, *, config: Path | None = None, scheme: str = "http",
           ca_file: Path | None = None) -> Iterator[Served]:
    """A collector on `database_url`, migrated, with credentials; https (verified against `ca_file`) when the
    config serves TLS."""
    verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=str(ca_file)) if ca_file else False
    engine, agent_token, api_token = prepare(database_url)
    collector = Collector(workdir, database_url, config=config)
    collector.scheme = scheme
    try:
        collector.start()
        yield Served(collector, engine, "agent-1", agent_token, api_token, verify)
        assert collector.proc is not None and collector.proc.poll() is None, "the collector died during the test"
        log = (workdir / "collector.log").read_text(errors="replace")
        assert "Traceback" not in log, f"the collector logged a traceback:\n{log[-4000:]}"
    finally:
        collector.close()
        engine.dispose()


def http_exchange(port: int, head: bytes, chunks: Iterator[bytes], timeout: float = 20.0) -> tuple[bytes, int]:
    """Send a request head and then body chunks over a raw socket until the server answers (or the chunks run
    out); returns the answer's bytes and how many body bytes had been sent when it came."""
    import select as select_mod
    import time

    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        deadline = time.monotonic() + timeout
        for chunk in chunks:
            readable, _, _ = select_mod.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            if time.monotonic() > deadline:
                raise AssertionError("the server did not answer while the body was being sent")
        answer = b""
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        try:
            while b"\r\n\r\n" not in answer or not _complete(answer):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    return answer, sent


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True
