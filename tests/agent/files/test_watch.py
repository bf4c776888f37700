from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from agent.events import encode
from agent.files import samples
from agent.governor import Limits, ResourceGovernor
from tests.agent.files.conftest import Watched
from tests.helpers.procs import wait_for

Start = Callable[..., Watched]


def test_a_50000_row_customer_csv_is_exactly_one_file_export_with_the_right_counts(
    tmp_path: Path, watcher: Start
) -> None:
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    w = watcher([downloads])
    path = downloads / "customers.csv"
    expected = samples.write_customer_csv(path, 50_000)  # written row by row: hundreds of modify events
    [event] = w.wait_exports(1)
    p = event.payload
    assert p.path == str(path) and p.action == "created" and p.destination == "local"
    assert p.size == path.stat().st_size and p.classified and p.caps_reached == []
    assert p.counts == {"cn_resident_id": expected.cn_resident_id, "bank_card": expected.bank_card,
                        "cn_mobile": expected.cn_mobile, "email": expected.email}
    assert p.owner == "root" or p.owner == path.owner()
    # Only counts, size and hash leave the machine: no value from the file is in the event.
    body = encode(event)
    first_rows = path.read_text(encoding="utf-8").splitlines()[1:4]
    for value in (v for row in first_rows for v in row.split(",")):
        assert value.encode() not in body


def test_the_same_csv_with_broken_check_digits_counts_no_identity_or_card_numbers(
    tmp_path: Path, watcher: Start
) -> None:
    desktop = tmp_path / "Desktop"
    desktop.mkdir()
    w = watcher([desktop])
    samples.write_customer_csv(desktop / "customers.csv", 50_000, valid=False)
    [event] = w.wait_exports(1)
    assert event.payload.counts == {"cn_resident_id": 0, "bank_card": 0, "cn_mobile": 50_000, "email": 50_000}


def test_an_atomic_save_through_a_temporary_file_is_one_event(tmp_path: Path, watcher: Start) -> None:
    docs = tmp_path / "Documents"
    docs.mkdir()
    w = watcher([docs])
    tmp = docs / ".goutputstream-Q1W2E3"
    with open(tmp, "w") as f:
        for _ in range(200):
            f.write(samples.resident_id(samples.random.Random(3)) + "\n")
            f.flush()
    os.replace(tmp, docs / "list.txt")
    [event] = w.wait_exports(1)
    assert (event.payload.path, event.payload.action) == (str(docs / "list.txt"), "created")
    assert event.payload.counts["cn_resident_id"] == 200


def test_a_browser_part_download_is_one_event_for_the_final_file(tmp_path: Path, watcher: Start) -> None:
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    w = watcher([downloads])
    final = downloads / "report.csv"
    final.touch()  # Firefox's placeholder, empty until the download is renamed over it
    part = downloads / "report.csv.part"
    source = tmp_path / "source.csv"
    samples.write_customer_csv(source, 2000)
    with open(source, "rb") as src, open(part, "wb") as dst:
        for block in iter(lambda: src.read(16 * 1024), b""):
            dst.write(block)
            dst.flush()
    os.replace(part, final)
    [event] = w.wait_exports(1)
    assert event.payload.path == str(final) and event.payload.counts["bank_card"] == 2000


def test_a_reported_file_renamed_later_gives_one_moved_event(tmp_path: Path, watcher: Start) -> None:
    docs = tmp_path / "Documents"
    docs.mkdir()
    w = watcher([docs])
    (docs / "q3.csv").write_text("13800138000\n")
    w.wait_exports(1)
    os.rename(docs / "q3.csv", docs / "customers_q3.csv")
    first, second = w.wait_exports(2)
    assert (second.payload.action, second.payload.moved_from) == ("moved", str(docs / "q3.csv"))
    assert second.payload.sha256 == first.payload.sha256


def test_a_copied_folder_reports_each_file_once(tmp_path: Path, watcher: Start) -> None:
    docs = tmp_path / "Documents"
    docs.mkdir()
    w = watcher([docs])
    folder = tmp_path / "project"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        (folder / "sub" / f"f{i}.csv").write_text(f"{samples.mobile(samples.random.Random(i))}\n")
    shutil.copytree(folder, docs / "project")
    events = w.wait_exports(5)
    assert sorted(os.path.basename(e.payload.path) for e in events) == [f"f{i}.csv" for i in range(5)]


def test_a_file_moved_into_a_sync_folder_is_reported_with_destination_sync(tmp_path: Path, watcher: Start) -> None:
    docs, cloud = tmp_path / "Documents", tmp_path / "Nextcloud"
    docs.mkdir()
    cloud.mkdir()
    w = watcher([docs], sync_paths=[str(cloud)])
    (docs / "a.csv").write_text("x@y.cn\n")
    w.wait_exports(1)
    shutil.move(docs / "a.csv", cloud / "a.csv")
    _, moved = w.wait_exports(2)
    assert (moved.payload.destination, moved.payload.action) == ("sync", "moved")


