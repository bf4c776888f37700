"""Business events from the lending and core-banking systems, as they send them: flat records (JSON objects, or
CSV rows) that name the customer in clear (`customer`) or already hashed (`customer_key`). Either way the event
custos stores holds only the keyed HMAC, made with the key and normalisation the proxy uses
(agent/customer_keys.py), so a customer read through the proxy and hit by a loan is one key on both sides.

    {"type": "loan_application", "ts": "2026-11-20T10:04:00Z", "ref": "LA-1001", "customer": "110105 19491231 002X",
     "application_id": "LA-1001", "amount": 12000, "currency": "EUR", "channel": "mobile_app",
     "device_id": "dev-7f3a", "new_device": true}

`ref` is the sending system's own id of the record; the event id is derived from (source, type, ref), so a record
sent twice is stored once. Without `ref` the whole record is its identity. A system that makes UUIDv7 ids of its
own may send one as `id`: it becomes the event's id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from agent.customer_keys import CustomerKeyError, CustomerKeyHasher
from agent.errors import CustosError
from agent.events import (KINDS, CardBinding, ContactChange, DeviceLogin, Envelope, FraudConfirmed,
                          LoanApplication, Source)

RECORD_TYPES: dict[str, type[Envelope]] = {
    "loan_application": LoanApplication,
    "contact_change": ContactChange,
    "card_binding": CardBinding,
    "device_login": DeviceLogin,
    "fraud_confirmed": FraudConfirmed,
}
ENVELOPE_FIELDS = {"type", "ts", "ref", "id", "customer", "customer_key", "card", "card_key", "host"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SOURCE_TYPE = "business"


class RecordError(CustosError):
    """One business record cannot be turned into an event; the message names the field."""


@dataclass(frozen=True, slots=True)
class Converted:
    event: Envelope | None
    reason: str = ""


def _key(record: Mapping[str, Any], clear: str, hashed: str, hasher: CustomerKeyHasher | None,
         required: bool) -> str | None:
    value, key = record.get(clear), record.get(hashed)
    if value not in (None, "") and key not in (None, ""):
        raise RecordError(f"{clear}, {hashed}: give the identifier in clear or hashed, not both")
    if key not in (None, ""):
        text = str(key).strip().lower()
        if not _HEX64.match(text):
            raise RecordError(f"{hashed}: must be the 64-hex keyed hash custos uses; send the clear identifier "
                              f"as {clear} instead")
        return text
    if value not in (None, ""):
        if hasher is None:
            raise RecordError(f"{clear}: the collector has no customer key to hash it with; set customers -> "
                              "key_file or CUSTOS_CUSTOMER_KEY_SECRET (the proxy's key), or send "
                              f"{hashed} already hashed")
        try:
            return hasher.hash(value if isinstance(value, (str, int)) else str(value))
        except CustomerKeyError as e:
            raise RecordError(f"{clear}: {e}") from e
    if required:
        raise RecordError(f"{clear}: missing; give the customer's identifier ({clear}) or its hash ({hashed})")
    return None


def _time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        when = value
    else:
        try:
            when = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise RecordError(f"ts: {value!r} is not a time; give one with its zone, such as "
                              "2026-11-20T10:04:00Z") from None
    if when.tzinfo is None:
        raise RecordError("ts: has no zone; give UTC times with their zone, such as 2026-11-20T10:04:00Z")
    return when.astimezone(dt.timezone.utc)


def event_id(source: str, kind: str, identity: str, when: dt.datetime) -> str:
    """A UUIDv7 whose time is the record's and whose rest is a hash of what identifies it: the same record from
    the same source always gets the same id."""
    ms = int(when.timestamp() * 1000) & ((1 << 48) - 1)
    digest = int.from_bytes(hashlib.sha256(f"{source}\x1f{kind}\x1f{identity}".encode()).digest()[:10], "big")
    rand_a, rand_b = digest >> 68, digest & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | ((rand_a & 0xFFF) << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def to_event(record: Mapping[str, Any], source: str, hasher: CustomerKeyHasher | None) -> Envelope:
    """The business.* event for one record; raises RecordError naming the field to fix."""
    if not isinstance(record, Mapping):
        raise RecordError("a business record is an object with type, ts, customer or customer_key, …")
    kind_name = str(record.get("type") or "").strip()
    cls = RECORD_TYPES.get(kind_name)
    if cls is None:
        raise RecordError(f"type: {kind_name!r} is not a business record type; use one of "
                          f"{', '.join(RECORD_TYPES)}")
    if record.get("ts") in (None, ""):
        raise RecordError("ts: missing; give the time it happened, such as 2026-11-20T10:04:00Z")
    when = _time(record["ts"])
    payload: dict[str, Any] = {k: v for k, v in record.items() if k not in ENVELOPE_FIELDS and v not in (None, "")}
    payload["customer_key"] = _key(record, "customer", "customer_key", hasher, True)
    if kind_name == "card_binding":
        card = _key(record, "card", "card_key", hasher, False)
        if card is not None:
            payload["card_key"] = card
    if kind_name == "fraud_confirmed" and "confirmed_on" not in payload:
        payload["confirmed_on"] = when.date().isoformat()
    tag = cls.__struct_config__.tag
    ref = str(record.get("ref") or "")
    identity = ref or msgspec.json.encode({k: str(v) for k, v in sorted(record.items())}).decode()
    own = str(record.get("id") or "")
    if own and not _UUID7.match(own):
        raise RecordError("id: must be a UUIDv7 in lower-case hex (or leave it out and give ref)")
    doc = {"kind": tag, "id": own or event_id(source, tag, identity, when), "ts": when.isoformat(),
           "host": str(record.get("host") or source), "source": {"type": SOURCE_TYPE, "name": source},
           "agent_id": source, "payload": payload}
    try:
        return msgspec.convert(doc, KINDS[tag], strict=False)
    except msgspec.ValidationError as e:
        message = str(e)
        where = re.search(r"`\$\.payload\.([^`]+)`", message)
        field = where.group(1) if where else ""
        text = message.split(" - at ")[0]
        if "Object contains unknown field" in message:
            field = message.split("`")[1] if "`" in message else field
            raise RecordError(f"{field}: not a field of a {kind_name} record") from e
        text = text.replace("`float | null`", "a number").replace("`bool | null`", "true or false")
        raise RecordError(f"{field or 'record'}: {text}") from e


def convert(record: Any, source: str, hasher: CustomerKeyHasher | None) -> Converted:
    try:
        return Converted(to_event(record, source, hasher))
    except RecordError as e:
        return Converted(None, str(e))


def source_of(name: str) -> Source:
    return Source(type=SOURCE_TYPE, name=name)


BUSINESS_EVENTS_PATH = "/api/v1/business-events"
RECORDS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["records"], "additionalProperties": False,
    "properties": {"records": {"type": "array", "items": {
        "type": "object", "required": ["type", "ts"],
        "properties": {"type": {"type": "string", "enum": list(RECORD_TYPES)},
                       "ts": {"type": "string", "format": "date-time"}, "ref": {"type": "string"},
                       "id": {"type": "string"},
                       "customer": {"type": "string"}, "customer_key": {"type": "string"}}}}},
}


class _Records(msgspec.Struct, forbid_unknown_fields=True):
    records: list[Any]


def parse_records(body: bytes, max_records: int) -> list[Any]:
    """The records of a `{"records": [...]}` body; raises BatchError when the body is not that at all."""
    from collector.ingest import BatchError

    try:
        records = msgspec.json.decode(body, type=_Records).records
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BatchError(f'the body must be {{"records": [ ... ]}} of business records: {e}') from e
    except RecursionError as e:
        raise BatchError("the body is nested too deeply to be a batch of records") from e
    if len(records) > max_records:
        raise BatchError(f"{len(records)} records in one batch; the limit is {max_records}, send smaller batches")
    return records
