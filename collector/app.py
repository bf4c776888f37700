"""The collector's HTTP API: event ingest for agents, event reads for people and scripts, health and metrics."""

# No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime.

import datetime as dt
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

import msgspec
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from agent import __version__
from agent.events import Event
from agent.units import parse_size
from collector import credentials
from collector.config import CollectorConfig
from collector.credentials import Principal
from collector.ingest import BatchError, BodyTooLarge, gunzip, parse_batch
from collector.metrics import Metrics
from collector.rules_runtime import rule_runtime
from collector.store import EventStore
from collector.web import install as install_web

log = logging.getLogger("custos.collector")


class IngestRejection(msgspec.Struct, omit_defaults=True):
    index: int
    reason: str
    id: str | None = None


class IngestAck(msgspec.Struct):
    """The answer to a batch: counts, and each refused event with why. Sent only once the batch is durable."""

    accepted: int
    duplicates: int
    rejected: list[IngestRejection]


class EventBatch(msgspec.Struct):
    events: list[Event]  # type: ignore[valid-type]


def _components() -> dict[str, Any]:
    (ack_ref, batch_ref), components = msgspec.json.schema_components(
        [IngestAck, EventBatch], ref_template="#/components/schemas/{name}"
    )
    return {"ack": ack_ref, "batch": batch_ref, "components": components}


class App:
    """Holds what the routes share; `create_app` wires it into FastAPI."""

    def __init__(self, config: CollectorConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.store = EventStore(engine)
        self.metrics = Metrics()
        self.max_body = parse_size(config.server.max_body_bytes)
        self.max_batch = parse_size(config.server.max_batch_bytes)
        self.max_events = config.server.max_batch_events
        self.rules = rule_runtime(config, engine)  # evaluates stored events in a worker (thread or process)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):  # type: ignore[no-untyped-def]
        if self.rules is not None:
            self.rules.start()
        try:
            yield
        finally:
            if self.rules is not None:
                await run_in_threadpool(self.rules.stop)

    def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            self.metrics.auth_failures.labels("missing").inc()
            raise HTTPException(401, "send Authorization: Bearer <credential>",
                                headers={"WWW-Authenticate": "Bearer"})
        who = credentials.authenticate(self.engine, token.strip())
        if who is None:
            self.metrics.auth_failures.labels("refused").inc()
            raise HTTPException(401, "unknown or revoked credential", headers={"WWW-Authenticate": "Bearer"})
        return who

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise BodyTooLarge(f"the body is {declared} bytes; the limit is {self.max_body}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge(f"the body is over {self.max_body} bytes; send smaller batches")
            chunks.append(chunk)
        return b"".join(chunks)

    def ingest(self, body: bytes, encoding: str, agent: str) -> IngestAck:
        if encoding == "gzip":
            body = gunzip(body, self.max_batch)
        elif encoding not in ("", "identity"):
            raise BatchError(f"Content-Encoding {encoding!r} is not supported; send gzip or nothing")
        elif len(body) > self.max_batch:
            raise BodyTooLarge(f"the body is over {self.max_batch} bytes")
        parsed = parse_batch(body, self.max_events)
        result = self.store.insert([ev for _, ev in parsed.events], agent=agent)
        if self.rules is not None and result.inserted:
            self.rules.on_stored(len(result.inserted))  # only wakes the rule worker: cannot fail or block
        m = self.metrics
        m.events.labels("accepted").inc(len(result.inserted))
        m.events.labels("duplicate").inc(result.duplicates)
        m.events.labels("rejected").inc(len(parsed.rejected))
        return IngestAck(
            accepted=len(result.inserted),
            duplicates=result.duplicates,
            rejected=[IngestRejection(r.index, r.reason, r.id) for r in parsed.rejected],
        )


def _json(obj: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")


def create_app(config: CollectorConfig, engine: Engine) -> FastAPI:
    state = App(config, engine)
    app = FastAPI(
        title="custos collector",
        version=__version__,
        description="Ingest of agent events, reads for analysts and scripts, health and metrics.",
        lifespan=state.lifespan,
    )
    app.state.custos = state
    schemas = _components()

    def principal(request: Request) -> Principal:
        return state.principal(request)

    Who = Annotated[Principal, Depends(principal)]

    @app.post(
        "/api/v1/events",
        summary="Send a batch of events (agents)",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": schemas["batch"]}}},
        },
        responses={
            200: {"description": "Batch durable; refused events listed with reasons",
                  "content": {"application/json": {"schema": schemas["ack"]}}},
            400: {"description": "Not a batch"},
            401: {"description": "Missing, unknown or revoked credential"},
            403: {"description": "The credential may not send events"},
            413: {"description": "Body too large"},
        },
    )
    async def post_events(request: Request, who: Who) -> Response:
        started = time.perf_counter()
        if who.kind != "agent":
            raise HTTPException(403, "only agent credentials may send events; enroll one with `custos agents enroll`")
        try:
            body = await state.read_body(request)
            ack = await run_in_threadpool(
                state.ingest, body, request.headers.get("content-encoding", "").strip().lower(), who.name
            )
        except BodyTooLarge as e:
            state.metrics.batches.labels("413").inc()
            return _json({"detail": str(e)}, 413)
        except BatchError as e:
            state.metrics.batches.labels("400").inc()
            return _json({"detail": str(e)}, 400)
        state.metrics.batches.labels("200").inc()
        state.metrics.ingest_seconds.observe(time.perf_counter() - started)
        return _json(ack)

    @app.get("/api/v1/events", summary="Read stored events (analysts, admins)")
    def get_events(
        who: Who,
        kind: Annotated[str | None, Query(max_length=64, description="a kind, or a prefix with *: business.*")] = None,
        agent: Annotated[str | None, Query(max_length=128)] = None,
        staff_id: Annotated[str | None, Query(max_length=256)] = None,
        host: Annotated[str | None, Query(max_length=256)] = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        after: Annotated[int | None, Query(ge=0, description="the last `seq` seen, to page on")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> Response:
        if who.kind != "api" or who.role not in ("admin", "analyst"):
            raise HTTPException(403, "reading events needs an API token with the analyst or admin role")
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise HTTPException(422, f"{name}: give a time with its zone, such as 2026-11-27T00:00:00Z")
        rows = state.store.query(kind=kind, agent=agent, staff_id=staff_id, host=host, since=since, until=until,
                                 after_seq=after, limit=limit)
        body = b'{"events":[' + b",".join(
            b'{"seq":%d,"agent":%s,"received_at":"%s","event":%s}'
            % (r.seq, msgspec.json.encode(r.agent), r.received_at.isoformat().encode(), r.body.encode())
            for r in rows
        ) + b'],"next_after":' + (str(rows[-1].seq).encode() if rows else b"null") + b"}"
        return Response(body, media_type="application/json")

    @app.get("/healthz", summary="Liveness and database reachability")
    def healthz() -> Response:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - any database failure means "not healthy"
            return _json({"status": "unhealthy", "database": type(e).__name__}, 503)
        return _json({"status": "ok", "version": __version__})

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = original_openapi()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas["components"])
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    install_web(app, state)  # the web UI, its JSON API, notifications and scheduled jobs (collector/web)
    return app
