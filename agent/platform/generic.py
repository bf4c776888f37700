"""The portable fallback: what psutil alone can tell, on any system. Linux uses `agent.platform.linux` instead."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection
from pathlib import Path

import psutil

from agent import procinfo
from agent.platform import Holder, MountWaiter, TcpConnection, UserHome

USER_FOLDER_NAMES = ("Downloads", "Desktop", "Documents")
_TCP_STATES = {psutil.CONN_ESTABLISHED, psutil.CONN_SYN_SENT}


class TimedMountWaiter:
    """Without a change notification, the mount table is read again every `poll_interval` seconds."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._wake = threading.Event()

    def wait(self, timeout: float) -> bool:
        woke = self._wake.wait(min(timeout, self.poll_interval))
        self._wake.clear()
        return not woke  # a timeout means "look again"; a wake means "stop"

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._wake.set()


class GenericPlatform:
    name = "generic"

    def local_users(self) -> list[UserHome]:
        home = Path.home()
        return [UserHome(user=os.path.basename(home), uid=os.getuid() if hasattr(os, "getuid") else 0, home=home)]

    def user_folders(self, user: UserHome) -> list[Path]:
        return [user.home / name for name in USER_FOLDER_NAMES]

    def is_removable(self, device: str, opts: str) -> bool:
        # psutil marks removable drives in the options on Windows ("rw,removable").
        return "removable" in opts.split(",")

    def holders(self, paths: Collection[str], budget_s: float) -> dict[str, list[Holder]]:
        wanted = set(paths)
        found: dict[str, list[Holder]] = {}
        deadline = time.monotonic() + budget_s
        me = os.getpid()
        for p in psutil.process_iter():
            if time.monotonic() > deadline:
                break
            if p.pid == me:
                continue
            for f in procinfo.call(p.open_files) or ():
                if f.path in wanted:
                    mode = getattr(f, "mode", "r")
                    found.setdefault(f.path, []).append(Holder(p.pid, writing=mode != "r"))
        return found

    def tcp_connections(self) -> list[TcpConnection]:
        out: list[TcpConnection] = []
        for c in procinfo.call(psutil.net_connections, kind="tcp") or ():
            if c.status in _TCP_STATES and c.raddr:
                out.append(TcpConnection(c.laddr.ip, c.laddr.port, c.raddr.ip, c.raddr.port, pid=c.pid))
        return out

    def socket_owners(self, inodes: Collection[int]) -> dict[int, int]:
        return {}  # tcp_connections() already names the pid here

    def mount_waiter(self, poll_interval: float) -> MountWaiter:
        return TimedMountWaiter(poll_interval)

    def watch_limit_reached(self, path: str) -> bool:
        return False

    def kernel_watches(self) -> int | None:
        return None
