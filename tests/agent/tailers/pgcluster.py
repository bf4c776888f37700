"""A PostgreSQL cluster of the test's own, in a temporary directory, with pgAudit loaded and both log formats on.

initdb and pg_ctl come from the installed PostgreSQL (/usr/lib/postgresql/VERSION/bin); pgAudit from Debian's
postgresql-VERSION-pgaudit. PostgreSQL refuses to run as root, so as root the cluster runs as `postgres` in a
directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from agent.tailers.pgaudit_stderr import RECOMMENDED_PREFIX


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_postgres() -> tuple[Path, str] | None:
    """(bin directory, version) of the newest installed PostgreSQL that has pgAudit."""
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        version = bindir.split("/")[-2]
        if Path(bindir, "initdb").exists() and Path(f"/usr/lib/postgresql/{version}/lib/pgaudit.so").exists():
            return Path(bindir), version
    return None


class PgCluster:
    def __init__(self, bindir: Path, *, extra_conf: str = "") -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="custos-pgaudit-"))
        self.data = self.root / "data"
        self.logdir = self.root / "log"
        self.port = _free_port()
        self.extra_conf = extra_conf
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    @property
    def stderr_log(self) -> Path:
        return self.logdir / "pg.log"

    @property
    def csv_log(self) -> Path:
        return self.logdir / "pg.csv"

    def dsn(self, user: str = "postgres", dbname: str = "postgres", **extra: str) -> str:
        parts = [f"host=127.0.0.1 port={self.port} user={user} dbname={dbname}"]
        parts += [f"{k}='{v}'" for k, v in extra.items()]
        return " ".join(parts)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed: {proc.stderr}\n{proc.stdout}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        conf = f"""
port = {self.port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.root}'
fsync = off
shared_preload_libraries = 'pgaudit'
logging_collector = on
log_destination = 'stderr,csvlog'
log_directory = '{self.logdir}'
log_filename = 'pg.log'
log_rotation_age = 0
log_rotation_size = 0
log_line_prefix = '{RECOMMENDED_PREFIX}'
log_connections = on
log_disconnections = on
lc_messages = 'C'
pgaudit.log = 'read,write,ddl'
pgaudit.log_relation = on
pgaudit.log_parameter = on
{self.extra_conf}
"""
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(conf)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "startup.log"), "-w", "-t", "60", "start")

    def rotate_logfile(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_rotate_logfile()")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
