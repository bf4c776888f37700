"""Reading a batch of events from an agent: every event is checked on its own, so one bad event costs only itself.

`parse_batch` never raises for a bad *event*, only for a body that is not a batch at all (BatchError → 400).
Each refused event is reported with its index in the batch and a reason the agent can log and act on.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

import msgspec

from agent.errors import CustosError
from agent.event_shapes import shape_errors
from agent.events import KINDS, MAX_EVENT_BYTES, SCHEMA_VERSION, Envelope, Event


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
    repeats: int = 0  # exact copies of an earlier event of the batch: duplicates, acknowledged with it
    # Each event's bytes exactly as sent, by index (what an agent's hash chain covers); None when the body had
    # to be read leniently, which re-encodes the events.
    pieces: list[bytes] | None = None


# A reason is sent back to the agent and kept in its spool: long enough to act on, never a whole payload.
MAX_REASON_CHARS = 400
_KIND_LIST = ", ".join(sorted(KINDS))

_event_decoder: msgspec.json.Decoder[Envelope] = msgspec.json.Decoder(Event)  # type: ignore[arg-type]
_batch_decoder = msgspec.json.Decoder(_RawBatch)
_any_decoder = msgspec.json.Decoder()
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body (one member or several), refusing to produce more than `limit` bytes: a
    compression bomb stops after `limit` bytes of output, whatever its declared size."""
    out: list[bytes] = []
    produced = 0
    rest = body
    while rest:
        d = zlib.decompressobj(wbits=31)
        try:
            chunk = d.decompress(rest, limit - produced + 1)
        except zlib.error as e:
            raise BatchError(f"the body is not valid gzip: {e}") from e
        produced += len(chunk)
        if produced > limit or d.unconsumed_tail:
            raise BodyTooLarge(f"the decompressed body is over {limit} bytes; send smaller batches")
        if not d.eof:
            raise BatchError("the gzip body is truncated; send the whole compressed batch")
        out.append(chunk)
        rest = d.unused_data
    return b"".join(out)


def parse_batch(body: bytes, max_events: int) -> ParsedBatch:
    """Split `body` into events and check each; raise BatchError only when `body` is not a batch at all."""
    raws, exact = _split(body)
    if len(raws) > max_events:
        raise BatchError(f"{len(raws)} events in one batch; the limit is {max_events}, send smaller batches")
    checked = [(None, raw.reason) if isinstance(raw, Rejection) else check_event(raw) for raw in raws]
    decoded = [(i, ev) for i, (ev, _) in enumerate(checked) if ev is not None]
    for k, reason in shape_errors([ev for _, ev in decoded]).items():
        checked[decoded[k][0]] = (None, reason)
    good: list[tuple[int, Envelope]] = []
    bad: list[Rejection] = []
    first: dict[str, tuple[int, Envelope]] = {}
    repeats = 0
    for i, (event, reason) in enumerate(checked):
        raw = raws[i]
        if isinstance(raw, Rejection):
            bad.append(Rejection(i, raw.reason, raw.id))
            continue
        if event is None:
            bad.append(Rejection(i, _clip(reason), _peek_id(raw)))
            continue
        earlier, original = first.setdefault(event.id, (i, event))
        if earlier != i:
            if original == event:  # the same event twice (spooled twice): stored once, like a resent batch
                repeats += 1
            else:
                bad.append(Rejection(i, f"id {event.id} is also the id of event {earlier} of this batch, which "
                                        "differs from this one; every event needs its own id", event.id))
            continue
        good.append((i, event))
    return ParsedBatch(good, bad, repeats, raws if exact else None)  # type: ignore[arg-type]