def test_a_lost_burst_of_events_is_found_again_by_a_rescan(tmp_path: Path, watcher: Start) -> None:
    docs = tmp_path / "Documents"
    docs.mkdir()
    w = watcher([docs], queue_size=1)
    for i in range(30):
        (docs / f"f{i}.csv").write_text(f"{i}\n")
    events = w.wait_exports(30)
    assert sorted(e.payload.path for e in events) == sorted(str(docs / f"f{i}.csv") for i in range(30))
    assert w.source.counters()["errors"]["queue_overflow"] > 0


def test_a_dead_observer_is_restarted_and_what_happened_meanwhile_is_reported(tmp_path: Path, watcher: Start) -> None:
    docs = tmp_path / "Documents"
    docs.mkdir()
    w = watcher([docs])
    dead = w.source.observer
    assert dead is not None
    dead.stop()
    dead.join(timeout=10)
    (docs / "while-down.csv").write_text("13800138000\n")
    wait_for(lambda: w.source.observer is not dead, 30, "the observer to be replaced")
    (docs / "after.csv").write_text("13900139000\n")
    events = w.wait_exports(2)
    assert sorted(os.path.basename(e.payload.path) for e in events) == ["after.csv", "while-down.csv"]
    assert w.source.counters()["errors"]["observer_restarts"] == 1


def test_above_the_memory_ceiling_classification_is_shed_but_the_event_is_kept(tmp_path: Path, watcher: Start) -> None:
    docs = tmp_path / "Documents"
    docs.mkdir()
    w = watcher([docs], governor=ResourceGovernor(Limits(cpu_percent=None, memory_bytes=1)))
    (docs / "a.csv").write_text("13800138000\n")
    [event] = w.wait_exports(1)
    assert event.payload.classified is False and event.payload.counts == {} and event.payload.size == 12
    assert w.source.counters()["shed"] == {"classification.memory": 1, "attribution.memory": 1}


def test_the_process_writing_a_file_is_named_when_it_can_be_seen(tmp_path: Path, watcher: Start) -> None:
    import subprocess
    import sys

    docs = tmp_path / "Documents"
    docs.mkdir()
    w = watcher([docs], quiet="1s", unclosed_wait="1s", holder_scan_interval="50ms")
    target = docs / "held.csv"
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys; f = open(sys.argv[1], 'w'); f.write('13800138000\\n'); f.flush(); "
         "sys.stdin.read()", str(target)],
        stdin=subprocess.PIPE,
    )
    try:
        [event] = w.wait_exports(1)
    finally:
        writer.communicate(timeout=30)
    proc = event.payload.process
    assert proc is not None and proc.pid == writer.pid and proc.ppid == os.getpid()
    assert proc.name and "python" in proc.name and event.actor.os_user == proc.username


def test_the_agents_own_spool_and_excluded_folders_are_never_reported(tmp_path: Path, watcher: Start) -> None:
    docs = tmp_path / "Documents"
    (docs / ".git").mkdir(parents=True)
    w = watcher([docs])
    (docs / ".git" / "index").write_text("x\n")
    (docs / "real.csv").write_text("x\n")
    [event] = w.wait_exports(1)
    assert event.payload.path == str(docs / "real.csv")
    assert w.source.counters()["excluded"]["exclude"] >= 1


def test_heartbeats_carry_the_watchers_watches_errors_and_shed_counts(tmp_path: Path) -> None:
    from agent.config import AgentConfig, SpoolSection
    from agent.files.config import FileWatchConfig
    from agent.files.watch import FileWatchSource
    from agent.runtime import Agent

    docs = tmp_path / "Documents"
    (docs / "a" / "b").mkdir(parents=True)
    source = FileWatchSource("files", FileWatchConfig(paths=[str(docs)], sync_paths=[], quiet="200ms"),
                             governor=ResourceGovernor(Limits(cpu_percent=None, memory_bytes=1)), env={})
    agent = Agent(AgentConfig(spool=SpoolSection(dir=str(tmp_path / "spool"))), sources=[source], ship=False)
    agent.start()
    try:
        (docs / "a" / "x.csv").write_text("13800138000\n")
        wait_for(lambda: source.counters()["shed"].get("classification.memory"), 30, "a shed classification")
        beat = agent.heartbeat.make().payload
    finally:
        agent.stop(drain_seconds=0)
    assert beat.watches is not None and beat.watches >= 3  # Documents, a, a/b
    assert beat.shed["files.classification.memory"] == 1
    assert beat.rss_bytes and beat.cpu_percent is not None
