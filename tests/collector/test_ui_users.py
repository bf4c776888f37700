"""Local users: scrypt hashes, lock-out after repeated failures, sessions kept only as hashes, the CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from collector import users
from collector.db import make_engine, web_sessions
from tests.helpers.procs import base_env

T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """These tests run on SQLite only (the `engine` fixture builds on this)."""
    return sqlite_url


def test_password_hash_is_salted_scrypt_and_verifies_only_the_right_password() -> None:
    a, b = users.hash_password("correct horse battery"), users.hash_password("correct horse battery")
    assert a.startswith("scrypt$32768$8$1$") and a != b
    assert users.verify_password("correct horse battery", a)
    assert not users.verify_password("correct horse batterz", a)
    assert not users.verify_password("x", "md5$abc")


def test_repeated_failures_lock_the_account_even_against_the_right_password(engine: Engine) -> None:
    users.create_user(engine, "ana", "analyst", "correct horse battery")
    for i in range(4):
        assert users.authenticate(engine, "ana", f"wrong {i}", now=T0).outcome == "refused"
    assert users.authenticate(engine, "ana", "wrong 5", now=T0).outcome == "locked"
    later = T0 + dt.timedelta(minutes=10)
    assert users.authenticate(engine, "ana", "correct horse battery", now=later).outcome == "locked"
    after = T0 + dt.timedelta(minutes=16)
    ok = users.authenticate(engine, "ana", "correct horse battery", now=after)
    assert ok.outcome == "ok" and ok.user is not None and ok.user.role == "analyst"


def test_a_success_resets_the_failure_count_and_unknown_names_are_refused_alike(engine: Engine) -> None:
    users.create_user(engine, "ana", "analyst", "correct horse battery")
    for _ in range(3):
        users.authenticate(engine, "ana", "wrong", now=T0)
    assert users.authenticate(engine, "ana", "correct horse battery", now=T0).outcome == "ok"
    for _ in range(4):
        assert users.authenticate(engine, "ana", "wrong", now=T0).outcome == "refused"
    assert users.authenticate(engine, "nobody", "wrong", now=T0).outcome == "refused"


def test_managers_need_a_team_and_weak_passwords_are_refused(engine: Engine) -> None:
    with pytest.raises(users.UserError, match="--team"):
        users.create_user(engine, "mona", "manager", "correct horse battery")
    with pytest.raises(users.UserError, match="at least"):
        users.create_user(engine, "ana", "analyst", "short")
    users.create_user(engine, "ana", "analyst", "correct horse battery")
    with pytest.raises(users.UserError, match="exists"):
        users.create_user(engine, "ana", "admin", "correct horse battery")


def test_sessions_are_stored_as_hashes_expire_and_end(engine: Engine) -> None:
    user = users.create_user(engine, "ana", "analyst", "correct horse battery")
    token, session = users.new_session(engine, user, hours=1, now=T0)
    with engine.connect() as conn:
        stored = list(conn.scalars(select(web_sessions.c.token_hash)))
    assert stored == [hashlib.sha256(token.encode()).hexdigest()] and token not in stored
    alive = users.session_of(engine, token, T0 + dt.timedelta(minutes=59))
    assert alive is not None and alive.csrf == session.csrf
    assert users.session_of(engine, token, T0 + dt.timedelta(minutes=61)) is None
    users.end_session(engine, token)
    assert users.session_of(engine, token, T0) is None
    users.disable_user(engine, "ana")
    assert users.authenticate(engine, "ana", "correct horse battery").outcome == "refused"


def test_users_add_command_creates_a_manager_who_can_log_in(sqlite_url: str, tmp_path: Path) -> None:
    env = base_env(CUSTOS_DATABASE_URL=sqlite_url)
    subprocess.run([sys.executable, "-m", "collector", "db", "upgrade"], env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "collector", "users", "add", "mona", "--role", "manager", "--team",
                          "risk", "--password-stdin"], env=env, input="correct horse battery\n", text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "user mona added (manager, team risk)" in out.stdout
    engine = make_engine(sqlite_url)
    try:
        result = users.authenticate(engine, "mona", "correct horse battery")
        assert result.user is not None and result.user.team == "risk"
    finally:
        engine.dispose()
