from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.platform import UserHome, current
from agent.platform.linux import LinuxPlatform
from tests.conftest import service_missing

HOLD = "import sys; f = open(sys.argv[1], sys.argv[2]); print('ready', flush=True); sys.stdin.read()"


def test_the_current_platform_on_linux_is_the_linux_implementation() -> None:
    assert isinstance(current(), LinuxPlatform)


def test_processes_holding_a_file_are_found_and_writers_told_from_readers(tmp_path: Path) -> None:
    target = tmp_path / "held.csv"
    target.write_text("x\n")
    procs = [subprocess.Popen([sys.executable, "-c", HOLD, str(target), mode], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for mode in ("a", "r")]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        found = LinuxPlatform().holders([str(target), str(tmp_path / "other")], budget_s=5.0)
    finally:
        for p in procs:
            p.communicate("", timeout=30)
    assert sorted((h.pid, h.writing) for h in found[str(target)]) == sorted(
        [(procs[0].pid, True), (procs[1].pid, False)])
    assert str(tmp_path / "other") not in found


def test_the_owner_of_a_tcp_connection_is_found_by_its_socket(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    code = f"import socket, sys; s = socket.create_connection(('127.0.0.1', {port})); print(s.getsockname()[1], " \
           "flush=True); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None
        local_port = int(proc.stdout.readline())
        platform = LinuxPlatform()
        [conn] = [c for c in platform.tcp_connections() if c.local_port == local_port]
        assert (conn.remote_addr, conn.remote_port, conn.uid) == ("127.0.0.1", port, os.getuid())
        assert platform.socket_owners([conn.inode]) == {conn.inode: proc.pid}
        proc.communicate("", timeout=30)
    server.close()


def test_localised_user_folders_are_read_from_xdg_user_dirs(tmp_path: Path) -> None:
    home = tmp_path / "zhang"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "user-dirs.dirs").write_text(
        '# written by xdg-user-dirs-update\nXDG_DESKTOP_DIR="$HOME/桌面"\nXDG_DOWNLOAD_DIR="$HOME/下载"\n'
        'XDG_MUSIC_DIR="$HOME/音乐"\nXDG_DOCUMENTS_DIR="$HOME/"\n', encoding="utf-8")
    folders = LinuxPlatform().user_folders(UserHome("zhang", 1000, home))
    assert sorted(folders) == sorted([home / "下载", home / "桌面", home / "Documents"])


def test_the_inotify_limit_probe_says_no_while_watches_are_available(tmp_path: Path) -> None:
    platform = LinuxPlatform()
    assert platform.watch_limit_reached(str(tmp_path)) is False
    assert isinstance(platform.kernel_watches(), int)


@pytest.mark.timeout(120)
def test_the_mount_waiter_wakes_when_a_filesystem_is_mounted_and_when_asked_to(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        service_missing("root (to mount a tmpfs)", PermissionError("not running as root"))
    waiter = LinuxPlatform().mount_waiter(poll_interval=3600)
    point = tmp_path / "m"
    point.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "custos-waiter", str(point)], check=True, timeout=30)
        assert waiter.wait(3600) is True
        waiter.wake()
        waiter.wait(3600)  # returns at once: without the wake this would block for an hour (and time out)
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False, timeout=30)
        waiter.close()
