"""The staff agent as it runs on a desk: a real `custos-agent run` process with the file watcher configured."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.events import decode
from agent.spool import Spool
from tests.conftest import service_missing
from tests.helpers.procs import ROOT, base_env, wait_for

CONFIG = """
agent_id = "desk-1"
[collector]
url = "http://127.0.0.1:9"   # nothing listens: events stay in the spool for the test to read
token = "not-used"
[heartbeat]
interval = "300ms"
[sources.files]
type = "file_watch"
quiet = "300ms"
poll_interval = "300ms"
supervise_interval = "300ms"
sync_paths = []
"""


class Desk:
    def __init__(self, work: Path, *, inotify_limit: int | None = None, watch_paths: list[Path]) -> None:
        self.work = work
        (work / "agent.toml").write_text(CONFIG)
        self.log = work / "agent.log"
        env = base_env(CUSTOS_SPOOL_DIR=str(work / "spool"),
                       CUSTOS_WATCH_PATHS=":".join(str(p) for p in watch_paths))
        cmd = [sys.executable, "-m", "agent", "-v", "run", "--config", str(work / "agent.toml")]
        if inotify_limit is not None:
            # A user namespace of its own has its own inotify watch limit: low here, untouched for the machine.
            cmd = ["unshare", "--user", "--map-root-user", "sh", "-c",
                   f'echo {inotify_limit} > /proc/sys/user/max_inotify_watches && exec "$@"', "sh", *cmd]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: (work / "spool" / "spool.sqlite3").exists() or self.proc.poll() is not None, 60,
                 "the agent's spool")
        assert self.proc.poll() is None, self.log.read_text()
        self.spool = Spool(work / "spool" / "spool.sqlite3")

    def events(self, kind: str) -> list:  # type: ignore[type-arg]
        evs = [decode(e.body) for e in self.spool.peek(100_000)]
        return [e for e in evs if e.__struct_config__.tag == kind]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.spool.close()


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[type[Desk]]:
    started: list[Desk] = []

    def start(**kw: object) -> Desk:
        d = Desk(tmp_path / f"desk{len(started)}", **kw)  # type: ignore[arg-type]
        started.append(d)
        return d

    tmp_path.joinpath("desk0").mkdir()
    tmp_path.joinpath("desk1").mkdir()
    yield start  # type: ignore[misc]
    for d in started:
        d.close()


def test_custos_agent_run_watches_custos_watch_paths_and_its_heartbeat_counts_the_watches(
    tmp_path: Path, desk: type[Desk]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    d = desk(watch_paths=[a, b])
    wait_for(lambda: b"file watcher files: 2 roots" in d.log.read_bytes(), 60, "the watcher to start")
    (a / "sub" / "one.csv").write_text("13800138000\n")
    (b / "two.csv").write_text("13900139000\n")
    wait_for(lambda: len(d.events("file.export")) == 2, 60, "two file.export events")
    assert {e.agent_id for e in d.events("file.export")} == {"desk-1"}
    beat = wait_for(lambda: [h for h in d.events("agent.heartbeat") if h.payload.watches], 60, "a heartbeat")[-1]
    assert beat.payload.watches >= 3  # a, a/sub, b


def test_at_the_inotify_limit_the_agent_says_so_and_polls_what_it_cannot_watch(
    tmp_path: Path, desk: type[Desk]
) -> None:
    if shutil.which("unshare") is None:
        service_missing("unshare (util-linux)", FileNotFoundError("unshare"))
    small, big = tmp_path / "a_small", tmp_path / "b_big"
    small.mkdir()
    for i in range(60):
        (big / f"d{i:02d}" / "deeper").mkdir(parents=True)
    d = desk(inotify_limit=30, watch_paths=[small, big])
    notices = wait_for(lambda: d.events("agent.parse_error"), 60, "the inotify-limit notice")
    assert notices[0].payload.location == str(big) and "inotify watch limit reached" in notices[0].payload.reason
    log = wait_for(lambda: "file watcher files:" in (text := d.log.read_text()) and text, 60, "the watcher's roots")
    assert "inotify watch limit reached (fs.inotify.max_user_watches=30)" in log
    assert f"{small} [inotify]" in log and f"{big} [polling]" in log
    (small / "by-inotify.csv").write_text("13800138000\n")
    (big / "d59" / "deeper" / "by-polling.csv").write_text("13900139000\n")
    events = wait_for(lambda: (e := d.events("file.export")) and len(e) == 2 and e, 60, "both files reported")
    assert sorted(e.payload.path for e in events) == [str(small / "by-inotify.csv"),
                                                       str(big / "d59" / "deeper" / "by-polling.csv")]
    beat = wait_for(lambda: [h for h in d.events("agent.heartbeat") if h.payload.errors], 60, "a heartbeat")[-1]
    assert beat.payload.errors["files.inotify_limit"] >= 1
