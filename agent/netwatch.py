"""`type = "db_connections"`: who on this machine is connected to the databases, as `db.session` events.

Every `interval`, the TCP connections to the configured endpoints (the database servers and the custos proxy) are
listed; a connection seen for the first time becomes a `db.session` event with phase `observed`, naming the local
address and port, the remote end, the process (pid, name, executable, scrubbed command line, parent) and its OS
user; a connection that has gone becomes phase `end`. The collector joins these on (address, port) with what the
proxy or the audit log saw, which often is only a shared database account: here is the person and the program.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from agent import procinfo
from agent.config import AgentConfig
from agent.events import Actor, DbSession, DbSessionPayload, ProcessInfo, Source, new_event
from agent.platform import Platform, TcpConnection, current
from agent.runtime import spool_events
from agent.section import duration, load_section
from agent.spool import Spool

log = logging.getLogger("custos.agent.netwatch")

_MAX_TRACKED = 20_000


class DbConnectionsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: str = "db_connections"
    endpoints: list[str] = msgspec.field(default_factory=list)  # "host:port", "[::1]:5432", "*:5432"
    interval: int | float | str = "5s"
    resolve_interval: int | float | str = "5m"  # host names are looked up again this often

    def __post_init__(self) -> None:
        duration(self.interval, "interval")
        duration(self.resolve_interval, "resolve_interval")
        if not self.endpoints:
            raise ValueError('endpoints: list the database and proxy addresses, such as ["10.0.0.5:5432"]')
        for e in self.endpoints:
            split_endpoint(e)


def split_endpoint(text: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ValueError naming the endpoint otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"endpoints: {text!r} must be host:port, such as 10.0.0.5:5432 or [::1]:5432")
    return host.strip("[]"), int(port)


def normalise(addr: str) -> str:
    """IPv4-mapped IPv6 addresses as plain IPv4, so that both spellings match one endpoint."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@dataclass(frozen=True, slots=True)
class Seen:
    process: ProcessInfo | None
    os_user: str | None


Key = tuple[str, int, str, int]


class DbConnectionsSource:
    def __init__(self, name: str, config: DbConnectionsConfig, *, platform: Platform | None = None,
                 agent_id: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = config
        self.platform = platform or current()
        self.agent_id = agent_id
        self.clock = clock
        self.interval = duration(config.interval, "interval")
        self.resolve_every = duration(config.resolve_interval, "resolve_interval")
        self.spool: Spool | None = None
        self.seen: dict[Key, Seen] = {}
        self.errors: Counter[str] = Counter()
        self._targets: set[tuple[str, int]] = set()
        self._any_host_ports: set[int] = set()
        self._resolved_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, name: str, section: dict[str, Any], config: AgentConfig) -> DbConnectionsSource:
        return cls(name, load_section(DbConnectionsConfig, name, section), agent_id=config.agent_id)

    def _resolve(self) -> None:
        targets: set[tuple[str, int]] = set()
        ports: set[int] = set()
        for endpoint in self.config.endpoints:
            host, port = split_endpoint(endpoint)
            if host == "*":
                ports.add(port)
                continue
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as e:
                self.errors["resolve"] += 1
                log.warning("cannot resolve database endpoint %s (%s); will try again", endpoint, e)
                continue
            targets |= {(normalise(str(info[4][0])), port) for info in infos}
        self._targets, self._any_host_ports = targets, ports
        self._resolved_at = self.clock()

    def _wanted(self, c: TcpConnection) -> bool:
        return c.remote_port in self._any_host_ports or (normalise(c.remote_addr), c.remote_port) in self._targets

    # -- one look -------------------------------------------------------------------------------------------

    def poll(self) -> list[DbSession]:
        """Look once; returns (and spools, when started) the events for connections that came and went."""
        if self.clock() - self._resolved_at >= self.resolve_every:
            self._resolve()
        now: dict[Key, TcpConnection] = {}
        for c in self.platform.tcp_connections():
            if self._wanted(c):
                now[(normalise(c.local_addr), c.local_port, normalise(c.remote_addr), c.remote_port)] = c
        new = [k for k in now if k not in self.seen]
        gone = [k for k in self.seen if k not in now]
        owners = self.platform.socket_owners([now[k].inode for k in new if now[k].pid is None and now[k].inode])
        events: list[DbSession] = []
        for k in new:
            c = now[k]
            pid = c.pid if c.pid is not None else owners.get(c.inode or -1)
            info = procinfo.process_info(pid) if pid is not None else None
            user = info.username if info and info.username else (
                procinfo.username_of_uid(c.uid) if c.uid is not None else None)
            seen = Seen(info, user)
            if len(self.seen) < _MAX_TRACKED:
                self.seen[k] = seen
            events.append(self._event("observed", k, seen))
        for k in gone:
            events.append(self._event("end", k, self.seen.pop(k)))
        if events and self.spool is not None:
            spool_events(self.spool, events)
        return events

    def _event(self, phase: Literal["observed", "end"], key: Key, seen: Seen) -> DbSession:
        laddr, lport, raddr, rport = key
        payload = DbSessionPayload(
            session_id=f"tcp:{laddr}:{lport}-{raddr}:{rport}", phase=phase, client_addr=laddr, client_port=lport,
            server_addr=raddr, server_port=rport, process=seen.process, unknown=["database", "db_user"],
        )
        source = Source(type="db_connections", name=self.name)
        event = new_event(DbSession, payload, source=source, actor=Actor(os_user=seen.os_user), agent_id=self.agent_id)
        return event  # type: ignore[return-value]

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self, spool: Spool) -> None:
        self.spool = spool
        self._thread = threading.Thread(target=self._run, name=f"custos-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the sensor outlives a bad look; counted for heartbeats
                self.errors["poll"] += 1
                log.exception("listing database connections failed; trying again")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def counters(self) -> dict[str, dict[str, int]]:
        return {"errors": dict(self.errors)}


__all__ = ["DbConnectionsConfig", "DbConnectionsSource"]
