"""The custos event schema, version 1: defined once here, used by every agent source and by the collector.

An event is an envelope (id, time, where it was seen, who did it, which source saw it) with a payload whose type
is fixed by the envelope's `kind`. Encoded as JSON, an event is one object with `kind` as its tag:

    {"kind": "db.query", "id": "0193…", "schema": 1, "ts": "2026-11-27T03:10:00.123456Z", "host": "db01",
     "actor": {"db_user": "alice"}, "source": {"type": "proxy", "name": "pg-main"}, "payload": {…}}

Every field is documented in docs/events.md. Adding a field or a kind raises SCHEMA_VERSION; a collector refuses
events of a version newer than its own, so collectors are upgraded before agents.

Customer data never travels in an event: SQL arrives with its literals replaced, file contents only as counts,
customer identifiers only as keyed hashes (`KeyHash`).
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Annotated, Literal, Union, get_type_hints

import msgspec
from msgspec import Meta, Struct, field

from agent.event_shapes import CLASS_NAME, EVENT_ID, HEX64, SOURCE_TYPE, shape_error
from agent.ids import uuid7

SCHEMA_VERSION = 1

# Bounds keep one event small: the collector also refuses any event over MAX_EVENT_BYTES as a whole.
MAX_EVENT_BYTES = 256 * 1024
Name = Annotated[str, Meta(min_length=1, max_length=256)]
Str = Annotated[str, Meta(max_length=1024)]
Statement = Annotated[str, Meta(max_length=65536)]
Path = Annotated[str, Meta(max_length=4096)]
UtcTime = Annotated[dt.datetime, Meta(tz=True)]
Count = Annotated[int, Meta(ge=0)]
Port = Annotated[int, Meta(ge=0, le=65535)]
# Formats are checked after decoding by agent/event_shapes.py (plain string operations, not `re` per value);
# min/max length keep the decoder's own bound on them.
EventId = Annotated[str, Meta(min_length=36, max_length=36, extra_json_schema=EVENT_ID.schema()), EVENT_ID]
# HMAC-SHA256 of a normalised customer identifier, lower-case hex; the key never leaves the site.
KeyHash = Annotated[str, Meta(min_length=64, max_length=64, extra_json_schema=HEX64.schema()), HEX64]
Sha256 = Annotated[str, Meta(min_length=64, max_length=64, extra_json_schema=HEX64.schema()), HEX64]
SourceType = Annotated[str, Meta(min_length=1, max_length=64, extra_json_schema=SOURCE_TYPE.schema()), SOURCE_TYPE]
Tables = Annotated[list[Name], Meta(max_length=512)]
ClassName = Annotated[str, Meta(min_length=1, max_length=64, extra_json_schema=CLASS_NAME.schema()), CLASS_NAME]
Classes = Annotated[list[ClassName], Meta(max_length=64)]
Counters = Annotated[dict[Name, Count], Meta(max_length=256)]

_STRUCT = dict(kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True, gc=False)


class Actor(Struct, **_STRUCT):  # type: ignore[call-arg]
    """Who did it, as far as the source can tell. The collector adds staff identity from the directory."""

    os_user: Name | None = None
    db_user: Name | None = None
    staff_id: Name | None = None
    end_user: Name | None = None  # the person behind a pooled application account (sqlcommenter, app name)


class Source(Struct, **_STRUCT):  # type: ignore[call-arg]
    """Which sensor saw it: `type` is the kind of sensor, `name` the configured instance."""

    type: SourceType
    name: Str = ""


class ProcessInfo(Struct, **_STRUCT):  # type: ignore[call-arg]
    pid: Count
    name: Str | None = None
    exe: Path | None = None
    cmdline: Str | None = None
    ppid: Count | None = None
    username: Name | None = None


# ---------------------------------------------------------------------------------------------- payloads


class DbQueryPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    session_id: Name
    statement_type: Annotated[str, Meta(max_length=64)]
    fingerprint: Annotated[str, Meta(max_length=64)]
    statement: Statement  # literals and bind values replaced by placeholders
    database: Name | None = None
    application_name: Str | None = None
    client_addr: Annotated[str, Meta(max_length=64)] | None = None
    client_port: Port | None = None
    server: Str | None = None
    started_at: UtcTime | None = None
    duration_ms: Annotated[float, Meta(ge=0)] | None = None
    tables_read: Tables = field(default_factory=list)
    tables_written: Tables = field(default_factory=list)
    columns: Annotated[list[Name], Meta(max_length=2048)] = field(default_factory=list)
    sensitive_classes: Classes = field(default_factory=list)
    rows: Count | None = None
    bytes: Count | None = None
    error_code: Annotated[str, Meta(max_length=16)] | None = None
    cursor: Name | None = None  # rows fetched through a cursor are tied to the query that declared it
    customer_keys: Annotated[list[KeyHash], Meta(max_length=10000)] = field(default_factory=list)
    customer_keys_total: Count | None = None  # true count when customer_keys was capped
    system: bool = False  # issued by the database itself (a foreign-key check), not by a person
    unknown: Annotated[list[Name], Meta(max_length=64)] = field(default_factory=list)  # fields the source cannot see


class DbSessionPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    session_id: Name
    phase: Literal["start", "end", "observed"]
    database: Name | None = None
    application_name: Str | None = None
    client_addr: Annotated[str, Meta(max_length=64)] | None = None
    client_port: Port | None = None
    server_addr: Annotated[str, Meta(max_length=64)] | None = None
    server_port: Port | None = None
    process: ProcessInfo | None = None
    auth_method: Annotated[str, Meta(max_length=32)] | None = None
    tls: bool | None = None
    error_code: Annotated[str, Meta(max_length=16)] | None = None
    unknown: Annotated[list[Name], Meta(max_length=64)] = field(default_factory=list)


class FileExportPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    path: Path
    action: Literal["created", "modified", "moved"]
    size: Count
    destination: Literal["removable", "network", "sync", "local"]
    sha256: Sha256 | None = None
    mount_point: Path | None = None
    moved_from: Path | None = None
    owner: Name | None = None
    process: ProcessInfo | None = None
    counts: Counters = field(default_factory=dict)  # customer identifiers found, by class; never the values
    caps_reached: Annotated[list[Name], Meta(max_length=16)] = field(default_factory=list)
    classified: bool = True  # False when classification was shed under load


class DeviceMountPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    action: Literal["added", "removed"]
    mount_point: Path
    device: Path | None = None
    fstype: Name | None = None
    label: Str | None = None
    destination: Literal["removable", "network", "sync", "local"] = "removable"


class HeartbeatPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    version: Name
    uptime_s: Annotated[float, Meta(ge=0)]
    spool_depth: Count
    spool_bytes: Count
    dropped: Count  # events the spool's overflow policy discarded, since the spool was created
    dead_lettered: Count  # events the collector refused as malformed, kept aside in the spool
    monotonic: Count = 0  # counts heartbeats since the agent's spool was created; never goes back
    agent_clock: UtcTime | None = None
    interval_s: Annotated[float, Meta(gt=0)] | None = None  # the next heartbeat is due this long after this one
    watches: Count | None = None
    cpu_percent: Annotated[float, Meta(ge=0)] | None = None
    rss_bytes: Count | None = None
    config_hash: Annotated[str, Meta(max_length=64)] | None = None
    errors: Counters = field(default_factory=dict)
    excluded: Counters = field(default_factory=dict)  # events left out by configured exclusions, by rule
    shed: Counters = field(default_factory=dict)  # work skipped to stay under resource ceilings
    activity: Counters = field(default_factory=dict)  # how sources did their work (the proxy's lane), by source.kind


class ParseErrorPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    """A line or message a source could not read: where it was, never what it said."""

    location: Path
    offset: Count | None = None
    line: Count | None = None
    reason: Str


class LoanApplicationPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    customer_key: KeyHash
    application_id: Name
    amount: Annotated[float, Meta(ge=0)] | None = None
    currency: Annotated[str, Meta(min_length=3, max_length=3)] | None = None
    channel: Name | None = None
    device_id: Name | None = None
    ip: Annotated[str, Meta(max_length=64)] | None = None
    new_device: bool | None = None


class ContactChangePayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    customer_key: KeyHash
    field: Literal["phone", "email", "address"]
    channel: Name | None = None
    device_id: Name | None = None


class CardBindingPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    customer_key: KeyHash
    action: Literal["bind", "unbind"]
    card_key: KeyHash | None = None
    channel: Name | None = None
    device_id: Name | None = None


class DeviceLoginPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    customer_key: KeyHash
    device_id: Name
    ip: Annotated[str, Meta(max_length=64)] | None = None
    channel: Name | None = None


class FraudConfirmedPayload(Struct, **_STRUCT):  # type: ignore[call-arg]
    customer_key: KeyHash
    case_id: Name
    confirmed_on: dt.date
    application_id: Name | None = None


# ---------------------------------------------------------------------------------------------- envelope


class Envelope(Struct, tag_field="kind", **_STRUCT):  # type: ignore[call-arg]
    id: EventId
    ts: UtcTime
    host: Name
    source: Source
    schema: Annotated[int, Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION  # omitted when 1
    agent_id: Str = ""  # informational: the collector records the agent its credential names
    actor: Actor = field(default_factory=Actor)
    # The agent's hash chain, set by its spool when the event is queued (agent/spool.py): a number that counts
    # the spool's events from 1, and the SHA-256 of the previous event's bytes as queued (absent for number 1).
    chain_seq: Annotated[int, Meta(ge=1, le=2**63 - 1)] | None = None
    chain_prev: Sha256 | None = None


class DbQuery(Envelope, tag="db.query"):
    payload: DbQueryPayload


class DbSession(Envelope, tag="db.session"):
    payload: DbSessionPayload


class FileExport(Envelope, tag="file.export"):
    payload: FileExportPayload


class DeviceMount(Envelope, tag="device.mount"):
    payload: DeviceMountPayload


class AgentHeartbeat(Envelope, tag="agent.heartbeat"):
    payload: HeartbeatPayload


class ParseError(Envelope, tag="agent.parse_error"):
    payload: ParseErrorPayload


class LoanApplication(Envelope, tag="business.loan_application"):
    payload: LoanApplicationPayload


class ContactChange(Envelope, tag="business.contact_change"):
    payload: ContactChangePayload


class CardBinding(Envelope, tag="business.card_binding"):
    payload: CardBindingPayload


class DeviceLogin(Envelope, tag="business.device_login"):
    payload: DeviceLoginPayload


class FraudConfirmed(Envelope, tag="business.fraud_confirmed"):
    payload: FraudConfirmedPayload


Event = Union[
    DbQuery,
    DbSession,
    FileExport,
    DeviceMount,
    AgentHeartbeat,
    ParseError,
    LoanApplication,
    ContactChange,
    CardBinding,
    DeviceLogin,
    FraudConfirmed,
]

EVENT_TYPES: tuple[type[Envelope], ...] = Event.__args__  # type: ignore[attr-defined]
KINDS: dict[str, type[Envelope]] = {t.__struct_config__.tag: t for t in EVENT_TYPES}  # type: ignore[misc]
PAYLOAD_TYPES: dict[str, type[Struct]] = {kind: get_type_hints(t)["payload"] for kind, t in KINDS.items()}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: Envelope) -> bytes:
    """The event as compact JSON, as it is spooled and shipped."""
    return _encoder.encode(event)


def decode(data: bytes | str) -> Envelope:
    """One event from JSON; raises msgspec.ValidationError naming the field (`$.payload.rows`) on bad input."""
    event: Envelope = _decoder.decode(data)
    problem = shape_error(event)
    if problem is not None:
        raise msgspec.ValidationError(problem)
    return event


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


_HOST = socket.gethostname()


def new_event(
    kind: type[Envelope],
    payload: Struct,
    *,
    source: Source,
    actor: Actor | None = None,
    host: str | None = None,
    ts: dt.datetime | None = None,
    agent_id: str = "",
) -> Envelope:
    """A new event of `kind` with a fresh time-ordered id; `ts` defaults to now (UTC)."""
    when = ts or utcnow()
    return kind(  # type: ignore[call-arg]
        id=uuid7(int(when.timestamp() * 1_000_000_000)),
        ts=when,
        host=host or _HOST,
        source=source,
        actor=actor or Actor(),
        agent_id=agent_id,
        payload=payload,
    )


def json_schema() -> dict[str, object]:
    """The JSON Schema of one event, for the OpenAPI document and for other languages' producers."""
    schema: dict[str, object] = msgspec.json.schema(Event)
    return schema