def check_event(raw: bytes) -> tuple[Envelope | None, str]:
    """One event from its JSON, or None and the reason it is refused; but for its string formats (ids, keys),
    which `parse_batch` checks for the whole batch at once (agent/event_shapes.py)."""
    if len(raw) > MAX_EVENT_BYTES:
        return None, f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}: leave large values out"
    try:
        event = _event_decoder.decode(raw)
    except msgspec.ValidationError as e:
        return None, _reason(str(e), raw)
    except msgspec.DecodeError as e:
        return None, f"event is not valid JSON: {e}"
    except UnicodeDecodeError as e:
        return None, f"event holds bytes that are not UTF-8 (at byte {e.start}); send UTF-8 text only"
    except RecursionError:
        return None, "event is nested too deeply"
    # PostgreSQL text cannot hold NUL, which JSON may carry as \u0000 (and no sensor has a reason to send).
    if b"\\u0000" in raw and _holds_nul(_any_decoder.decode(raw)):
        return None, "event holds a NUL character (\\u0000) in a string; strings may not contain NUL"
    # Only a time in year 1 or 9999 can leave the datetime range once its offset is applied.
    if event.ts.year in (1, 9999):
        try:
            event.ts.astimezone(dt.timezone.utc)
        except OverflowError:
            return None, "`$.ts` is out of range once converted to UTC"
    return event, ""


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _reason(message: str, raw: bytes) -> str:
    """msgspec's message, said in the terms of the event schema where it is too terse."""
    if message.startswith("Expected `object`, got `") and " - at " not in message:
        got = message.removeprefix("Expected `object`, got `").rstrip("`")
        return f"an event must be a JSON object, not {got}"
    if "`$.schema`" in message and "<=" in message:
        return (f"schema version is newer than this collector understands ({SCHEMA_VERSION}); "
                "upgrade the collector before its agents")
    if "`$.kind`" in message and "Invalid value" in message:
        return _clip(f"unknown event kind {_peek_field(raw, 'kind')!r}; the kinds are {_KIND_LIST}")
    if "`$.ts`" in message and "timezone" in message:
        return "`$.ts` has no zone; give UTC times with their zone, such as 2026-11-27T03:10:00Z"
    return message


def _clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def _peek_field(raw: bytes, name: str) -> object:
    try:
        obj = _any_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    value = obj.get(name) if isinstance(obj, dict) else None
    return value[:64] if isinstance(value, str) else value


def _peek_id(raw: bytes) -> str | None:
    value = _peek_field(raw, "id")
    return value if isinstance(value, str) and 0 < len(value) <= 40 else None


def _split(body: bytes) -> tuple[list[bytes | Rejection], bool]:
    """The events of a batch as raw JSON, or as the reason one cannot be read on its own; and whether the raw
    JSON is each event's bytes exactly as sent."""
    try:
        return [bytes(r) for r in _batch_decoder.decode(body).events], True
    except msgspec.ValidationError as e:
        raise BatchError(f'the body must be {{"events": [ ... ]}}: {e}') from e
    except RecursionError as e:
        raise BatchError("the body is nested too deeply to be a batch of events") from e
    except msgspec.DecodeError:
        # msgspec refuses a lone surrogate escape (\ud800) anywhere in the body; find the events holding one
        # and keep the rest.
        return _split_lenient(body), False


def _split_lenient(body: bytes) -> list[bytes | Rejection]:
    """The slow path for a body msgspec cannot read as a whole: parse it with Python's json (bad bytes kept as
    surrogates), then refuse exactly the events that cannot be UTF-8."""
    try:
        doc = json.loads(body.decode("utf-8", "surrogateescape"))
    except RecursionError as e:
        raise BatchError("the body is nested too deeply to be a batch of events") from e
    except ValueError as e:
        raise BatchError(f"the body is not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise BatchError('the body must be {"events": [ ... ]}')
    out: list[bytes | Rejection] = []
    for item in doc["events"]:
        ident = item.get("id") if isinstance(item, dict) else None
        ident = ident if isinstance(ident, str) and 0 < len(ident) <= 40 and ident.isascii() else None
        try:
            text = json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError:  # NaN or Infinity, which msgspec (and JSON) does not allow
            out.append(Rejection(-1, "event holds NaN or Infinity, which JSON does not allow", ident))
            continue
        try:
            out.append(text.encode("utf-8"))
        except UnicodeEncodeError:
            bad = _LONE_SURROGATE.search(text)
            where = f" (\\u{ord(bad.group()):04x})" if bad else ""
            out.append(Rejection(-1, f"event holds a lone surrogate escape or bytes that are not UTF-8{where}; "
                                     "send UTF-8 text only", ident))
    return out
