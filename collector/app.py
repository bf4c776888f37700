"""The collector's HTTP API: event ingest for agents, event reads for people and scripts, health and metrics."""

# No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime.

import datetime as dt
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from agent import __version__
from agent.events import UtcTime
from agent.units import parse_size
from collector import credentials
from collector.api_schema import EVENTS_PATH, SECURITY, IngestAck, IngestRejection, Schemas
from collector.config import CollectorConfig
from collector.credentials import Principal
from collector.fraud import business
from collector.ingest import BatchError, BodyTooLarge, ParsedBatch, gunzip, parse_batch
from collector.integrity_watch import IntegrityWatch
from collector.metrics import Metrics
from collector.rules_runtime import rule_runtime
from collector.store import EventStore
from collector.web import install as install_web

log = logging.getLogger("custos.collector")

T = TypeVar("T")
NO_NUL = r"^[^\x00]*$"  # documented on every string query parameter; RefuseNul answers a NUL with 422
MAX_SEQ = 2**63 - 1
READ_ROLES = ("admin", "analyst")


class Unsupported(BatchError):
    """The body is in an encoding or media type the collector does not read (415)."""


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode({"detail": detail}), status_code=status, media_type="application/json",
                    headers=headers)


def _unavailable(e: Exception) -> HTTPException:
    log.warning("database unavailable: %s", type(e).__name__)
    return HTTPException(503, "the database is unavailable; retry later", headers={"Retry-After": "5"})


