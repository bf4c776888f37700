"""The proxy: listeners on an event loop of their own (uvloop when installed), the audit writer, counters.

`ProxyServer.start()` returns once every listener is bound (so an address in use fails at start, not later);
the loop runs on a thread named `custos-proxy-loop`; the spool is written by a child process the loop feeds,
or (without one) by a thread named `custos-proxy-writer`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.errors import ConfigError
from agent.events import Source
from agent.proxy import pgwire as w
from agent.proxy.analysis import Analyser
from agent.proxy.config import ProxyConfig, host_port
from agent.proxy.keys import KeyMatcher
from agent.proxy.session import ClientSide
from agent.proxy.spoolproc import SpoolProcess
from agent.proxy.tls import ListenerTls, listener_tls
from agent.proxy.writer import AuditWriter
from agent.spool import Spool
from agent.units import parse_duration, parse_size

log = logging.getLogger("custos.proxy")


@dataclass
class ListenerState:
    name: str
    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    tls: ListenerTls = ListenerTls(None, "disable", None)
    bound: list[tuple[str, int]] = field(default_factory=list)


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with the agent extra on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ProxyServer:
    def __init__(self, config: ProxyConfig, spool: Spool, *, name: str = "proxy", agent_id: str = "",
                 secret: bytes | None = None, spool_process: str | None = None) -> None:
        """`spool_process`: write the spool from a child process, with this `synchronous` setting (the
        agent's), instead of from a thread of this one; see agent.proxy.spoolproc for why."""
        if not config.listeners:
            raise ConfigError(f"sources -> {name} -> listeners: give at least one {{listen, upstream}}")
        self.config = config
        self.name = name
        self.listeners = []
        for i, lst in enumerate(config.listeners):
            lh, lp = host_port(lst.listen, f"listeners[{i}] -> listen")
            uh, up = host_port(lst.upstream, f"listeners[{i}] -> upstream")
            tls = listener_tls(config, lst, f"sources -> {name} -> listeners[{i}]")
            self.listeners.append(ListenerState(lst.name or name, lh, lp, uh, up, tls))
        self.analyser = Analyser(config.sensitive)
        self.keys = KeyMatcher(config.customer_keys, config.secret() if secret is None else secret,
                               config.customer_keys_cap)
        self.writer = AuditWriter(spool, Source(type="proxy", name=name), agent_id=agent_id,
                                  interval=parse_duration(config.flush_interval), max_pending=config.max_pending,
                                  exclude_objects=config.exclude_objects,
                                  sink=SpoolProcess(spool, spool_process) if spool_process else None)
        # The lane (agent/proxy/_framer.c) writes the events of common round trips without the Python audit.
        self.lane = config.lane and self.writer.outbox is not None
        self.end_user_keys = tuple(config.end_user_keys)
        self._app_user = re.compile(config.end_user_from_application_name) \
            if config.end_user_from_application_name else None
        self.exclude_users = frozenset(config.exclude_users)
        self.exclude_apps = frozenset(config.exclude_applications)
        self.buffer_high = parse_size(config.write_buffer_high)
        self.cap = parse_size(config.max_audit_message)
        self.startup_timeout = parse_duration(config.startup_timeout)
        self.connect_timeout = parse_duration(config.connect_timeout)
        self.open_connections = 0
        self.lane_fast = self.lane_gave_up = 0  # of ended sessions (see lane_done)
        self.cancel_keys: dict[tuple[int, int], tuple[str, int]] = {}
        # TLS transports still open: a TLS close waits for the peer's close_notify, so at shutdown they are
        # aborted and awaited, or the loop would close under them.
        self.tls_transports: set[asyncio.Transport] = set()
        self._counts: dict[str, dict[str, int]] = {"errors": {}, "excluded": {}, "shed": {}}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._stopped: asyncio.Event | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        started = threading.Event()
        failure: list[BaseException] = []
        self.loop = new_loop()
        self.writer.start(self.loop)  # before the first connection: records may come as soon as it runs
        self._thread = threading.Thread(target=self._run, args=(started, failure), name="custos-proxy-loop",
                                        daemon=True)
        self._thread.start()
        started.wait(60)
        if failure:
            self._thread.join(10)
            self.writer.stop()
            raise ConfigError(f"sources -> {self.name}: cannot listen: {failure[0]}") from failure[0]

    def _run(self, started: threading.Event, failure: list[BaseException]) -> None:
        loop = self.loop
        if loop is None:
            return
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(started))
        except OSError as e:
            failure.append(e)
            started.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, started: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            for lst in self.listeners:
                srv = await loop.create_server(lambda lst=lst: ClientSide(self, lst), lst.listen_host,
                                               lst.listen_port, backlog=1024, reuse_address=True)
                self._servers.append(srv)
                lst.bound = [s.getsockname()[:2] for s in srv.sockets]
                log.info("proxy %s listening on %s, upstream %s:%d", lst.name, lst.bound, lst.upstream_host,
                         lst.upstream_port)
        except OSError:
            for srv in self._servers:
                srv.close()
            raise
        started.set()
        await self._stopped.wait()
        for srv in self._servers:
            srv.close()
        for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            task.cancel()
        for transport in list(self.tls_transports):
            transport.abort()
        for _ in range(100):  # each abort's connection_lost runs within a loop iteration or two
            if not self.tls_transports:
                break
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        if self.loop is not None and self._stopped is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(30)
        self.writer.stop()

    def address(self, index: int = 0) -> tuple[str, int]:
        """Where listener `index` is bound (its real port when configured with port 0)."""
        return self.listeners[index].bound[0]

    # -- used by sessions -----------------------------------------------------------------------------------

    def count(self, group: str, key: str) -> None:
        bucket = self._counts[group]
        bucket[key] = bucket.get(key, 0) + 1

    def lane_done(self, fast: int, gave_up: int) -> None:
        """A session's lane ended: how many round trips it wrote, and how many it gave back to Python."""
        self.lane_fast += fast
        self.lane_gave_up += gave_up

    def audit_fault(self, exc: BaseException, where: str) -> None:
        kind = "protocol" if isinstance(exc, (w.ProtocolError, struct.error, IndexError)) else "audit_fault"
        self.count("errors", kind)
        log.error("proxy %s: audit of a session failed (%s at %s); %s", self.name, type(exc).__name__, where,
                  "closing it" if self.config.fail_closed else "forwarding it unaudited")

    def exclusion(self, user: str | None, app: str | None) -> str | None:
        if user is not None and user in self.exclude_users:
            return f"user.{user}"[:256]
        if app is not None and app in self.exclude_apps:
            return f"application.{app}"[:256]
        return None

    def end_user_from_app(self, app: str | None) -> str | None:
        if self._app_user is None or not app:
            return None
        m = self._app_user.search(app)
        return (m.group("user") or None) if m else None

    def cancel(self, key: tuple[int, int], done: Callable[[], None]) -> None:
        """Send a CancelRequest on to the backend that issued `key` (unknown keys go nowhere); `done` closes
        the client's cancel connection when the server has closed the upstream one."""
        target = self.cancel_keys.get(key)
        if target is None:
            self.count("errors", "cancel_unknown_key")
            done()
            return
        packet = struct.pack("!IIII", 16, w.CANCEL_REQUEST, *key)
        asyncio.get_running_loop().create_task(self._send_cancel(target, packet, done))

    async def _send_cancel(self, target: tuple[str, int], packet: bytes, done: Callable[[], None]) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*target), self.connect_timeout)
            try:
                writer.write(packet)
                await writer.drain()
                await asyncio.wait_for(reader.read(1), self.connect_timeout)  # the server closes when done
            finally:
                writer.close()
        except (OSError, asyncio.TimeoutError):
            self.count("errors", "cancel_upstream_unreachable")
        finally:
            done()

    def counters(self) -> dict[str, dict[str, int]]:
        out = {group: dict(values) for group, values in self._counts.items()}
        out["excluded"].update(self.writer.excluded)
        shed = self.writer.shed + (self.writer.outbox.shed if self.writer.outbox is not None else 0)
        if shed:
            out["shed"]["audit_queue_full"] = shed
        if self.writer.errors:
            out["errors"]["writer"] = self.writer.errors
        if self.writer.sink is not None and self.writer.sink.restarts:
            out["errors"]["spool_process_restarts"] = self.writer.sink.restarts
        if self.lane_fast or self.lane_gave_up:
            out["activity"] = {"lane_fast": self.lane_fast, "lane_given_back": self.lane_gave_up}
        if self.analyser.parse_failures:
            out["errors"]["sql_unparsed"] = self.analyser.parse_failures
        if self.keys.unreadable:
            out["errors"]["customer_key_unreadable"] = self.keys.unreadable
        return out
