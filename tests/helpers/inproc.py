"""An in-process collector for shipper tests: the real ingest code and a real EventStore on a SQLite file, reached
through an `httpx.MockTransport`, with faults that can be switched per request.

It answers like `POST /api/v1/events` (collector/app.py) does — 200 with the acknowledgement once the batch is
committed, 413 for a body over the limit, 400 for a body that is not a batch — without a socket or a thread,
so a hypothesis state machine can run thousands of steps. Authentication is not modelled: every request is
taken as coming from the agent named `agent`.

Faults (`mode`):
- "up": answer normally;
- "down": no connection (httpx.ConnectError), nothing stored;
- "unavailable": 503 with Retry-After (`retry_after`), nothing stored;
- "overloaded": 429 with Retry-After, nothing stored;
- "lost_answer": the batch is stored and committed, then the connection breaks before the answer arrives.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import httpx
import msgspec
from sqlalchemy import text

from collector.app import App
from collector.config import CollectorConfig, ServerSection
from collector.db import make_engine
from collector.ingest import BatchError, BodyTooLarge
from collector.migrate import upgrade

Mode = Literal["up", "down", "unavailable", "overloaded", "lost_answer"]
URL = "http://collector.invalid"

_template: Path | None = None


def _migrated_template() -> Path:
    """A migrated, empty store made once per test process; each InProcessCollector copies it (migrating
    every time would dominate a state-machine run)."""
    global _template
    if _template is None:
        folder = tempfile.mkdtemp(prefix="custos-store-template-")
        atexit.register(shutil.rmtree, folder, True)
        path = Path(folder) / "custos.db"
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        engine.dispose()
        _template = path
    return _template


class InProcessCollector:
    def __init__(self, db_path: Path, *, agent: str = "agent-1", max_body_bytes: int = 16 << 20,
                 max_batch_events: int = 10_000) -> None:
        shutil.copyfile(_migrated_template(), db_path)
        self.engine = make_engine(f"sqlite:///{db_path}")
        config = CollectorConfig(server=ServerSection(max_body_bytes=max_body_bytes,
                                                      max_batch_events=max_batch_events))
        self.app = App(config, self.engine)
        self.agent = agent
        self.mode: Mode = "up"
        self.retry_after = "1"
        self.requests = 0
        self.on_request: Callable[[httpx.Request], None] | None = None  # to observe what the agent sent

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.on_request is not None:
            self.on_request(request)
        mode = self.mode
        if mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if mode == "unavailable":
            return httpx.Response(503, headers={"Retry-After": self.retry_after}, json={"detail": "busy"})
        if mode == "overloaded":
            return httpx.Response(429, headers={"Retry-After": self.retry_after}, json={"detail": "slow down"})
        body = request.content
        try:
            if len(body) > self.app.max_body:  # as App.read_body does with the declared length
                raise BodyTooLarge(f"the body is {len(body)} bytes; the limit is {self.app.max_body}")
            ack = self.app.ingest(body, request.headers.get("content-encoding", "").strip().lower(), self.agent)
        except BodyTooLarge as e:
            return httpx.Response(413, json={"detail": str(e)})
        except BatchError as e:
            return httpx.Response(400, json={"detail": str(e)})
        if mode == "lost_answer":
            raise httpx.RemoteProtocolError("connection closed after the batch was stored", request=request)
        return httpx.Response(200, content=msgspec.json.encode(ack), headers={"Content-Type": "application/json"})

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=URL, transport=httpx.MockTransport(self.handler))

    def stored_ids(self) -> list[str]:
        """Every stored event id, one entry per stored row (so a duplicate would show twice)."""
        with self.engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(text("SELECT event_id FROM events"))]

    def close(self) -> None:
        self.engine.dispose()
