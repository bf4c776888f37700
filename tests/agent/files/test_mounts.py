from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.events import decode
from agent.files import samples
from agent.files.config import MountsConfig
from agent.files.mounts import MountPolicy, MountsSource, MountTable
from agent.platform.linux import LinuxPlatform
from agent.spool import Spool
from tests.agent.files.conftest import Watched
from tests.conftest import service_missing
from tests.helpers.procs import wait_for


def part(mountpoint: str, device: str = "/dev/sdz1", fstype: str = "ext4", opts: str = "rw") -> SimpleNamespace:
    return SimpleNamespace(mountpoint=mountpoint, device=device, fstype=fstype, opts=opts)


def fake_sysfs(root: Path) -> LinuxPlatform:
    """sysfs as the kernel lays it out: a USB stick (removable=0, on a USB bus), an SD card, an internal disk."""
    devices = root / "devices" / "pci0000:00"
    layouts = {
        "sdb": (devices / "0000:00:14.0" / "usb2" / "2-1" / "host6" / "block" / "sdb", "0"),
        "sdc": (devices / "0000:00:1d.0" / "ata3" / "host2" / "block" / "sdc", "1"),
        "mmcblk0": (devices / "mmc_host" / "mmc0" / "block" / "mmcblk0", "0"),
        "sda": (devices / "0000:00:17.0" / "ata1" / "host0" / "block" / "sda", "0"),
    }
    (root / "class" / "block").mkdir(parents=True)
    for name, (disk, removable) in layouts.items():
        disk.mkdir(parents=True)
        (disk / "removable").write_text(removable + "\n")
        partition = disk / f"{name}{'p' if name.startswith('mmc') else ''}1"
        partition.mkdir()
        (partition / "partition").write_text("1\n")
        os.symlink(partition, root / "class" / "block" / partition.name)
        os.symlink(disk, root / "class" / "block" / name)
    # An encrypted volume on the USB stick: dm-0 with sdb1 beneath it.
    dm = root / "devices" / "virtual" / "block" / "dm-0"
    (dm / "slaves").mkdir(parents=True)
    (dm / "removable").write_text("0\n")
    os.symlink(root / "class" / "block" / "sdb1", dm / "slaves" / "sdb1")
    os.symlink(dm, root / "class" / "block" / "dm-0")
    return LinuxPlatform(sys_root=str(root))


@pytest.mark.parametrize(
    "device, removable",
    [("/dev/sdb1", True), ("/dev/sdc1", True), ("/dev/mmcblk0p1", True), ("/dev/dm-0", True), ("/dev/sda1", False),
     ("/dev/sda", False),
     ("tmpfs", False), ("/dev/nope1", False)],
)
def test_removable_media_are_recognised_from_sysfs(tmp_path: Path, device: str, removable: bool) -> None:
    assert fake_sysfs(tmp_path / "sys").is_removable(device, "rw") is removable


def test_mounts_are_classed_by_configuration_filesystem_type_and_device(tmp_path: Path) -> None:
    policy = MountPolicy(MountsConfig(removable_mounts=["/mnt/test-usb*"], ignore_mounts=["/media/*/backup"],
                                      sync_paths=[]), fake_sysfs(tmp_path / "sys"))
    assert policy.classify("/mnt/test-usb1", "none", "tmpfs", "rw") == "removable"
    assert policy.classify("/mnt/share", "//fs/share", "cifs", "rw") == "network"
    assert policy.classify("/mnt/nfs", "fs:/export", "nfs4", "rw") == "network"
    assert policy.classify("/home/u/remote", "u@host:", "fuse.sshfs", "rw") == "network"
    assert policy.classify("/media/u/STICK", "/dev/sdb1", "vfat", "rw") == "removable"
    assert policy.classify("/media/u/backup", "/dev/sdb1", "vfat", "rw") is None
    assert policy.classify("/", "/dev/sda1", "ext4", "rw") is None
    assert policy.classify("/proc", "proc", "proc", "rw") is None


