"""Reading a batch of events from an agent: every event is checked on its own, so one bad event costs only itself.

`parse_batch` never raises for a bad *event*, only for a body that is not a batch at all (BatchError → 400).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import msgspec

from agent.errors import CustosError
from agent.events import MAX_EVENT_BYTES, SCHEMA_VERSION, Envelope, Event

class BatchError(CustosError):
    """The body is not a batch of events: not JSON, not {"events": [...]}, or too many events."""


class BodyTooLarge(CustosError):
    """The body, or its decompressed form, is over the configured limit."""


class _RawBatch(msgspec.Struct):
    events: list[msgspec.Raw]


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    events: list[tuple[int, Envelope]]  # (index in the batch, event)
    rejected: list[Rejection]


_event_decoder: msgspec.json.Decoder[Envelope] = msgspec.json.Decoder(Event)  # type: ignore[arg-type]
_batch_decoder = msgspec.json.Decoder(_RawBatch)


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to produce more than `limit` bytes (a compression bomb stops early)."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise BatchError(f"the body is not valid gzip: {e}") from e
    if len(out) > limit or d.unconsumed_tail:
        raise BodyTooLarge(f"the decompressed body is over {limit} bytes; send smaller batches")
    return out


def parse_batch(body: bytes, max_events: int) -> ParsedBatch:
    try:
        raws = [bytes(r) for r in _batch_decoder.decode(body).events]
    except msgspec.ValidationError as e:
        raise BatchError(f'the body must be {{"events": [ ... ]}}: {e}') from e
    except msgspec.DecodeError:
        # msgspec refuses invalid UTF-8 anywhere in the body; find the events that hold it and keep the rest.
        raws = _split_lenient(body)
    if len(raws) > max_events:
        raise BatchError(f"{len(raws)} events in one batch; the limit is {max_events}, send smaller batches")
    good: list[tuple[int, Envelope]] = []
    bad: list[Rejection] = []
    for i, raw in enumerate(raws):
        if isinstance(raw, Rejection):
            bad.append(Rejection(i, raw.reason, raw.id))
            continue
        if len(raw) > MAX_EVENT_BYTES:
            bad.append(Rejection(i, f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}", _peek_id(raw)))
            continue
        try:
            good.append((i, _event_decoder.decode(raw)))
        except msgspec.DecodeError as e:
            bad.append(Rejection(i, _reason(str(e)), _peek_id(raw)))
    return ParsedBatch(good, bad)


def _reason(message: str) -> str:
    if "`$.schema`" in message:
        return (f"schema version is newer than this collector understands ({SCHEMA_VERSION}); "
                "upgrade the collector before its agents")
    if "`$.kind`" in message and "Invalid value" in message:
        return f"unknown event kind ({message})"
    return message


def _peek_id(raw: bytes) -> str | None:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def _split_lenient(body: bytes) -> list[bytes | Rejection]:
    """The slow path for a body with invalid UTF-8: parse it with bad bytes kept as surrogates, then refuse
    exactly the events that contain them."""
    try:
        doc = json.loads(body.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError) as e:
        raise BatchError(f"the body is not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise BatchError('the body must be {"events": [ ... ]}')
    out: list[bytes | Rejection] = []
    for item in doc["events"]:
        text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
        try:
            out.append(text.encode("utf-8"))
        except UnicodeEncodeError:
            ident = item.get("id") if isinstance(item, dict) else None
            out.append(Rejection(-1, "event contains invalid UTF-8", ident if isinstance(ident, str) else None))
    return out
