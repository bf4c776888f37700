"""Mounts and destinations: which filesystems are removable media, network shares or cloud-sync folders.

`MountTable.refresh()` reads psutil's partition list and answers what appeared and what went since the last
look; `MountMonitor` does that in a thread whenever the kernel says the mount table changed (Linux) or every
`poll_interval` seconds, so new media are picked up without a restart. `MountsSource` turns the changes into
`device.mount` events, remembering the mounts it reported in the spool so that a restart neither repeats nor
misses a change.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from agent import procinfo
from agent.config import AgentConfig
from agent.events import DeviceMount, DeviceMountPayload, Source, new_event
from agent.files.config import DEFAULT_SYNC_FOLDERS, MountPolicyConfig, MountsConfig
from agent.platform import Platform, current
from agent.runtime import spool_events
from agent.section import duration, load_section
from agent.spool import Spool

log = logging.getLogger("custos.agent.mounts")

Destination = Literal["removable", "network", "sync", "local"]

NETWORK_FSTYPES = frozenset({
    "cifs", "smb3", "smbfs", "nfs", "nfs4", "ncpfs", "afs", "ceph", "glusterfs", "9p", "davfs",
    "fuse.sshfs", "sshfs", "fuse.davfs2", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse", "fuse.glusterfs",
    "fuse.cephfs", "fuse.smbnetfs", "fuse.curlftpfs",
})


@dataclass(frozen=True, slots=True)
class Mount:
    mount_point: str
    device: str
    fstype: str
    destination: Destination


class MountPolicy:
    """Classes a psutil partition as removable, network or neither (None: not interesting)."""

    def __init__(self, config: MountPolicyConfig, platform: Platform) -> None:
        self.removable_globs = [os.path.normpath(g) for g in config.removable_mounts]
        self.ignore_globs = [os.path.normpath(g) for g in config.ignore_mounts]
        self.network_fstypes = NETWORK_FSTYPES | set(config.network_fstypes)
        self.platform = platform
        self.sync_paths = _sync_paths(config.sync_paths, platform)

    def classify(self, mount_point: str, device: str, fstype: str, opts: str) -> Destination | None:
        if any(fnmatch.fnmatchcase(mount_point, g) for g in self.ignore_globs):
            return None
        if any(fnmatch.fnmatchcase(mount_point, g) for g in self.removable_globs):
            return "removable"
        if fstype in self.network_fstypes or fstype.startswith("fuse.sshfs"):
            return "network"
        if self.platform.is_removable(device, opts):
            return "removable"
        return None


def _sync_paths(configured: list[str] | None, platform: Platform) -> list[str]:
    if configured is not None:
        return [os.path.normpath(os.path.expanduser(p)) for p in configured]
    paths: list[str] = []
    for user in procinfo.call(platform.local_users) or []:
        paths += [str(user.home / name) for name in DEFAULT_SYNC_FOLDERS if (user.home / name).is_dir()]
    return paths


class MountTable:
    """The interesting mounts (removable, network) as last seen, and what changed since."""

    def __init__(self, policy: MountPolicy, partitions: Callable[[], list[Any]] | None = None) -> None:
        self.policy = policy
        self._partitions = partitions or (lambda: psutil.disk_partitions(all=True))
        self._lock = threading.Lock()
        self.mounts: dict[str, Mount] = {}

    def scan(self) -> dict[str, Mount]:
        found: dict[str, Mount] = {}
        for p in self._partitions():
            dest = self.policy.classify(p.mountpoint, p.device, p.fstype, p.opts)
            if dest is not None:
                found[p.mountpoint] = Mount(p.mountpoint, p.device, p.fstype, dest)
        return found

    def refresh(self) -> tuple[list[Mount], list[Mount]]:
        """(added, removed) since the last refresh; the first refresh reports every mount as added."""
        now = self.scan()
        with self._lock:
            before, self.mounts = self.mounts, now
        added = [m for k, m in now.items() if before.get(k) != m]
        removed = [m for k, m in before.items() if now.get(k) != m]
        return added, removed

    def destination(self, path: str) -> tuple[Destination, str | None]:
        """The destination class of `path` and, for removable and network ones, its mount point."""
        with self._lock:
            mounts = list(self.mounts.values())
        best: Mount | None = None
        for m in mounts:
            if _under(path, m.mount_point) and (best is None or len(m.mount_point) > len(best.mount_point)):
                best = m
        sync = [s for s in self.policy.sync_paths if _under(path, s)]
        if sync and (best is None or len(max(sync, key=len)) > len(best.mount_point)):
            return "sync", None
        if best is not None:
            return best.destination, best.mount_point
        return "local", None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class MountMonitor:
    """A thread that refreshes a MountTable when the mount table changes and hands the changes on."""

    def __init__(self, table: MountTable, platform: Platform, poll_interval: float,
                 on_change: Callable[[list[Mount], list[Mount]], None], name: str = "mounts") -> None:
        self.table = table
        self.on_change = on_change
        self._waiter = platform.mount_waiter(poll_interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"custos-{name}", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            changed = self._waiter.wait(3600.0)
            if self._stop.is_set():
                break
            if changed:
                self.check()

    def check(self) -> None:
        try:
            added, removed = self.table.refresh()
            if added or removed:
                self.on_change(added, removed)
        except Exception:  # noqa: BLE001 - the monitor outlives a bad read; the count shows in heartbeats
            self.errors += 1
            log.exception("mount table check failed")

    def stop(self) -> None:
        self._stop.set()
        self._waiter.wake()
        self._thread.join(timeout=10)
        self._waiter.close()


class MountsSource:
    """`type = "mounts"`: a `device.mount` event when removable media or a network share appears or goes."""

    def __init__(self, name: str, config: MountsConfig, *, platform: Platform | None = None,
                 agent_id: str = "") -> None:
        self.name = name
        self.config = config
        self.platform = platform or current()
        self.agent_id = agent_id
        self.table = MountTable(MountPolicy(config, self.platform))
        self.spool: Spool | None = None
        self.monitor: MountMonitor | None = None
        self.reported = 0

    @classmethod
    def from_config(cls, name: str, section: dict[str, Any], config: AgentConfig) -> MountsSource:
        return cls(name, load_section(MountsConfig, name, section), agent_id=config.agent_id)

    @property
    def cursor_name(self) -> str:
        return f"mounts:{self.name}"

    def start(self, spool: Spool) -> None:
        self.spool = spool
        # The mounts reported before a restart: changes while the agent was down are reported, others are not.
        saved = spool.cursor(self.cursor_name)
        if saved:
            self.table.mounts = {m["mount_point"]: Mount(**m) for m in json.loads(saved)}
        self.monitor = MountMonitor(self.table, self.platform, duration(self.config.poll_interval, "poll_interval"),
                                    self._changed, name=f"{self.name}")
        self.monitor.check()
        self.monitor.start()

    def _changed(self, added: list[Mount], removed: list[Mount]) -> None:
        events = [self._event("removed", m) for m in removed] + [self._event("added", m) for m in added]
        state = json.dumps([_as_dict(m) for m in self.table.mounts.values()])
        if self.spool is not None:
            spool_events(self.spool, events, cursor=(self.cursor_name, state))
            self.reported += len(events)
        for m in removed:
            log.info("%s media removed: %s", m.destination, m.mount_point)
        for m in added:
            log.info("%s media mounted: %s (%s)", m.destination, m.mount_point, m.fstype)

    def _event(self, action: Literal["added", "removed"], m: Mount) -> DeviceMount:
        payload = DeviceMountPayload(
            action=action, mount_point=m.mount_point, device=m.device or None, fstype=m.fstype or None,
            label=_label(m.device), destination=m.destination,
        )
        event = new_event(DeviceMount, payload, source=Source(type="mounts", name=self.name), agent_id=self.agent_id)
        return event  # type: ignore[return-value]

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    def counters(self) -> dict[str, dict[str, int]]:
        return {"errors": {"mount_checks": self.monitor.errors if self.monitor else 0}}


def _as_dict(m: Mount) -> dict[str, str]:
    return {"mount_point": m.mount_point, "device": m.device, "fstype": m.fstype, "destination": m.destination}


def _label(device: str) -> str | None:
    """The filesystem label udev links to the device, if any (what the user sees as the stick's name)."""
    by_label = Path("/dev/disk/by-label")
    try:
        real = os.path.realpath(device)
        for link in by_label.iterdir():
            if os.path.realpath(link) == real:
                raw = re.sub(rb"\\x([0-9a-fA-F]{2})", lambda x: bytes([int(x.group(1), 16)]), link.name.encode())
                return raw.decode("utf-8", errors="replace")[:1024]
    except OSError:
        pass
    return None

