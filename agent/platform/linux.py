"""Linux: sysfs for removable media, /proc for who holds a file or a socket, sock_diag for TCP, inotify limits."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import pwd
import re
import select
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from agent.platform import Holder, TcpConnection, UserHome
from agent.platform.generic import USER_FOLDER_NAMES, GenericPlatform

log = logging.getLogger("custos.agent.platform")

_XDG_KEYS = {"XDG_DOWNLOAD_DIR": "Downloads", "XDG_DESKTOP_DIR": "Desktop", "XDG_DOCUMENTS_DIR": "Documents"}
_XDG_LINE = re.compile(r'^\s*(XDG_[A-Z]+_DIR)\s*=\s*"(.*)"\s*$')
_O_ACCMODE = 0o3


class LinuxMountWaiter:
    """Waits for the kernel's change notice on /proc/self/mounts (POLLPRI): no polling while nothing changes."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval  # a safety net in case a notice is missed
        self._mounts = open("/proc/self/mounts", "rb")  # noqa: SIM115 - held for the waiter's life
        self._wake_r, self._wake_w = os.pipe()
        self._poll = select.poll()
        self._poll.register(self._mounts.fileno(), select.POLLPRI | select.POLLERR)
        self._poll.register(self._wake_r, select.POLLIN)

    def wait(self, timeout: float) -> bool:
        ready = self._poll.poll(max(0.0, min(timeout, self.poll_interval)) * 1000)
        if not ready:
            return True  # the safety-net interval passed: look again
        changed = False
        for fd, _ in ready:
            if fd == self._wake_r:
                os.read(self._wake_r, 64)
            else:
                changed = True
        return changed

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass

    def close(self) -> None:
        self.wake()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._mounts.close()


