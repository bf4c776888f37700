"""Credentials: agents and business sources that send events, and API tokens for people and scripts.

A credential is a random 256-bit token shown once; the store keeps only its SHA-256 (the token's entropy makes a
slow KDF unnecessary, and lookups stay one indexed read). Revocation takes effect on the next request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from agent.errors import CustosError
from collector.db import credentials

Kind = Literal["agent", "source", "api"]
ROLES = ("admin", "analyst", "manager")
TOKEN_PREFIX = "cst_"


class CredentialError(CustosError):
    """A credential cannot be created or changed as asked."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from, as its credential says."""

    id: int
    name: str
    kind: Kind
    role: str | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create(engine: Engine, name: str, kind: Kind, role: str | None = None) -> str:
    """A new credential; returns the token, which is not stored and cannot be shown again.

    A revoked credential's name can be given again (an agent re-enrolled after its credential leaked); the old
    token stays refused, since only the new one's hash is kept."""
    if not name or len(name) > 128 or not name.isprintable() or name != name.strip():
        raise CredentialError(f"credential name {name!r}: must be 1-128 printable characters, no outer spaces")
    if kind == "api" and role not in ROLES:
        raise CredentialError(f"--role: must be one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    values = dict(kind=kind, role=role, token_hash=hash_token(token), created_at=_now(), revoked_at=None,
                  last_seen_at=None)
    try:
        with engine.begin() as conn:
            reissued = conn.execute(
                update(credentials)
                .where(credentials.c.name == name, credentials.c.revoked_at.is_not(None))
                .values(**values)
            ).rowcount
            if not reissued:
                conn.execute(insert(credentials).values(name=name, **values))
    except IntegrityError as e:
        raise CredentialError(
            f"an active credential named {name!r} exists already; revoke it first "
            f"(`custos {'tokens' if kind == 'api' else 'agents'} revoke {name}`) or choose another name"
        ) from e
    return token


def revoke(engine: Engine, name: str, kind: Kind | None = None) -> None:
    with engine.begin() as conn:
        q = update(credentials).where(credentials.c.name == name, credentials.c.revoked_at.is_(None))
        if kind is not None:
            q = q.where(credentials.c.kind == kind)
        if conn.execute(q.values(revoked_at=_now())).rowcount == 0:
            raise CredentialError(f"no active credential named {name!r}")


def authenticate(engine: Engine, token: str) -> Principal | None:
    """The principal a bearer token belongs to, or None for an unknown or revoked token."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    digest = hash_token(token)
    with engine.connect() as conn:
        row = conn.execute(
            select(credentials.c.id, credentials.c.name, credentials.c.kind, credentials.c.role,
                   credentials.c.token_hash, credentials.c.revoked_at).where(credentials.c.token_hash == digest)
        ).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(id=row.id, name=row.name, kind=row.kind, role=row.role)


def listing(engine: Engine, kind: Kind | None = None) -> list[dict[str, object]]:
    with engine.connect() as conn:
        q = select(credentials.c.name, credentials.c.kind, credentials.c.role, credentials.c.created_at,
                   credentials.c.revoked_at, credentials.c.last_seen_at).order_by(credentials.c.name)
        if kind is not None:
            q = q.where(credentials.c.kind == kind)
        return [dict(r._mapping) for r in conn.execute(q)]
