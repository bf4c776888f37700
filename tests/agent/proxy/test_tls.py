"""TLS through the proxy: clients' TLS ends at the proxy when it has a certificate, and the proxy opens TLS to
the upstream when configured to. The shared local PostgreSQL speaks plain TCP; upstream TLS is tested against a
private cluster with `ssl = on` that refuses every connection without TLS (created with initdb, as the
`postgres` system user)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from agent.errors import ConfigError
from agent.proxy.config import Listener, proxy_config
from agent.proxy.server import ProxyServer
from agent.spool import Spool
from tests.agent.proxy.conftest import RunningProxy, dbname, free_port, via
from tests.helpers.procs import wait_for
from tests.helpers.tls import TlsFiles, make_tls_files

pytestmark = pytest.mark.postgres
PG_BIN = Path("/usr/lib/postgresql/15/bin")
QUERY = "SELECT id, label, price, data FROM items WHERE id <= 300 ORDER BY id"


@pytest.fixture
def certs(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def db(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, label text, price numeric, data bytea)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.5, decode(md5(g::text), 'hex') "
                     "FROM generate_series(1, 1000) g")
    return pg_url


def tls_proxy(make_proxy: Callable[..., RunningProxy], certs: TlsFiles, **settings: object) -> RunningProxy:
    return make_proxy(tls_cert=str(certs.cert), tls_key=str(certs.key), **settings)


def fetch(url: str, **params: str) -> tuple[bool, list]:  # type: ignore[type-arg]
    with psycopg.connect(url, **params) as conn:
        return conn.pgconn.ssl_in_use, conn.execute(QUERY).fetchall()


def test_sslmode_require_client_gets_direct_results_over_tls_and_is_audited(make_proxy, certs, db) -> None:  # type: ignore[no-untyped-def]
    proxy = tls_proxy(make_proxy, certs)
    direct_tls, direct = fetch(db)
    proxied_tls, proxied = fetch(proxy.url(db), sslmode="require")
    assert (direct_tls, proxied_tls) == (False, True)
    assert len(direct) == 300 and proxied == direct
    with psycopg.connect(proxy.url(db), sslmode="require", autocommit=True) as conn:
        with conn.cursor(binary=True) as cur:
            assert len(cur.execute("SELECT * FROM items WHERE id > %s", (990,)).fetchall()) == 10
        conn.execute("UPDATE items SET label = 'x' WHERE id <= 7")
    events = proxy.wait_queries(lambda es: sum("items" in e.payload.statement for e in es) >= 3, dbname(db))
    rows = {e.payload.statement_type: e.payload.rows for e in events if "items" in e.payload.statement
            and e.payload.statement_type in ("UPDATE",)}
    selects = sorted(e.payload.rows for e in events if e.payload.statement.startswith("SELECT")
                     and "items" in e.payload.statement)
    assert rows == {"UPDATE": 7} and selects == [10, 300]
    assert "990" not in str([e.payload.statement for e in events])


def test_psql_over_tls_prints_what_it_prints_directly(make_proxy, certs, db) -> None:  # type: ignore[no-untyped-def]
    proxy = tls_proxy(make_proxy, certs)
    script = "\\pset pager off\n\\d items\nSELECT * FROM items WHERE id < 20 ORDER BY id;\nSELECT 1/0;\n"

    def run(url: str) -> str:
        return subprocess.run(["psql", "-X", url], input=script, capture_output=True, text=True, timeout=60).stdout

    direct = run(db)
    assert "item 19" in direct and run(proxy.url(db) + "?sslmode=require") == direct


def test_sslmode_disable_clients_still_work_with_a_certificate_configured(make_proxy, certs, db) -> None:  # type: ignore[no-untyped-def]
    proxy = tls_proxy(make_proxy, certs)
    ssl_used, rows = fetch(proxy.url(db), sslmode="disable")
    assert ssl_used is False and len(rows) == 300
    ssl_used, rows = fetch(proxy.url(db), sslmode="prefer")
    assert ssl_used is True and len(rows) == 300


def test_without_a_certificate_the_proxy_still_refuses_tls(make_proxy, db) -> None:  # type: ignore[no-untyped-def]
    proxy = make_proxy()
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        psycopg.connect(proxy.url(db), sslmode="require")
    assert fetch(proxy.url(db), sslmode="prefer")[0] is False


def test_verify_full_client_checks_the_proxy_certificate_against_its_ca(make_proxy, certs, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proxy = tls_proxy(make_proxy, certs)
    ssl_used, rows = fetch(proxy.url(db), sslmode="verify-full", sslrootcert=str(certs.ca))
    assert ssl_used is True and len(rows) == 300
    stranger = make_tls_files(tmp_path / "other-ca")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(proxy.url(db), sslmode="verify-full", sslrootcert=str(stranger.ca))
    # The proxy counts the failed handshake on its own loop, after the client has already given up.
    wait_for(lambda: proxy.server.counters()["errors"].get("client_tls_failed") == 1, 10,
             "the proxy to count the failed handshake")
    assert fetch(proxy.url(db), sslmode="require")[0] is True  # the failed handshake harmed nobody else


def test_garbage_or_silence_instead_of_a_handshake_closes_only_that_connection(make_proxy, certs, db) -> None:  # type: ignore[no-untyped-def]
    proxy = tls_proxy(make_proxy, certs, startup_timeout="500ms")
    request = struct.pack("!II", 8, 80877103)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as garbage, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as silent:
        for sock in (garbage, silent):
            sock.sendall(request)
            assert sock.recv(1) == b"S"
        garbage.sendall(b"\x00" * 64 + b"not a TLS client hello" * 10)
        assert fetch(proxy.url(db), sslmode="require")[0] is True  # others are served meanwhile
        assert garbage.recv(100) == b"" and silent.recv(100) == b""  # both closed by the proxy
    errors = proxy.server.counters()["errors"]
    assert errors.get("client_tls_failed", 0) + errors.get("startup_timeout", 0) == 2


def test_asyncpg_verifies_the_proxy_and_gets_direct_results(make_proxy, certs, db) -> None:  # type: ignore[no-untyped-def]
    proxy = tls_proxy(make_proxy, certs)

    async def run(url: str, tls: ssl.SSLContext | bool) -> list[tuple]:  # type: ignore[type-arg]
        conn = await asyncpg.connect(url, ssl=tls)
        try:
            stmt = await conn.prepare("SELECT id, label, price, data FROM items WHERE id <= $1 ORDER BY id")
            return [tuple(r) for r in await stmt.fetch(250)]
        finally:
            await conn.close()

    direct = asyncio.run(run(db, False))
    proxied = asyncio.run(run(proxy.url(db), ssl.create_default_context(cafile=str(certs.ca))))
    assert len(direct) == 250 and proxied == direct
    events = proxy.wait_queries(lambda es: any(e.payload.rows == 250 for e in es), dbname(db))
    assert [e.payload.rows for e in events if "items" in e.payload.statement] == [250]


def test_a_listener_of_its_own_can_offer_tls_while_another_does_not(make_proxy, certs, db) -> None:  # type: ignore[no-untyped-def]
    proxy = make_proxy(listeners=[
        Listener(listen="127.0.0.1:0", upstream="127.0.0.1:5432", name="plain"),
        Listener(listen="127.0.0.1:0", upstream="127.0.0.1:5432", name="secure", tls_cert=str(certs.cert),
                 tls_key=str(certs.key)),
    ])
    plain, secure = proxy.server.address(0)[1], proxy.server.address(1)[1]
    assert fetch(via(db, plain), sslmode="prefer")[0] is False
    assert fetch(via(db, secure), sslmode="verify-full", sslrootcert=str(certs.ca))[0] is True


def test_upstream_tls_required_but_not_offered_gives_the_client_a_postgres_error(make_proxy, db) -> None:  # type: ignore[no-untyped-def]
    proxy = make_proxy(tls_upstream="require")
    with pytest.raises(psycopg.OperationalError, match="does not offer TLS"):
        psycopg.connect(proxy.url(db))
    assert proxy.server.counters()["errors"] == {"upstream_tls_refused": 1}


def test_tls_settings_are_checked_when_the_proxy_is_configured(certs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="tls_cert, tls_key: give both"):
        proxy_config("p", {"listeners": [{"listen": "127.0.0.1:0", "upstream": "127.0.0.1:5432"}],
                           "tls_cert": str(certs.cert)})
    with pytest.raises(ConfigError, match="tls_upstream"):
        proxy_config("p", {"listeners": [{"listen": "127.0.0.1:0", "upstream": "127.0.0.1:5432",
                                          "tls_upstream": "verify-full"}]})
    config = proxy_config("p", {"listeners": [{"listen": "127.0.0.1:0", "upstream": "127.0.0.1:5432"}],
                                "tls_cert": str(tmp_path / "missing.pem"), "tls_key": str(certs.key)})
    with Spool(tmp_path / "spool.sqlite3") as spool, pytest.raises(ConfigError, match="cannot load them"):
        ProxyServer(config, spool, name="p", secret=b"")


# -- TLS towards the upstream -------------------------------------------------------------------------------------

def as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, TlsFiles]]:
    """A private PostgreSQL with ssl = on that rejects every connection made without TLS."""
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        from tests.conftest import service_missing

        service_missing("PostgreSQL 15 server binaries (initdb)", FileNotFoundError(PG_BIN / "initdb"))
    root = Path(f"/tmp/custos-pgtls-{uuid.uuid4().hex[:8]}")
    root.mkdir(mode=0o700)
    files = make_tls_files(root / "tls")
    for path in (root, root / "tls", files.ca, files.cert, files.key):
        shutil.chown(path, "postgres", "postgres")
    data = root / "data"
    port = free_port()
    try:
        out = as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        assert out.returncode == 0, out.stderr
        (data / "pg_hba.conf").write_text("local all all trust\n"
                                          "hostssl all all 127.0.0.1/32 trust\n"
                                          "hostnossl all all 127.0.0.1/32 reject\n")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                       f"fsync = off\nshared_buffers = 16MB\nmax_connections = 20\nssl = on\n"
                       f"ssl_cert_file = '{files.cert}'\nssl_key_file = '{files.key}'\n")
        out = as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start")
        assert out.returncode == 0, out.stderr + (root / "log").read_text()
        yield port, files
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def upstream_proxy(make_proxy, port: int, **settings: object) -> RunningProxy:  # type: ignore[no-untyped-def]
    return make_proxy(listeners=[Listener(listen="127.0.0.1:0", upstream=f"127.0.0.1:{port}", name="pg-tls")],
                      **settings)


SSL_STATE = "SELECT ssl, version IS NOT NULL FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def test_plain_client_reaches_a_tls_only_server_through_verified_upstream_tls(make_proxy, tls_cluster) -> None:  # type: ignore[no-untyped-def]
    port, files = tls_cluster
    direct = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(direct, sslmode="disable")
    proxy = upstream_proxy(make_proxy, port, tls_upstream="require", tls_upstream_ca=str(files.ca))
    with psycopg.connect(proxy.url(direct), sslmode="disable", autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use is False
        assert conn.execute(SSL_STATE).fetchone() == (True, True)
        assert len(conn.execute("SELECT g FROM generate_series(1, 4321) g").fetchall()) == 4321
    events = proxy.wait_queries(lambda es: any("generate_series" in e.payload.statement for e in es), "postgres")
    assert [e.payload.rows for e in events if "generate_series" in e.payload.statement] == [4321]


def test_tls_on_both_sides_and_prefer_uses_the_upstreams_tls(make_proxy, tls_cluster, certs) -> None:  # type: ignore[no-untyped-def]
    port, _ = tls_cluster
    direct = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    proxy = upstream_proxy(make_proxy, port, tls_cert=str(certs.cert), tls_key=str(certs.key))  # prefer
    with psycopg.connect(proxy.url(direct), sslmode="verify-full", sslrootcert=str(certs.ca)) as conn:
        assert conn.pgconn.ssl_in_use is True
        assert conn.execute(SSL_STATE).fetchone() == (True, True)


def test_an_upstream_certificate_the_ca_does_not_vouch_for_is_refused(make_proxy, tls_cluster, certs) -> None:  # type: ignore[no-untyped-def]
    port, _ = tls_cluster
    proxy = upstream_proxy(make_proxy, port, tls_upstream="require", tls_upstream_ca=str(certs.ca))
    with pytest.raises(psycopg.OperationalError, match="TLS with the database server failed"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres")
    assert proxy.server.counters()["errors"] == {"upstream_tls_failed": 1}
