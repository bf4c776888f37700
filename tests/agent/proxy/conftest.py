"""A real proxy (in this process, on its own event-loop thread) in front of the real local PostgreSQL."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest

from agent.events import DbQuery, Envelope, decode
from agent.proxy.config import Listener, ProxyConfig
from agent.customer_keys import CustomerKeyHasher
from agent.proxy.server import ProxyServer
from agent.spool import Spool
from tests.helpers.procs import base_env, wait_for

SECRET = b"test-customer-key-secret-of-32-bytes!"
UPSTREAM = "127.0.0.1:5432"


def key_hash(value: str) -> str:
    """What business events and the collector compute for the same customer: the proxy must agree."""
    return CustomerKeyHasher(SECRET).hash(value)


def via(url: str, port: int) -> str:
    """The same database URL, through the proxy's port."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{port}"))


@dataclass
class RunningProxy:
    server: ProxyServer
    spool: Spool
    spool_dir: Path

    @property
    def port(self) -> int:
        return self.server.address()[1]

    def url(self, db_url: str) -> str:
        return via(db_url, self.port)

    def events(self) -> list[Envelope]:
        self.server.writer.flush()
        return [decode(e.body) for e in self.spool.peek(1_000_000)]

    def queries(self, database: str | None = None) -> list[Envelope]:
        return [e for e in self.events() if isinstance(e, DbQuery)
                and (database is None or e.payload.database == database)]

    def wait_queries(self, predicate: Callable[[list[Envelope]], bool], database: str | None = None,
                     timeout: float = 20.0, what: str = "the expected db.query events") -> list[Envelope]:
        """The audit runs beside forwarding, so a client can see its answer before the event exists: poll."""
        found: list[Envelope] = []

        def check() -> bool:
            found[:] = self.queries(database)
            return predicate(found)

        wait_for(check, timeout, what)
        return found


@pytest.fixture
def make_proxy(tmp_path: Path) -> Iterator[Callable[..., RunningProxy]]:
    started: list[RunningProxy] = []

    def make(**settings: object) -> RunningProxy:
        settings.setdefault("listeners", [Listener(listen="127.0.0.1:0", upstream=UPSTREAM, name="pg-test")])
        settings.setdefault("flush_interval", "20ms")
        config = msgspec.structs.replace(ProxyConfig(), **settings)
        spool_dir = tmp_path / f"spool{len(started)}"
        spool = Spool(spool_dir / "spool.sqlite3", synchronous="NORMAL")
        server = ProxyServer(config, spool, name="pg-test", secret=SECRET)
        server.start()
        running = RunningProxy(server, spool, spool_dir)
        started.append(running)
        return running

    yield make
    for running in started:
        running.server.stop()
        running.spool.close()


@pytest.fixture
def proxy(make_proxy: Callable[..., RunningProxy]) -> RunningProxy:
    return make_proxy(
        customer_keys=["public.customers.customer_id"],
        sensitive={"public.customers.national_id": "id_number", "public.customers.full_name": "name",
                   "public.cards.pan": "bank_card"},
    )


def dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ProxyProcess:
    """`custos-agent proxy` as a real process (for clients whose blocking calls hold the GIL, and the CLI)."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def spool_path(self) -> Path:
        return self.workdir / "spool" / "spool.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.workdir / "proxy.log"

    def url(self, db_url: str) -> str:
        return via(db_url, self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def start_proxy_process(workdir: Path, *extra: str, config: Path | None = None,
                        env: dict[str, str] | None = None, port: int | None = None,
                        listen: bool = True) -> ProxyProcess:
    """Start the CLI; with `listen`, on `port` (or a free one) in front of the local PostgreSQL, unless `extra`
    names --listen itself; without, the listeners come from `config`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [sys.executable, "-m", "agent", "-v", "proxy"]
    if config is not None:
        args += ["--config", str(config)]
    if listen and "--listen" not in extra:
        args += ["--listen", f"127.0.0.1:{port}", "--upstream", UPSTREAM]
    args += list(extra)
    log = open(workdir / "proxy.log", "ab")
    proc = subprocess.Popen(args, env=base_env(CUSTOS_SPOOL_DIR=str(workdir / "spool"), **(env or {})),
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    running = ProxyProcess(proc, port, workdir)

    def accepting() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"proxy exited {proc.returncode}: {running.log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(accepting, 30, "the proxy process to listen")
    return running


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[ProxyProcess]:
    running = start_proxy_process(tmp_path / "proxy", env={"CUSTOS_CUSTOMER_KEY_SECRET": SECRET.decode()})
    yield running
    running.stop()
