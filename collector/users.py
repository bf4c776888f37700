"""Local users of the web UI: roles, scrypt password hashes, log-in with lock-out, sessions and CSRF tokens.

Roles: `admin` manages users and agents and sees everything; `analyst` sees and triages every alert; `manager`
sees only the people, alerts and summaries of their own `team`.

A session is a random token in an HttpOnly cookie; the database keeps only its SHA-256, so a copy of the
database does not let anyone in. Each session has its own CSRF token, which every form and every state-changing
API call made with the cookie must send back.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError

from agent.errors import CustosError
from collector.db import users, web_sessions

ROLES = ("admin", "analyst", "manager")
Role = Literal["admin", "analyst", "manager"]
# scrypt cost: 2^15 × 8 × 128 bytes = 32 MiB and ~0.1 s per hash; enough to make offline guessing expensive.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
MIN_PASSWORD = 10


class UserError(CustosError):
    """A user cannot be created or changed as asked."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=256 * 1024 * 1024, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(key))


_DUMMY_HASH = hash_password("not a password of anyone", n=SCRYPT_N)  # unknown names cost as much as known ones


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    team: str | None
    email: str | None

    @property
    def sees_all(self) -> bool:
        return self.role in ("admin", "analyst")

    def may_see_team(self, team: str | None) -> bool:
        return self.sees_all or (team is not None and team == self.team)


def _user(row: object) -> User:
    r = row._mapping  # type: ignore[attr-defined]
    return User(int(r["id"]), r["name"], r["role"], r["team"], r["email"])


def create_user(engine: Engine, name: str, role: str, password: str, *, team: str | None = None,
                email: str | None = None, now: dt.datetime | None = None) -> User:
    if not _NAME.match(name):
        raise UserError("a user name is 1-128 letters, digits or . _ @ -")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if role == "manager" and not team:
        raise UserError("a manager needs --team: managers see only their own team")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        with engine.begin() as conn:
            new_id = conn.execute(users.insert().values(
                name=name, role=role, team=team or None, email=email, password_hash=hash_password(password),
                failed_logins=0, created_at=now).returning(users.c.id)).scalar_one()
    except IntegrityError as e:
        raise UserError(f"user {name!r} exists already") from e
    return User(int(new_id), name, role, team or None, email)  # type: ignore[arg-type]


def get_user(engine: Engine, name: str) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.name == name, users.c.disabled_at.is_(None))).first()
    return _user(row) if row is not None else None


def list_users(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(users.c.name, users.c.role, users.c.team, users.c.email, users.c.failed_logins,
                   users.c.locked_until, users.c.disabled_at, users.c.last_login_at).order_by(users.c.name))]


def unlock_user(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        if conn.execute(update(users).where(users.c.name == name).values(
                failed_logins=0, locked_until=None)).rowcount == 0:
            raise UserError(f"no user {name!r}")


def disable_user(engine: Engine, name: str, now: dt.datetime | None = None) -> None:
    now = now or dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        row = conn.execute(select(users.c.id).where(users.c.name == name)).first()
        if row is None:
            raise UserError(f"no user {name!r}")
        conn.execute(update(users).where(users.c.id == row[0]).values(disabled_at=now))
        conn.execute(delete(web_sessions).where(web_sessions.c.user_id == row[0]))


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    outcome: Literal["ok", "refused", "locked"]


def authenticate(engine: Engine, name: str, password: str, *, max_failures: int = 5,
                 lock_minutes: float = 15.0, now: dt.datetime | None = None) -> LoginResult:
    """Check a log-in. `max_failures` wrong passwords in a row lock the account for `lock_minutes`; while
    locked, even the right password is refused (and not checked, so guessing gains nothing)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.name == name, users.c.disabled_at.is_(None))).first()
    if row is None:
        verify_password(password, _DUMMY_HASH)
        return LoginResult(None, "refused")
    r = row._mapping
    if r["locked_until"] is not None and r["locked_until"] > now:
        return LoginResult(None, "locked")
    if verify_password(password, r["password_hash"]):
        with engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == r["id"]).values(
                failed_logins=0, locked_until=None, last_login_at=now))
        return LoginResult(_user(row), "ok")
    failures = (0 if r["locked_until"] is not None else r["failed_logins"]) + 1
    locked = now + dt.timedelta(minutes=lock_minutes) if failures >= max_failures else None
    with engine.begin() as conn:
        # Counted in SQL so that concurrent wrong guesses are all counted.
        conn.execute(update(users).where(users.c.id == r["id"]).values(
            failed_logins=users.c.failed_logins + 1 if r["locked_until"] is None else 1, locked_until=locked))
    return LoginResult(None, "locked" if locked else "refused")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires_at: dt.datetime


def new_session(engine: Engine, user: User, *, hours: float = 12.0,
                now: dt.datetime | None = None) -> tuple[str, Session]:
    """A fresh session for `user`: returns the cookie value (shown once) and the session."""
    now = now or dt.datetime.now(dt.timezone.utc)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = now + dt.timedelta(hours=hours)
    with engine.begin() as conn:
        conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
        conn.execute(web_sessions.insert().values(token_hash=_token_hash(token), user_id=user.id, csrf=csrf,
                                                  created_at=now, expires_at=expires))
    return token, Session(user, csrf, expires)


def session_of(engine: Engine, token: str | None, now: dt.datetime | None = None) -> Session | None:
    if not token or len(token) > 128:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    with engine.connect() as conn:
        row = conn.execute(
            select(users, web_sessions.c.csrf, web_sessions.c.expires_at)
            .join(web_sessions, web_sessions.c.user_id == users.c.id)
            .where(web_sessions.c.token_hash == _token_hash(token), users.c.disabled_at.is_(None))).first()
    if row is None or row._mapping["expires_at"] <= now:
        return None
    return Session(_user(row), row._mapping["csrf"], row._mapping["expires_at"])


def end_session(engine: Engine, token: str | None) -> None:
    if token:
        with engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == _token_hash(token)))


def csrf_ok(expected: str | None, got: str | None) -> bool:
    return bool(expected) and bool(got) and hmac.compare_digest(str(expected), str(got))
