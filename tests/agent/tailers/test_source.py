"""The tailer source: exactly once through crashes at any point, a full spool, configuration, the running thread."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.config import AgentConfig
from agent.errors import ConfigError, SpoolFull
from agent.events import Envelope
from agent.sources import SOURCE_TYPES
from agent.spool import Spool
from tests.agent.tailers.helpers import DATA, Clock, make_source, poll_until_idle, spooled
from tests.helpers.procs import wait_for

FORMATS = [
    ("pgaudit", "pgaudit.log", {"format": "stderr"}),
    ("pgaudit", "pgaudit.csv", {"format": "csvlog"}),
    ("mariadb_audit", "mariadb_audit.log", {}),
]


def comparable(events: list[Envelope]) -> list[str]:
    """Events without their ids and chain links (fresh on every run), sorted: what must come out once and only
    once."""
    out = []
    for e in events:
        d = msgspec.to_builtins(e)
        for key in ("id", "chain_seq", "chain_prev"):
            d.pop(key, None)
        out.append(msgspec.json.encode(d).decode())
    return sorted(out)


def reference(kind: str, sample: str, tmp_path: Path, section: dict[str, Any]) -> list[str]:
    (tmp_path / "ref").mkdir()
    log = tmp_path / "ref" / "audit.log"
    shutil.copyfile(DATA / sample, log)
    with Spool(tmp_path / "ref" / "spool.sqlite3") as spool:
        src = make_source(kind, log, spool, clock=Clock(), group_wait="5s", **section)
        poll_until_idle(src)
        src.clock.now += 10  # type: ignore[attr-defined]
        src.poll_once()
        src.follower.close()
        return comparable(spooled(spool))


@pytest.mark.parametrize(("kind", "sample", "section"), FORMATS, ids=[f[1] for f in FORMATS])
def test_crashes_at_any_point_neither_lose_nor_repeat_an_event(
    kind: str, sample: str, section: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = reference(kind, sample, tmp_path, section)
    assert len(expected) > 10
    data = (DATA / sample).read_bytes()
    rng = random.Random(sample)
    real_put = Spool.put
    failures = restarts = 0
    for attempt in range(6):
        work = tmp_path / f"run{attempt}"
        work.mkdir()
        log = work / "audit.log"
        log.write_bytes(b"")
        clock = Clock()
        written = 0
        fail_next_put = False

        def flaky_put(*args: Any, **kwargs: Any) -> int:
            nonlocal fail_next_put
            if fail_next_put:
                fail_next_put = False
                raise OSError("disk went away")  # the transaction never happened
            return real_put(*args, **kwargs)

        monkeypatch.setattr(Spool, "put", flaky_put)
        with Spool(work / "spool.sqlite3") as spool:
            src = make_source(kind, log, spool, clock=clock, group_wait="5s", batch_events=2, **section)
            src.follower.max_read = 97  # chunks end inside lines and records
            for _ in range(2000):
                if written < len(data):  # the server writes on, a piece at a time (partial lines too)
                    piece = data[written : written + rng.randrange(1, 200)]
                    with open(log, "ab") as f:
                        f.write(piece)
                    written += len(piece)
                action = rng.random()
                if action < 0.15:  # the agent is killed and starts again from what it committed
                    restarts += 1
                    src.follower.close()
                    src = make_source(kind, log, spool, clock=clock, group_wait="5s", batch_events=2, **section)
                    src.follower.max_read = 97
                elif action < 0.25:
                    fail_next_put = True  # the next spool write fails; the source rewinds to its cursor
                    try:
                        src.poll_once()
                    except OSError:
                        failures += 1
                    fail_next_put = False
                else:
                    src.poll_once()
                # time passes, but less than group_wait between two lines of one statement (they are written
                # together); once the writer is done, open groups wait out group_wait (also across restarts)
                clock.now += rng.choice([0.0, 0.1, 0.3]) if written < len(data) else 6.0
                if written >= len(data) and src.poll_once() == 0:
                    break
            clock.now += 10
            poll_until_idle(src)
            src.poll_once()
            src.follower.close()
            assert comparable(spooled(spool)) == expected, f"attempt {attempt}"
    assert failures > 0 and restarts > 0


def test_a_full_spool_makes_the_tailer_wait_and_lose_nothing(tmp_path: Path) -> None:
    expected = reference("mariadb_audit", "mariadb_audit.log", tmp_path, {})
    log = tmp_path / "audit.log"
    shutil.copyfile(DATA / "mariadb_audit.log", log)
    clock = Clock()
    got: list[Envelope] = []
    with Spool(tmp_path / "spool.sqlite3", max_events=8, overflow="block") as spool:
        src = make_source("mariadb_audit", log, spool, clock=clock, group_wait="1s", batch_events=5)
        fulls = 0
        for step in range(300):
            try:
                n = src.poll_once()
            except SpoolFull:
                fulls += 1
                n = 1
            if step % 3 == 2:  # now and then the shipper takes what is there
                waiting = spool.peek(100)
                got += spooled(spool)
                spool.ack([e.seq for e in waiting])
            if n == 0:
                clock.now += 10
                if src.poll_once() == 0 and spool.stats().depth == 0:
                    break
        got += spooled(spool)
        src.follower.close()
        assert fulls > 0
        assert spool.stats().dropped == 0
    assert comparable(got) == expected


def test_configuration_errors_name_the_key_and_the_fix() -> None:
    config = AgentConfig()
    cases = [
        ("pgaudit", {"path": "/x"}, "log_line_prefix: required"),
        ("pgaudit", {"path": "/x", "current_logfiles": "/y", "log_line_prefix": "%m "}, "either path"),
        ("pgaudit", {"path": "/x", "log_line_prefix": "[%p] "}, "%m, %t or %n"),
        ("pgaudit", {"path": "/x", "format": "csvlog", "timezone": "Mars/Olympus"}, "timezone"),
        ("pgaudit", {"path": "/x", "format": "xml"}, "format"),
        ("pgaudit", {"path": "/x", "format": "csvlog", "colour": "red"}, "colour"),
        ("mariadb_audit", {"path": "/x"}, "timezone: required"),
        ("mariadb_audit", {"timezone": "UTC"}, "path: required"),
        ("mariadb_audit", {"path": "/x", "timezone": "UTC", "group_wait": "soon"}, "group_wait"),
    ]
    for kind, section, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            SOURCE_TYPES[kind]("db1", {"type": kind, **section}, config)
        assert "sources -> db1" in str(info.value)


def test_a_log_named_in_current_logfiles_is_followed_to_each_new_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "log").mkdir(parents=True)
    line = ("2026-11-27 01:52:37.{ms:03d} UTC [7] LOG:  AUDIT: SESSION,{n},1,READ,SELECT,TABLE,public.t,SELECT {n},"
            "<none>\n")
    (data / "log" / "a.log").write_text(line.format(ms=1, n=1))
    (data / "current_logfiles").write_text("stderr log/a.log\ncsvlog log/a.csv\n")
    with Spool(tmp_path / "spool.sqlite3") as spool:
        src = make_source("pgaudit", None, spool, current_logfiles=str(data / "current_logfiles"),
                          log_line_prefix="%m [%p] ", group_wait="0s")
        poll_until_idle(src)
        with open(data / "log" / "a.log", "a") as f:
            f.write(line.format(ms=2, n=2))
        (data / "log" / "b.log").write_text(line.format(ms=3, n=3))
        (data / "current_logfiles").write_text("stderr log/b.log\ncsvlog log/b.csv\n")
        poll_until_idle(src)
        src.poll_once()
        millis = [e.ts.microsecond // 1000 for e in spooled(spool)]
        src.follower.close()
    assert millis == [1, 2, 3]  # the rest of a.log before b.log


def test_the_running_source_tails_in_its_own_thread_until_stopped(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    with Spool(tmp_path / "spool.sqlite3") as spool:
        src = make_source("mariadb_audit", log, None, poll_interval="10ms", group_wait="0s")
        src.start(spool)
        try:
            with open(log, "ab") as f:
                f.write((DATA / "mariadb_audit.log").read_bytes())
            wait_for(lambda: src.stats().get("db.query") == 14, 20, "the 14 statements of the sample")
        finally:
            src.stop()
        assert src._thread is None  # noqa: SLF001 - the thread is gone, not left behind
        assert src.counters() == {"errors": {}}
