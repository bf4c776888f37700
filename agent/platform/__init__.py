"""What differs between operating systems, behind one small interface: `current()` answers a `Platform`.

Linux is implemented in `agent.platform.linux`; every other system gets `agent.platform.generic`, which does what
psutil alone can do (slower, and without removable-media detection beyond what psutil reports), so that Windows
and macOS implementations can replace it piece by piece.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TcpConnection:
    """One established TCP connection as the kernel lists it; `pid` only where the platform tells it directly."""

    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    uid: int | None = None
    inode: int | None = None
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class Holder:
    """A process that has a file open; `writing` when it opened it for writing."""

    pid: int
    writing: bool


@dataclass(frozen=True, slots=True)
class UserHome:
    user: str
    uid: int
    home: Path


class MountWaiter(Protocol):
    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds; True when the mount table may have changed."""
        ...

    def wake(self) -> None:
        """Make a current or the next `wait` return at once (for shutdown)."""
        ...

    def close(self) -> None: ...


class Platform(Protocol):
    name: str

    def local_users(self) -> list[UserHome]:
        """People with a home directory on this machine (not system accounts)."""
        ...

    def user_folders(self, user: UserHome) -> list[Path]:
        """The user's Downloads, Desktop and Documents folders (localised names honoured), existing or not."""
        ...

    def is_removable(self, device: str, opts: str) -> bool:
        """Whether the block device behind a mount is removable media (USB stick, SD card, external disk)."""
        ...

    def holders(self, paths: Collection[str], budget_s: float) -> dict[str, list[Holder]]:
        """Processes (other than this one) holding any of `paths` open; looks for at most `budget_s` seconds."""
        ...

    def tcp_connections(self) -> list[TcpConnection]:
        """Established (and connecting) TCP connections, IPv4 and IPv6."""
        ...

    def socket_owners(self, inodes: Collection[int]) -> dict[int, int]:
        """Socket inode → pid of a process that holds it, for the inodes given."""
        ...

    def mount_waiter(self, poll_interval: float) -> MountWaiter: ...

    def watch_limit_reached(self, path: str) -> bool:
        """Whether one more kernel file watch could not be added now (Linux: inotify ENOSPC)."""
        ...

    def kernel_watches(self) -> int | None:
        """File watches this process holds in the kernel, when the platform can count them."""
        ...


def current() -> Platform:
    """The implementation for the running system."""
    if sys.platform.startswith("linux"):
        from agent.platform.linux import LinuxPlatform

        return LinuxPlatform()
    from agent.platform.generic import GenericPlatform

    return GenericPlatform()