def test_a_path_takes_the_destination_of_its_deepest_mount_and_sync_folders_win(tmp_path: Path) -> None:
    parts = [part("/media/u/STICK", "/dev/sdb1", "vfat"), part("/mnt/share", "//fs/s", "cifs"),
             part("/mnt/share/usb", "/dev/sdc1", "vfat")]
    policy = MountPolicy(MountsConfig(sync_paths=["/mnt/share/Dropbox"]), fake_sysfs(tmp_path / "sys"))
    table = MountTable(policy, partitions=lambda: parts)
    added, removed = table.refresh()
    assert sorted(m.mount_point for m in added) == ["/media/u/STICK", "/mnt/share", "/mnt/share/usb"] and not removed
    assert table.destination("/media/u/STICK/a.csv") == ("removable", "/media/u/STICK")
    assert table.destination("/media/u/STICKY/a.csv") == ("local", None)
    assert table.destination("/mnt/share/x/a.csv") == ("network", "/mnt/share")
    assert table.destination("/mnt/share/usb/a.csv") == ("removable", "/mnt/share/usb")
    assert table.destination("/mnt/share/Dropbox/a.csv") == ("sync", None)
    parts.pop(0)
    added, removed = table.refresh()
    assert not added and [m.mount_point for m in removed] == ["/media/u/STICK"]


# ------------------------------------------------------------------------------------- a real tmpfs


@pytest.fixture
def usb(tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """A tmpfs mount point and a function to mount ("up") or unmount ("down") it; always unmounted after."""
    if os.geteuid() != 0:
        service_missing("root (to mount a tmpfs)", PermissionError("not running as root"))
    point = tmp_path / "usb"
    point.mkdir()

    def switch(state: str) -> None:
        cmd = ["mount", "-t", "tmpfs", "-o", "size=64m", "custos-test-usb", str(point)] if state == "up" else \
            ["umount", str(point)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)

    switch.point = point  # type: ignore[attr-defined]
    yield switch
    if os.path.ismount(point):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True, timeout=30)


def test_a_tmpfs_mounted_as_removable_media_is_reported_with_the_files_copied_onto_it(
    tmp_path: Path, usb: Callable[[str], None], watcher: Callable[..., Watched]
) -> None:
    point: Path = usb.point  # type: ignore[attr-defined]
    home = tmp_path / "Documents"
    home.mkdir()
    media_spool = Spool(tmp_path / "media" / "spool.sqlite3")
    media = MountsSource("media", MountsConfig(removable_mounts=[str(point)], sync_paths=[]))
    media.start(media_spool)
    w = watcher([home], removable_mounts=[str(point)])
    try:

        def mounts() -> list[tuple[str, str, str]]:
            evs = [decode(e.body) for e in media_spool.peek(1000)]
            return [(e.payload.action, e.payload.mount_point, e.payload.destination) for e in evs]

        assert mounts() == []
        usb("up")
        wait_for(lambda: mounts() == [("added", str(point), "removable")], 30, "device.mount added")
        wait_for(lambda: str(point) in w.source.roots, 30, "the new mount to be watched")
        export = tmp_path / "customers.csv"
        samples.write_customer_csv(export, 3000)
        shutil.copy(export, point / "customers.csv")
        [event] = w.wait_exports(1)
        p = event.payload
        assert (p.path, p.destination, p.mount_point) == (str(point / "customers.csv"), "removable", str(point))
        assert p.counts["cn_resident_id"] == 3000 and p.size == export.stat().st_size
        usb("down")
        wait_for(lambda: mounts()[-1] == ("removed", str(point), "removable"), 30, "device.mount removed")
        wait_for(lambda: str(point) not in w.source.roots, 30, "the mount's watch to go")
        assert len(mounts()) == 2
    finally:
        media.stop()
    # A restart remembers what it reported: the medium plugged in while the agent was down is reported once.
    usb("up")
    again = MountsSource("media", MountsConfig(removable_mounts=[str(point)], sync_paths=[]))
    again.start(media_spool)
    again.stop()
    evs = [decode(e.body).payload for e in media_spool.peek(1000)]
    assert [(e.action, e.mount_point) for e in evs][-1] == ("added", str(point)) and len(evs) == 3
    again = MountsSource("media", MountsConfig(removable_mounts=[str(point)], sync_paths=[]))
    again.start(media_spool)
    again.stop()
    assert len(media_spool.peek(1000)) == 3
    media_spool.close()