class LinuxPlatform(GenericPlatform):
    name = "linux"

    def __init__(self, *, sys_root: str = "/sys", proc_root: str = "/proc") -> None:
        self.sys_root = Path(sys_root)
        self.proc_root = proc_root
        self._libc = None

    # -- people ---------------------------------------------------------------------------------------------

    def local_users(self) -> list[UserHome]:
        uid_min = _login_defs_uid_min()
        users: dict[Path, UserHome] = {}
        for pw in pwd.getpwall():
            if uid_min <= pw.pw_uid < 60000 and pw.pw_dir and os.path.isdir(pw.pw_dir):
                users.setdefault(Path(pw.pw_dir), UserHome(pw.pw_name, pw.pw_uid, Path(pw.pw_dir)))
        # Directory-service accounts (sssd, winbind) are often missing from getpwall but own a folder in /home.
        for entry in _scandir("/home"):
            home = Path(entry.path)
            if home in users or not entry.is_dir(follow_symlinks=False):
                continue
            uid = entry.stat(follow_symlinks=False).st_uid
            if uid >= uid_min:
                users[home] = UserHome(_user_name(uid), uid, home)
        return sorted(users.values(), key=lambda u: str(u.home))

    def user_folders(self, user: UserHome) -> list[Path]:
        names = {key: user.home / default for key, default in _XDG_KEYS.items()}
        try:
            text = (user.home / ".config" / "user-dirs.dirs").read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            m = _XDG_LINE.match(line)
            if m and m.group(1) in names:
                value = m.group(2).replace("$HOME", str(user.home))
                if value.startswith("/") and value.rstrip("/") != str(user.home):
                    names[m.group(1)] = Path(value)
        return list(names.values()) or [user.home / n for n in USER_FOLDER_NAMES]

    # -- removable media ------------------------------------------------------------------------------------

    def is_removable(self, device: str, opts: str) -> bool:
        """Removable flag of the whole disk in sysfs, or a disk that hangs off a USB or MMC (SD card) bus."""
        if not device.startswith("/dev/"):
            return False
        return self._block_removable(os.path.basename(os.path.realpath(device)), depth=0)

    def _block_removable(self, name: str, depth: int) -> bool:
        block = self.sys_root / "class" / "block" / name
        if not block.exists() or depth > 4:
            return False
        disk = block.resolve()
        if (disk / "partition").exists():
            disk = disk.parent
        try:
            if (disk / "removable").read_text().strip() == "1":
                return True
        except OSError:
            pass
        bus_path = str(disk)
        if "/usb" in bus_path or "/mmc_host/" in bus_path:
            return True
        # An encrypted or LVM volume (dm-N) is as removable as the disks beneath it.
        slaves = block.resolve() / "slaves"
        return any(self._block_removable(s.name, depth + 1) for s in _scandir(str(slaves)))

    # -- who holds what -------------------------------------------------------------------------------------

    def _fds(self, budget_s: float) -> Iterator[tuple[int, str, str]]:
        """(pid, fd path, link target) for every open descriptor of every other process, within the budget."""
        deadline = time.monotonic() + budget_s
        me = os.getpid()
        for entry in _scandir(self.proc_root):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            if time.monotonic() > deadline:
                log.debug("process scan stopped at its %.3fs budget", budget_s)
                return
            fd_dir = f"{entry.path}/fd"
            for fd in _scandir(fd_dir):
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                yield int(entry.name), fd.path, target

    def holders(self, paths: Collection[str], budget_s: float) -> dict[str, list[Holder]]:
        wanted = set(paths)
        found: dict[str, list[Holder]] = {}
        if not wanted:
            return found
        for pid, fd_path, target in self._fds(budget_s):
            if target in wanted:
                found.setdefault(target, []).append(Holder(pid, writing=_opened_for_writing(fd_path)))
        return found

    def tcp_connections(self) -> list[TcpConnection]:
        from agent.platform import _sockdiag

        try:
            return _sockdiag.established()
        except OSError as e:  # netlink refused (a locked-down container): psutil reads /proc instead
            log.debug("sock_diag unavailable (%s); using psutil", e)
            return super().tcp_connections()

    def socket_owners(self, inodes: Collection[int]) -> dict[int, int]:
        wanted = {f"socket:[{i}]": i for i in inodes}
        owners: dict[int, int] = {}
        if not wanted:
            return owners
        for pid, _, target in self._fds(1.0):
            inode = wanted.get(target)
            if inode is not None and inode not in owners:
                owners[inode] = pid
                if len(owners) == len(wanted):
                    break
        return owners

    # -- mounts and inotify ---------------------------------------------------------------------------------

    def mount_waiter(self, poll_interval: float) -> LinuxMountWaiter:
        return LinuxMountWaiter(poll_interval)

    def watch_limit_reached(self, path: str) -> bool:
        """Try to add one inotify watch in a throw-away instance: ENOSPC means the user's limit is reached."""
        libc = self._load_libc()
        fd = libc.inotify_init1(os.O_CLOEXEC)
        if fd < 0:
            return False  # out of inotify instances: says nothing about watches
        try:
            wd = libc.inotify_add_watch(fd, os.fsencode(path), 0x4)  # IN_ATTRIB: any cheap mask will do
            return wd < 0 and ctypes.get_errno() == errno.ENOSPC
        finally:
            os.close(fd)

    def _load_libc(self) -> ctypes.CDLL:
        if self._libc is None:
            self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return self._libc

    def kernel_watches(self) -> int | None:
        total = 0
        for fd in _scandir("/proc/self/fd"):
            try:
                if os.readlink(fd.path) != "anon_inode:inotify":
                    continue
                with open(f"/proc/self/fdinfo/{fd.name}", "rb") as f:
                    total += f.read().count(b"inotify wd:")
            except OSError:
                continue
        return total


def _scandir(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _opened_for_writing(fd_path: str) -> bool:
    info = fd_path.replace("/fd/", "/fdinfo/")
    try:
        with open(info, "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    return int(line.split()[1], 8) & _O_ACCMODE != 0
    except (OSError, ValueError, IndexError):
        pass
    return False


def _login_defs_uid_min() -> int:
    try:
        with open("/etc/login.defs", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "UID_MIN" and parts[1].isdigit():
                    return int(parts[1])
    except OSError:
        pass
    return 1000


def _user_name(uid: int) -> str:
    from agent.procinfo import username_of_uid

    return username_of_uid(uid)
