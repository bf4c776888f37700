from __future__ import annotations

import os
import shutil
from pathlib import Path

from agent.tailers.follow import Follower, Position


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def follower(path: Path, **kw: object) -> Follower:
    rotated = lambda: sorted(str(p) for p in path.parent.glob(path.name + ".*"))  # noqa: E731
    f = Follower(lambda: str(path), rotated, **kw)  # type: ignore[arg-type]
    f.restore(None)
    return f


def drain(f: Follower) -> tuple[list[bytes], Position | None]:
    """Every complete line available now, and the position after them."""
    lines: list[bytes] = []
    end = None
    for _ in range(1000):
        chunk = f.read()
        if chunk is None:
            return lines, end
        lines += [raw for raw, _, _ in chunk.lines]
        end = chunk.end
    raise AssertionError("the follower kept returning chunks")


def test_a_partly_written_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntw")
    f = follower(log)
    assert drain(f)[0] == [b"one"]
    append(log, b"o\nthree")
    assert drain(f)[0] == [b"two"]
    append(log, b"\n")
    assert drain(f)[0] == [b"three"]


def test_lines_carry_their_offset_and_number(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"ab\ncde\n\nf\n")
    chunk = follower(log).read()
    assert chunk is not None
    assert chunk.lines == [(b"ab", 0, 1), (b"cde", 3, 2), (b"", 7, 3), (b"f", 8, 4)]
    assert (chunk.end.offset, chunk.end.line) == (10, 4)


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"1\n2\n")
    f = follower(log)
    assert drain(f)[0] == [b"1", b"2"]
    append(log, b"3\n4")  # the last line of the old file never gets its newline
    log.rename(tmp_path / "a.log.1")
    log.write_bytes(b"5\n")
    lines, end = drain(f)
    assert lines == [b"3", b"4", b"5"]
    assert end is not None and end.ino == os.stat(log).st_ino


def test_copytruncate_reads_the_rest_from_the_copy_then_the_file_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"first line of the file\n2\n")
    f = follower(log)
    assert drain(f)[0] == [b"first line of the file", b"2"]
    append(log, b"3\n4\n")
    shutil.copyfile(log, tmp_path / "a.log.1")
    with open(log, "r+b") as w:
        w.truncate(0)
    append(log, b"5\n")
    assert drain(f)[0] == [b"3", b"4", b"5"]


def test_a_truncated_file_that_grew_past_the_offset_is_still_recognised(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"old head\n")
    f = follower(log)
    assert drain(f)[0] == [b"old head"]
    shutil.copyfile(log, tmp_path / "a.log.1")
    with open(log, "r+b") as w:
        w.truncate(0)
    append(log, b"new head, longer than before\nx\n")  # larger than the old offset: size alone cannot tell
    assert drain(f)[0] == [b"new head, longer than before", b"x"]


def test_truncation_without_a_copy_reports_a_gap_and_reads_on(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"1\n2\n")
    f = follower(log)
    drain(f)
    with open(log, "r+b") as w:
        w.truncate(0)
    append(log, b"3\n")
    assert drain(f)[0] == [b"3"]
    gap = f.take_gap()
    assert gap is not None and "truncated at offset 4" in gap
    assert f.take_gap() is None


def test_restart_resumes_at_the_committed_position(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"1\n2\n3\n")
    f = follower(log)
    chunk = f.read()
    assert chunk is not None
    _, offset, number = chunk.lines[1]
    pos = chunk.at(offset, number - 1)  # as if line 2 and after were not yet committed
    f.close()
    g = follower(log)
    g.restore(pos)
    lines, end = drain(g)
    assert lines == [b"2", b"3"]
    assert end is not None and end.line == 3


def test_restart_after_rotations_while_stopped_reads_every_rotated_file_in_order(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"1\n")
    f = follower(log)
    _, pos = drain(f)
    f.close()
    append(log, b"2\n")
    log.rename(tmp_path / "a.log.2")
    log.write_bytes(b"3\n")
    # the second file is written a moment later than the first (mtime orders rotated files)
    os.utime(tmp_path / "a.log.2", ns=(1_000_000_000, 1_000_000_000))
    log.rename(tmp_path / "a.log.1")
    os.utime(tmp_path / "a.log.1", ns=(2_000_000_000, 2_000_000_000))
    log.write_bytes(b"4\n")
    g = follower(log)
    assert pos is not None
    g.restore(Position.from_dict({**pos.to_dict(), "mtime_ns": 0}))
    assert drain(g)[0] == [b"2", b"3", b"4"]
    assert g.take_gap() is None


def test_restart_after_copytruncate_while_stopped_reads_the_rest_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"first\n")
    f = follower(log)
    _, pos = drain(f)
    f.close()
    append(log, b"second\n")
    shutil.copyfile(log, tmp_path / "a.log.1")
    with open(log, "r+b") as w:
        w.truncate(0)
    append(log, b"third\n")
    g = follower(log)
    g.restore(pos)
    assert drain(g)[0] == [b"second", b"third"]


def test_a_reused_inode_with_other_content_is_not_taken_for_the_old_file(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"original content\n")
    f = follower(log)
    _, pos = drain(f)
    f.close()
    assert pos is not None
    # Same device and inode as committed, but other first bytes: a different file.
    log.write_bytes(b"another file entirely, longer\nline\n")
    g = follower(log)
    g.restore(pos)
    assert drain(g)[0] == [b"another file entirely, longer", b"line"]
    assert g.take_gap() is not None


def test_a_vanished_file_is_reported_and_the_current_file_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"1\n")
    f = follower(log)
    _, pos = drain(f)
    f.close()
    log.unlink()
    log.write_bytes(b"new\n")
    g = follower(log)
    assert pos is not None
    g.restore(Position.from_dict({**pos.to_dict(), "ino": pos.ino + 10_000_000}))
    assert drain(g)[0] == [b"new"]
    assert "is gone" in (g.take_gap() or "")


def test_start_at_end_skips_what_was_written_before(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"old\n")
    f = follower(log, start_at_end=True)
    assert drain(f)[0] == []
    append(log, b"new\n")
    assert drain(f)[0] == [b"new"]


def test_a_file_that_does_not_exist_yet_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    f = follower(log)
    assert f.read() is None
    log.write_bytes(b"x\n")
    assert drain(f)[0] == [b"x"]


def test_lines_longer_than_one_read_are_returned_whole(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    long = b"y" * 300_000
    log.write_bytes(b"a\n" + long + b"\nb\n")
    f = follower(log, max_read=4096)
    assert drain(f)[0] == [b"a", long, b"b"]


def test_compressed_rotated_files_are_never_opened(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"1\n")
    f = follower(log)
    drain(f)
    (tmp_path / "a.log.1.gz").write_bytes(b"1\n2\n3\n")  # same head, larger: would pass for a copy
    with open(log, "r+b") as w:
        w.truncate(0)
    append(log, b"2\n")
    assert drain(f)[0] == [b"2"]
    assert f.take_gap() is not None


def test_a_file_created_after_start_is_read_from_its_beginning_even_with_start_at_end(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    f = follower(log, start_at_end=True)
    log.write_bytes(b"first\n")
    assert drain(f)[0] == [b"first"]
