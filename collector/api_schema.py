"""The shapes the collector's HTTP API sends and receives (msgspec Structs), and their place in the OpenAPI document.

FastAPI describes parameters itself; the event schema and the answers are msgspec Structs, whose JSON Schema
components are merged into FastAPI's document here (with the bearer scheme the routes declare).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from agent.events import Event

EVENTS_PATH = "/api/v1/events"
SECURITY = [{"bearer": []}]


class Problem(msgspec.Struct):
    """Every refusal: what is wrong and what to do."""

    detail: str


class IngestRejection(msgspec.Struct, omit_defaults=True):
    index: int  # the event's position in the batch, from 0
    reason: str
    id: str | None = None  # the event's id when it could be read


class IngestAck(msgspec.Struct):
    """The answer to a batch: counts, and each refused event with why. Sent only once the batch is durable."""

    accepted: int  # events new to the store
    duplicates: int  # events whose id the store held already (sent before): stored once, acknowledged again
    rejected: list[IngestRejection]


class EventBatch(msgspec.Struct):
    """What agents send. Events that do not match the schema are refused one by one (see IngestAck)."""

    events: list[Event]  # type: ignore[valid-type]


class StoredEventOut(msgspec.Struct):
    seq: int  # ingest order; page on with `after`
    agent: str  # the credential that sent it
    received_at: dt.datetime
    event: Event  # type: ignore[valid-type]


class EventsPage(msgspec.Struct):
    events: list[StoredEventOut]
    next_after: int | None  # give as `after` for the next page; null when this page is empty


class Health(msgspec.Struct, omit_defaults=True):
    status: str
    version: str | None = None
    database: str | None = None


_STRUCTS: dict[str, type[msgspec.Struct]] = {
    "problem": Problem,
    "ack": IngestAck,
    "batch": EventBatch,
    "page": EventsPage,
    "health": Health,
}


class Schemas:
    """`ref(name)` for a route's OpenAPI description; `merge(doc)` adds the components behind the refs."""

    def __init__(self) -> None:
        refs, self.components = msgspec.json.schema_components(
            list(_STRUCTS.values()), ref_template="#/components/schemas/{name}"
        )
        self._refs = dict(zip(_STRUCTS, refs))

    def ref(self, name: str) -> dict[str, Any]:
        return self._refs[name]

    def json(self, name: str, description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": self.ref(name)}}}

    def merge(self, doc: dict[str, Any]) -> dict[str, Any]:
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name, schema in self.components.items():
            if name in schemas and schemas[name] != schema:
                # Two models of one name would silently describe the wrong body; rename one of them.
                raise RuntimeError(f"OpenAPI component {name!r} is defined twice, differently")
            schemas[name] = schema
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An agent credential (`custos agents enroll`) to send events, or an API token "
                           "(`custos tokens create --role analyst`) to read them.",
        }
        return doc
