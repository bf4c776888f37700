"""The psutil-only fallback that other systems start from, exercised here on Linux."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from agent.platform.generic import GenericPlatform, TimedMountWaiter


def test_the_fallback_finds_tcp_connections_with_their_pid_through_psutil() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    code = f"import socket, sys; s = socket.create_connection(('127.0.0.1', {port})); print(s.getsockname()[1], " \
           "flush=True); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None
        local_port = int(proc.stdout.readline())
        [conn] = [c for c in GenericPlatform().tcp_connections() if c.local_port == local_port]
        proc.communicate("", timeout=30)
    server.close()
    assert (conn.remote_port, conn.pid) == (port, proc.pid)


def test_the_fallback_finds_a_process_holding_a_file_for_writing(tmp_path: Path) -> None:
    target = tmp_path / "held.csv"
    code = "import sys; f = open(sys.argv[1], 'w'); print('ready', flush=True); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", code, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        found = GenericPlatform().holders([str(target)], budget_s=10.0)
        proc.communicate("", timeout=30)
    assert [(h.pid, h.writing) for h in found[str(target)]] == [(proc.pid, True)]


def test_the_timed_mount_waiter_looks_again_after_its_interval_and_stops_when_woken() -> None:
    waiter = TimedMountWaiter(poll_interval=0.01)
    assert waiter.wait(3600) is True
    waiter.wake()
    assert waiter.wait(3600) is False
    assert GenericPlatform().is_removable("E:\\", "rw,removable") and not GenericPlatform().is_removable("C:\\", "rw")
