"""Signed webhook deliveries, so that a receiver can tell a custos alert from a forged one and a retry from a new
message.

Every webhook POST carries:

    Custos-Delivery:  the outbox message's id; the same on every retry of that message (deliveries are
                      at-least-once: a receiver that answered too slowly may get one again, and drops it by this)
    Custos-Timestamp: Unix seconds when this attempt was made
    Custos-Signature: v1=<hex HMAC-SHA256 over "<timestamp>.<delivery>." followed by the exact body bytes>
                      (only when the receiver has a `secret_env`)

A receiver recomputes the HMAC with the shared secret, compares in constant time, and refuses a timestamp older
than its tolerance (a captured request replayed later). `verify` below does that for receivers in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from agent.errors import CustosError

DELIVERY_HEADER = "Custos-Delivery"
TIMESTAMP_HEADER = "Custos-Timestamp"
SIGNATURE_HEADER = "Custos-Signature"
VERSION = "v1"


class BadSignature(CustosError):
    """A webhook request that did not come from a collector holding the secret, or came too late."""


def signature(secret: bytes, timestamp: int, delivery: str, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.{delivery}.".encode(), hashlib.sha256)
    mac.update(body)
    return f"{VERSION}={mac.hexdigest()}"


def headers(secret: bytes | None, delivery: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    out = {DELIVERY_HEADER: delivery, TIMESTAMP_HEADER: str(timestamp)}
    if secret is not None:
        out[SIGNATURE_HEADER] = signature(secret, timestamp, delivery, body)
    return out


def verify(secret: bytes, received: Mapping[str, str], body: bytes, *, tolerance: float = 300.0,
           now: float | None = None) -> str:
    """Check a received webhook request; returns its delivery id, or raises BadSignature saying what is wrong.

    `received` is the request's headers (any mapping; names are looked up as sent and in lower case)."""
    def get(name: str) -> str:
        value = received.get(name) or received.get(name.lower())
        if not value:
            raise BadSignature(f"no {name} header: the request was not sent by a custos collector with a secret")
        return value

    given, stamp, delivery = get(SIGNATURE_HEADER), get(TIMESTAMP_HEADER), get(DELIVERY_HEADER)
    try:
        timestamp = int(stamp)
    except ValueError:
        raise BadSignature(f"{TIMESTAMP_HEADER} {stamp!r} is not Unix seconds") from None
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise BadSignature(f"{TIMESTAMP_HEADER} is {age:.0f} s from now, beyond the {tolerance:.0f} s tolerance: "
                           "a replayed request, or clocks apart (check NTP on both sides)")
    if not hmac.compare_digest(given.encode(), signature(secret, timestamp, delivery, body).encode()):
        raise BadSignature(f"{SIGNATURE_HEADER} does not match the body: a different secret, or a changed body")
    return delivery
