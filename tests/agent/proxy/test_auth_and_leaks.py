"""Authentication passes through untouched (trust, md5, SCRAM-SHA-256), and no literal, bind value, password or
returned value ever reaches the spool or the log.

md5 and SCRAM need a server that asks for passwords: a private PostgreSQL cluster is created for this module
(initdb as the `postgres` system user), since the shared local server trusts every loopback connection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.events import DbQuery, DbSession, decode
from agent.spool import Spool
from tests.agent.proxy.conftest import SECRET, ProxyProcess, free_port, key_hash, start_proxy_process
from tests.helpers.procs import wait_for

pytestmark = pytest.mark.postgres
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SCRAM_PASSWORD = "PLANTED-scram-pw-5e1f"
MD5_PASSWORD = "PLANTED-md5-pw-77aa"


def as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        from tests.conftest import service_missing

        service_missing("PostgreSQL 15 server binaries (initdb)", FileNotFoundError(PG_BIN / "initdb"))
    root = Path(f"/tmp/custos-pgauth-{uuid.uuid4().hex[:8]}")
    root.mkdir(mode=0o700)
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    port = free_port()
    out = as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    assert out.returncode == 0, out.stderr
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all scram_user 127.0.0.1/32 scram-sha-256\n"
        "host all md5_user 127.0.0.1/32 md5\n"
        "host all all 127.0.0.1/32 trust\n"
    )
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                   "fsync = off\nshared_buffers = 16MB\nmax_connections = 20\n")
    out = as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start")
    assert out.returncode == 0, out.stderr
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE ROLE scram_user LOGIN PASSWORD '{SCRAM_PASSWORD}'")
            conn.execute("SET password_encryption = 'md5'")
            conn.execute(f"CREATE ROLE md5_user LOGIN PASSWORD '{MD5_PASSWORD}'")
        yield port
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def auth_proxy(tmp_path: Path, cluster: int) -> Iterator[ProxyProcess]:
    port = free_port()
    running = start_proxy_process(tmp_path / "proxy", "--listen", f"127.0.0.1:{port}", "--upstream",
                                  f"127.0.0.1:{cluster}", port=port)
    yield running
    running.stop()


def spooled(proxy: ProxyProcess) -> list:  # type: ignore[type-arg]
    with Spool(proxy.spool_path) as spool:
        return [decode(e.body) for e in spool.peek(1_000_000)]


def grep_files(root: Path, needles: list[bytes]) -> list[tuple[str, bytes]]:
    """Every (file, needle) where a planted value occurs in any file under root (spool, WAL, log)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            hits += [(str(path), n) for n in needles if n in content]
    return hits


@pytest.mark.parametrize("user,password,method", [("scram_user", SCRAM_PASSWORD, "sasl"),
                                                   ("md5_user", MD5_PASSWORD, "md5")])
def test_password_authentication_passes_through_and_the_password_stays_out(
        auth_proxy: ProxyProcess, user: str, password: str, method: str) -> None:
    url = f"postgresql://{user}:{password}@127.0.0.1:{auth_proxy.port}/postgres"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace(password, "wrong-" + password))
    auth_proxy.stop()
    sessions = [e for e in spooled(auth_proxy) if isinstance(e, DbSession)]
    assert [(e.payload.phase, e.payload.auth_method, e.payload.error_code) for e in sessions] == [
        ("start", method, None), ("end", method, None), ("end", method, "28P01")]
    assert all(e.actor.db_user == user for e in sessions)
    assert grep_files(auth_proxy.workdir, [password.encode()]) == []


def test_no_planted_value_reaches_the_spool_or_the_log(tmp_path: Path, pg_url: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[spool]\ndir = "{tmp_path / "proxy" / "spool"}"\n\n'
        '[sources.pg]\ntype = "proxy"\nlisteners = []\ncustomer_keys = ["public.customers.customer_id"]\n'
        'sensitive = { "public.customers.national_id" = "id_number" }\n'
    )
    proxy = start_proxy_process(tmp_path / "proxy", config=config,
                                env={"CUSTOS_CUSTOMER_KEY_SECRET": SECRET.decode()})
    planted = {
        "literal": "PLANTED-literal-7f3a9",
        "number": "918273645",
        "bind": "PLANTED-bind-c0ffee",
        "dollar": "PLANTED-dollar-0b5e",
        "comment": "PLANTED-comment-a11",
        "error": "PLANTED-dupkey-e44",
        "copy": "PLANTED-copyin-91d",
        "returned": "PLANTED-nid-4242",
        "key": "777123555",
    }
    try:
        with psycopg.connect(pg_url, autocommit=True) as direct:
            direct.execute("CREATE TABLE customers (customer_id bigint PRIMARY KEY, national_id text UNIQUE)")
            direct.execute("INSERT INTO customers VALUES (%s, %s)", (int(planted["key"]), planted["returned"]))
        with psycopg.connect(proxy.url(pg_url), autocommit=True) as conn:
            conn.execute(f"SELECT * FROM customers WHERE national_id = '{planted['literal']}' "
                         f"OR customer_id = {planted['number']} /* {planted['comment']} */")
            conn.execute("SELECT * FROM customers WHERE national_id = %s", (planted["bind"],))
            conn.execute(f"SELECT $${planted['dollar']}$$ AS d")
            assert conn.execute("SELECT customer_id, national_id FROM customers").fetchall() == [
                (int(planted["key"]), planted["returned"])]
            with pytest.raises(psycopg.errors.UniqueViolation):  # its message quotes the value: never kept
                conn.execute("INSERT INTO customers VALUES (1, %s), (2, %s)", (planted["error"],) * 2)
            with conn.cursor().copy("COPY customers FROM STDIN") as copy:
                copy.write_row((5, planted["copy"]))
        wait_for(lambda: sum(isinstance(e, DbQuery) for e in spooled(proxy)) >= 6, 20, "the statements' events")
    finally:
        proxy.stop()
    events = spooled(proxy)
    read_all = [e for e in events if isinstance(e, DbQuery) and e.payload.statement ==
                "SELECT customer_id, national_id FROM customers"]
    assert read_all[0].payload.customer_keys == [key_hash(planted["key"])]  # the key only as its hash
    assert grep_files(proxy.workdir, [v.encode() for v in planted.values()]) == []
    assert os.path.getsize(proxy.spool_path) > 0 and proxy.log_path.stat().st_size > 0