async def _db(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking database call off the event loop; a lost database answers 503 with Retry-After."""
    try:
        return await run_in_threadpool(fn, *args)
    except (OperationalError, InterfaceError) as e:
        raise _unavailable(e) from e


def _parse_time(name: str, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when: dt.datetime = msgspec.convert(value, UtcTime)
    except msgspec.ValidationError:
        raise HTTPException(422, f"{name}: give a time with its zone, such as 2026-11-27T00:00:00Z") from None
    try:
        return when.astimezone(dt.timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC time there is: the ends of time then
        return (dt.datetime.min if when.year == 1 else dt.datetime.max).replace(tzinfo=dt.timezone.utc)


class App:
    """Holds what the routes share; `create_app` wires it into FastAPI."""

    def __init__(self, config: CollectorConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.store = EventStore(engine, digests=config.integrity.enabled)
        self.metrics = Metrics()
        self.max_body = parse_size(config.server.max_body_bytes)
        self.max_batch = parse_size(config.server.max_batch_bytes)
        self.max_events = config.server.max_batch_events
        self.rules = rule_runtime(config, engine)  # evaluates stored events in a worker (thread or process)
        self.metrics.watch_rules(self.rules)
        self.integrity = IntegrityWatch(engine, config) if config.integrity.enabled else None
        self.hasher = config.customers.hasher()  # None: clear customer identifiers are refused, hashed ones kept

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):  # type: ignore[no-untyped-def]
        if self.rules is not None:
            self.rules.start()
        if self.integrity is not None:
            await run_in_threadpool(self.integrity.start)
        try:
            yield
        finally:
            if self.integrity is not None:
                await run_in_threadpool(self.integrity.stop)
            if self.rules is not None:
                await run_in_threadpool(self.rules.stop)

    async def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.metrics.auth_failures.labels("missing").inc()
            raise HTTPException(401, "send Authorization: Bearer <credential>",
                                headers={"WWW-Authenticate": "Bearer"})
        who = await _db(credentials.authenticate, self.engine, token.strip())
        if who is None:
            self.metrics.auth_failures.labels("refused").inc()
            raise HTTPException(401, "unknown or revoked credential", headers={"WWW-Authenticate": "Bearer"})
        return who

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to be over the limit (before reading it all)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise BodyTooLarge(f"the body is {declared} bytes; the limit is {self.max_body}, send smaller batches")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge(f"the body is over {self.max_body} bytes; send smaller batches")
            chunks.append(chunk)
        return b"".join(chunks)

    def decoded(self, body: bytes, encoding: str) -> bytes:
        """The body once decompressed, within the batch limit."""
        if encoding in ("gzip", "x-gzip"):
            return gunzip(body, self.max_batch)
        if encoding not in ("", "identity"):
            raise Unsupported(f"Content-Encoding {encoding!r} is not supported; send gzip or nothing")
        if len(body) > self.max_batch:
            raise BodyTooLarge(f"the body is over {self.max_batch} bytes; send smaller batches")
        return body

    def store_batch(self, events: list[tuple[int, Any]], agent: str, rejected: list[IngestRejection],
                    repeats: int = 0, *, agent_batch: ParsedBatch | None = None, refused: int = 0,
                    sent_at: str | None = None) -> IngestAck:
        """Store checked events, given as (index in the batch, event); returns once they are durable.
        `agent_batch`: the batch as an agent sent it, whose hash chain is then followed; `sent_at`:
        the agent's clock when it sent the batch (its Custos-Sent-At header)."""
        # hash chain, heartbeats (integrity_watch.py): judged in the transaction that stores the batch
        watch = self.integrity if agent_batch is not None else None
        then = watch.checks(agent, agent_batch.pieces, events, refused) if watch and agent_batch else None
        try:
            result = self.store.insert([ev for _, ev in events], agent=agent, then=then)
        except (OperationalError, InterfaceError) as e:
            raise _unavailable(e) from e
        if watch is not None:
            watch.after(agent, result.found, sent_at=sent_at)
        duplicates = result.duplicates + repeats
        if self.rules is not None and result.inserted:
            self.rules.on_stored(len(result.inserted))  # only wakes the rule worker: cannot fail or block
        m = self.metrics
        m.events.labels("accepted").inc(len(result.inserted))
        m.events.labels("duplicate").inc(duplicates)
        m.events.labels("rejected").inc(len(rejected))
        return IngestAck(accepted=len(result.inserted), duplicates=duplicates, rejected=rejected)

    def ingest(self, body: bytes, encoding: str, agent: str, *, business_only: bool = False,
               sent_at: str | None = None) -> IngestAck:
        """Check and store one batch sent by the credential named `agent`; returns once what was accepted is
        durable. `business_only`: the credential is a business system's, which may send only business.* events."""
        body = self.decoded(body, encoding)
        parsed = parse_batch(body, self.max_events)
        rejected = [IngestRejection(r.index, r.reason, r.id) for r in parsed.rejected]
        events = parsed.events
        if business_only:
            allowed = [(i, ev) for i, ev in events if ev.__struct_config__.tag.startswith("business.")]
            rejected += [IngestRejection(i, "this credential may send only business.* events", ev.id)
                         for i, ev in events if not ev.__struct_config__.tag.startswith("business.")]
            events = allowed
            rejected.sort(key=lambda r: r.index)
        return self.store_batch(events, agent, rejected, parsed.repeats, agent_batch=parsed, refused=len(parsed.rejected),
                                sent_at=sent_at)

    def ingest_business(self, body: bytes, encoding: str, source: str) -> IngestAck:
        """Turn a batch of business records into business.* events (customer identifiers hashed here) and store
        them; a bad record is refused on its own, with the field to fix."""
        records = business.parse_records(self.decoded(body, encoding), self.max_events)
        events, rejected = [], []
        for i, record in enumerate(records):
            converted = business.convert(record, source, self.hasher)
            if converted.event is None:
                rejected.append(IngestRejection(i, converted.reason))
            else:
                events.append((i, converted.event))
        return self.store_batch(events, source, rejected)

    async def receive(self, request: Request, handle: Callable[[bytes, str], IngestAck]) -> Response:
        """Read a JSON body and hand it to `handle` off the event loop; refusals as problem documents."""
        media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        try:
            if media != "application/json":
                raise Unsupported(f"Content-Type {media!r} is not supported; send application/json")
            body = await self.read_body(request)
            encoding = request.headers.get("content-encoding", "").strip().lower()
            ack = await run_in_threadpool(handle, body, encoding)
        except BodyTooLarge as e:
            # Close the connection: what the client has not sent yet is not worth reading.
            return _problem(413, str(e), {"Connection": "close"})
        except Unsupported as e:
            return _problem(415, str(e))
        except BatchError as e:
            return _problem(400, str(e))
        except ClientDisconnect:
            return _problem(400, "the client went away before sending the whole body")
        return Response(msgspec.json.encode(ack), media_type="application/json")

    async def post_events(self, request: Request) -> Response:
        who = await self.principal(request)
        if who.kind not in ("agent", "source"):
            raise HTTPException(403, "only agent credentials may send events; enroll one with `custos agents enroll`")
        sent_at = request.headers.get("custos-sent-at")
        return await self.receive(request, lambda body, encoding: self.ingest(
            body, encoding, who.name, business_only=who.kind == "source", sent_at=sent_at))

    async def post_business(self, request: Request) -> Response:
        who = await self.principal(request)
        if who.kind != "source":
            raise HTTPException(403, "only business-source credentials may send business records; create one "
                                     "with `custos sources enroll NAME`")
        return await self.receive(request, lambda body, encoding: self.ingest_business(body, encoding, who.name))

    async def reader(self, request: Request) -> Principal:
        who = await self.principal(request)
        if who.kind != "api" or who.role not in READ_ROLES:
            raise HTTPException(403, "reading events needs an API token with the analyst or admin role; "
                                     "create one with `custos tokens create NAME --role analyst`")
        return who

    def read_events(self, **filters: Any) -> bytes:
        try:
            rows = self.store.query(**filters)
        except (OperationalError, InterfaceError) as e:
            raise _unavailable(e) from e
        # The stored body is already the event's JSON: splice it in rather than decode and encode it again.
        return b'{"events":[' + b",".join(
            b'{"seq":%d,"agent":%s,"received_at":"%s","event":%s}'
            % (r.seq, msgspec.json.encode(r.agent), r.received_at.isoformat().encode(), r.body.encode())
            for r in rows
        ) + b'],"next_after":' + (str(rows[-1].seq).encode() if rows else b"null") + b"}"


def create_app(config: CollectorConfig, engine: Engine) -> FastAPI:
    state = App(config, engine)
    app = FastAPI(
        title="custos collector",
        version=__version__,
        description="Ingest of agent events, reads for analysts and scripts, health and metrics.",
        lifespan=state.lifespan,
    )
    app.state.custos = state
    schemas = Schemas()
    problem = schemas.json
    auth_responses = {
        401: problem("problem", "Missing, unknown or revoked credential"),
        403: problem("problem", "The credential may not do this"),
        503: problem("problem", "The database is unavailable; retry after Retry-After seconds"),
    }

    def sending(schema: dict[str, Any], ack: str, not_a_batch: str) -> dict[str, Any]:
        """The OpenAPI description of a route that receives a batch."""
        return dict(
            openapi_extra={"security": SECURITY,
                           "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
            responses={
                200: schemas.json("ack", ack),
                400: problem("problem", not_a_batch),
                413: problem("problem", "Body too large, as sent or once decompressed"),
                415: problem("problem", "Content-Type or Content-Encoding not supported"),
                **auth_responses,
            },
        )

    @app.post(
        EVENTS_PATH,
        summary="Send a batch of events (agents)",
        **sending(schemas.ref("batch"), "Batch durable; refused events listed with their index and reason",
                  "Not a batch: not JSON, not {\"events\": [...]}, or too many events"),
    )
    async def post_events(request: Request) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await state.post_events(request)
            status = response.status_code
            return response
        except HTTPException as e:
            status = e.status_code
            raise
        finally:
            state.metrics.batches.labels(str(status)).inc()
            state.metrics.ingest_seconds.observe(time.perf_counter() - started)

    @app.post(
        business.BUSINESS_EVENTS_PATH,
        summary="Send business records: loans, contact changes, card bindings, device log-ins, confirmed fraud",
        **sending(business.RECORDS_SCHEMA, "Records stored as events; refused records listed with their index and "
                  "reason", "Not a batch: not JSON, not {\"records\": [...]}, or too many records"),
    )
    async def post_business(request: Request) -> Response:
        return await state.post_business(request)

    @app.get(
        EVENTS_PATH,
        summary="Read stored events (analysts, admins)",
        openapi_extra={"security": SECURITY},
        responses={
            200: schemas.json("page", "Events in ingest order"),
            422: problem("problem", "A parameter is wrong; the message names it"),
            **auth_responses,
        },
    )
    async def get_events(
        who: Annotated[Principal, Depends(state.reader)],
        kind: Annotated[str | None, Query(max_length=64,
                                          description="a kind, or a prefix ending in *: business.*")] = None,
        agent: Annotated[str | None, Query(max_length=128,
                                           description="the credential name the events came with")] = None,
        staff_id: Annotated[str | None, Query(max_length=256)] = None,
        host: Annotated[str | None, Query(max_length=256)] = None,
        since: Annotated[str | None, Query(description="events at or after this time (with its zone)",
                                           json_schema_extra={"format": "date-time"})] = None,
        until: Annotated[str | None, Query(description="events before this time (with its zone)",
                                           json_schema_extra={"format": "date-time"})] = None,
        after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="the last `seq` seen, to page on")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> Response:
        filters = dict(kind=kind, agent=agent, staff_id=staff_id, host=host, since=_parse_time("since", since),
                       until=_parse_time("until", until), after_seq=after, limit=limit)
        body = await run_in_threadpool(state.read_events, **filters)
        return Response(body, media_type="application/json")

    @app.get("/healthz", summary="Liveness and database reachability",
             responses={200: schemas.json("health", "Serving, and the database answers"),
                        503: schemas.json("health", "The database does not answer")})
    def healthz() -> Response:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - any database failure means "not healthy"
            return Response(msgspec.json.encode({"status": "unhealthy", "database": type(e).__name__}),
                            status_code=503, media_type="application/json")
        return Response(msgspec.json.encode({"status": "ok", "version": __version__}),
                        media_type="application/json")

    @app.get("/metrics", summary="Prometheus metrics",
             responses={200: {"description": "Prometheus text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = " -> ".join(str(x) for x in err.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts)[:1000]}, status_code=422)

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = schemas.merge(original_openapi())
            # Every 422 this app sends is one line naming the parameter (the handler below), never FastAPI's list.
            for path in doc.get("paths", {}).values():
                for operation in path.values():
                    for parameter in operation.get("parameters", []) if isinstance(operation, dict) else ():
                        if parameter.get("in") == "query":  # as RefuseNul does
                            _refuse_nul(parameter.get("schema", {}))
                    answer = operation.get("responses", {}).get("422") if isinstance(operation, dict) else None
                    if answer is not None:
                        answer["content"] = {"application/json": {"schema": schemas.ref("problem")}}
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(RefuseNul)
    install_web(app, state)  # the web UI, its JSON API, notifications and scheduled jobs (collector/web)
    return app


class RefuseNul:
    """Refuses a request whose query or path holds a NUL character (`%00`), whatever the route: no text column
    of PostgreSQL can hold one, so such a value could only fail later, inside a query, as a server error. A query
    parameter is answered 422 naming it; a path, 404 (no resource's name holds a NUL)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if "\x00" in scope.get("path", ""):
                body = {"detail": "no such resource: the path holds a NUL character (%00)"}
                await JSONResponse(body, status_code=404)(scope, receive, send)
                return
            if b"%00" in scope.get("query_string", b""):
                body = {"detail": f"{_nul_holder(scope)}: holds a NUL character (%00); no parameter may contain one"}
                await JSONResponse(body, status_code=422)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refuse_nul(schema: dict[str, Any]) -> None:
    """Document on a string parameter's schema that it may not hold NUL (RefuseNul answers 422 to one)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "string" and "pattern" not in option and "format" not in option:
            option["pattern"] = NO_NUL


def _nul_holder(scope: Any) -> str:
    """The name of the first query parameter whose name or value holds a NUL."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return next((k.replace("\x00", "") or "query" for k, v in pairs if "\x00" in k + v), "query")


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)
