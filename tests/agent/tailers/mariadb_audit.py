"""The running MariaDB's server_audit plugin, writing to a file of the test's own for the test's own user only.

The plugin's settings are global to the shared server: a named lock keeps two such tests from overlapping, and
everything is put back afterwards (logging off first).
"""

from __future__ import annotations

import os
import pwd
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pymysql

from tests.conftest import MYSQL_DSN, service_missing

SETTINGS = ("server_audit_file_path", "server_audit_events", "server_audit_incl_users",
            "server_audit_query_log_limit", "server_audit_file_rotate_size", "server_audit_file_rotations")


def connect(user: str | None = None, password: str = "", database: str | None = None) -> Any:
    url = urlparse(MYSQL_DSN)
    return pymysql.connect(host=url.hostname or "127.0.0.1", port=url.port or 3306,
                           user=user or url.username or "root",
                           password=password if user else (url.password or ""),
                           database=database, autocommit=True, connect_timeout=5)


def admin() -> Any:
    try:
        return connect()
    except pymysql.err.OperationalError as e:
        service_missing(f"MariaDB at {MYSQL_DSN}", e)


def writable_dir(path: Path) -> Path:
    """A directory the server (user mysql) can write its log into."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        pw = pwd.getpwnam("mysql")
        os.chown(path, pw.pw_uid, pw.pw_gid)
    except (KeyError, PermissionError):
        os.chmod(path, 0o777)
    for parent in path.parents:  # pytest's per-user base directory is 0700
        if str(parent) in ("/", "/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o711)
    return path


@contextmanager
def audited_user(log_path: Path, *, query_log_limit: int = 1024) -> Iterator[tuple[str, str]]:
    """(user, database): a new user and database whose statements the server logs to `log_path`."""
    root = admin()
    suffix = uuid.uuid4().hex[:8]
    user, database = f"ct_{suffix}", f"custos_tail_{suffix}"
    cur = root.cursor()
    cur.execute("SELECT GET_LOCK('custos_server_audit', 120)")
    cur.execute("SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'SERVER_AUDIT'")
    if cur.fetchone() is None:
        cur.execute("INSTALL SONAME 'server_audit'")
    cur.execute("SHOW GLOBAL VARIABLES LIKE 'server_audit%'")
    saved = {k: v for k, v in cur.fetchall() if k in SETTINGS}
    cur.execute(f"CREATE DATABASE {database}")
    cur.execute(f"CREATE USER '{user}'@'%'")
    cur.execute(f"GRANT ALL ON {database}.* TO '{user}'@'%'")
    try:
        cur.execute("SET GLOBAL server_audit_logging = OFF")
        cur.execute("SET GLOBAL server_audit_file_path = %s", (str(log_path),))
        cur.execute("SET GLOBAL server_audit_events = 'CONNECT,QUERY,TABLE'")
        cur.execute("SET GLOBAL server_audit_incl_users = %s", (user,))
        cur.execute("SET GLOBAL server_audit_query_log_limit = %s", (query_log_limit,))
        cur.execute("SET GLOBAL server_audit_file_rotate_size = 1000000000")
        cur.execute("SET GLOBAL server_audit_logging = ON")
        yield user, database
    finally:
        cur.execute("SET GLOBAL server_audit_logging = OFF")
        for key, value in saved.items():
            cur.execute(f"SET GLOBAL {key} = %s", (int(value) if value.isdigit() else value,))
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        cur.execute(f"DROP DATABASE IF EXISTS {database}")
        cur.execute("SELECT RELEASE_LOCK('custos_server_audit')")
        root.close()


def rotate_now() -> None:
    """server_audit's own rotation: the file is renamed to FILE.1 and a new FILE opened."""
    with admin() as root:
        root.cursor().execute("SET GLOBAL server_audit_file_rotate_now = ON")
