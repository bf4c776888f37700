"""Following a growing log file through rotation, one `read()` at a time, from a position that survives crashes.

A `Position` names a file by device, inode and a hash of its first bytes (inodes are reused; the hash tells a
new file that got an old inode from the old file), plus the byte offset and line number reached. The caller
commits a Position in the same spool transaction as the events made from the lines before it, so that after a
crash reading resumes exactly there.

Rotation:
- by rename (logrotate's default, MariaDB's server_audit, a new file named in PostgreSQL's current_logfiles):
  the file being read is read to its end, then reading moves on to its successor — the oldest rotated file
  written after it, or the current file. After a restart the file named by the Position is found again by its
  inode among the rotated files;
- by copy and truncate (logrotate's copytruncate): the file shrinks, or its first bytes change. The rest of what
  it held beyond the offset reached is read from the copy (found by the same first bytes), then the file again
  from its start. Lines written between logrotate's copy and its truncation are lost by copytruncate itself.

Only complete lines are returned; a last line without its newline waits for it, unless the file is finished.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

HEAD_BYTES = 1024
MAX_READ = 1 << 20
MAX_LINE = 64 << 20  # a longer "line" is returned in pieces (the parser then reports them unreadable)
_SKIP_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".zip")


@dataclass(frozen=True, slots=True)
class Position:
    path: str
    dev: int
    ino: int
    head: str  # sha256 (hex) of the file's first head_len bytes
    head_len: int
    mtime_ns: int
    offset: int = 0  # bytes consumed
    line: int = 0  # lines consumed

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Position:
        return cls(**d)  # type: ignore[arg-type]


@dataclass(slots=True)
class Chunk:
    """Complete lines from one file: `(content without newline, offset of its first byte, 1-based number)`."""

    file: Position  # the file's identity; its offset/line are where `lines` begin
    lines: list[tuple[bytes, int, int]]
    end: Position  # after the last line
    final: bool = False  # the file is finished; the next chunk comes from its successor

    def at(self, offset: int, line: int) -> Position:
        return replace(self.end, offset=offset, line=line)


@dataclass(slots=True)
class _Open:
    fd: int
    path: str
    dev: int
    ino: int
    head: str
    head_len: int
    mtime_ns: int
    offset: int
    line: int

    def position(self) -> Position:
        return Position(self.path, self.dev, self.ino, self.head, self.head_len, self.mtime_ns, self.offset, self.line)


def _head(fd: int, size: int, limit: int = HEAD_BYTES) -> tuple[str, int]:
    n = min(size, limit)
    return hashlib.sha256(os.pread(fd, n, 0) if n else b"").hexdigest(), n


def _stat(path: str) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


class Follower:
    """Reads complete lines from the file `locate()` names, and from the files it was rotated into.

    `rotated()` lists the paths where rotated files may be (glob results); compressed ones are ignored.
    """

    def __init__(
        self,
        locate: Callable[[], str | None],
        rotated: Callable[[], list[str]] = lambda: [],
        *,
        max_read: int = MAX_READ,
        start_at_end: bool = False,
    ) -> None:
        self._locate = locate
        self._rotated = rotated
        self.max_read = max_read
        self.start_at_end = start_at_end
        self._cur: _Open | None = None
        self._finished: Position | None = None  # the file most recently read to its end
        self._done: set[tuple[int, int]] = set()  # files finished since reaching the current one
        self._pending_gap: str | None = None

    # -- positions --------------------------------------------------------------------------------------------

    def restore(self, pos: Position | None) -> None:
        """Start reading at `pos` (a committed Position), or at the start (or end) of the current file."""
        self.close()
        self._finished, self._done, self._pending_gap = None, set(), None
        if pos is None:
            path = self._locate()
            if path is not None and _stat(path) is not None:
                self._open(path, at_end=self.start_at_end)
            return
        for path in self._candidates():
            st = _stat(path)
            if st is not None and (st.st_dev, st.st_ino) == (pos.dev, pos.ino):
                cur = self._open(path, offset=pos.offset, line=pos.line)
                if cur is not None:
                    # Judge the file against the hash committed, not against what it holds now: if it was
                    # truncated meanwhile, the next read() notices and looks for the copy.
                    cur.head, cur.head_len = pos.head, pos.head_len
                return
        self._pending_gap = (
            f"the file read up to offset {pos.offset} ({pos.path}) is gone; lines written to it after that "
            "offset, if any, were not read"
        )
        self._finished = pos

    def close(self) -> None:
        if self._cur is not None:
            os.close(self._cur.fd)
            self._cur = None

    @property
    def current_path(self) -> str | None:
        return None if self._cur is None else self._cur.path

    # -- reading ----------------------------------------------------------------------------------------------

    def read(self) -> Chunk | None:
        """The next complete lines, or None when there is nothing new."""
        if self._cur is None and not self._open_successor():
            return None
        cur = self._cur
        if cur is None:
            return None
        st = os.fstat(cur.fd)
        if st.st_size < cur.offset or (cur.head_len and _head(cur.fd, cur.head_len, cur.head_len)[0] != cur.head):
            return self._truncated(cur)
        chunk = self._read_lines(cur, st.st_size, final=False)
        if chunk is not None:
            return chunk
        if self._rotated_away(cur):
            self._rename(cur)
            # Read what was written before the switch, including a last line that will never get its newline.
            size = os.fstat(cur.fd).st_size
            if size - cur.offset > self.max_read:
                return self._read_lines(cur, size, final=False)
            chunk = self._read_lines(cur, size, final=True)
            if chunk is None:
                chunk = Chunk(cur.position(), [], cur.position(), final=True)
            self._finish(cur)
            return chunk
        return None

    def take_gap(self) -> str | None:
        """Why lines may be missing (a rotated file gone, a truncation without copy), once; never their content."""
        gap, self._pending_gap = self._pending_gap, None
        return gap

    def _read_lines(self, cur: _Open, size: int, *, final: bool) -> Chunk | None:
        if size <= cur.offset:
            return None
        data = os.pread(cur.fd, min(self.max_read, size - cur.offset), cur.offset)
        if not data:
            return None
        cut = data.rfind(b"\n")
        while cut < 0 and len(data) < size - cur.offset and len(data) < MAX_LINE:
            more = os.pread(cur.fd, min(len(data), size - cur.offset - len(data)), cur.offset + len(data))
            if not more:
                break
            data += more
            cut = data.rfind(b"\n")
        if cut < 0 and not final and len(data) < MAX_LINE:
            return None  # a partly written line: wait for its end
        body = data[:cut] if (cut >= 0 and not final) else (data[:-1] if data.endswith(b"\n") else data)
        start = cur.position()
        lines: list[tuple[bytes, int, int]] = []
        off, num = cur.offset, cur.line
        for raw in body.split(b"\n"):
            num += 1
            lines.append((raw, off, num))
            off += len(raw) + 1
        consumed = cut + 1 if (cut >= 0 and not final) else len(data)
        cur.offset += consumed
        cur.line = num
        cur.mtime_ns = os.fstat(cur.fd).st_mtime_ns
        if cur.head_len < HEAD_BYTES:
            cur.head, cur.head_len = _head(cur.fd, cur.offset)
        return Chunk(start, lines, cur.position(), final=final)

    def _rotated_away(self, cur: _Open) -> bool:
        path = self._locate()
        if path is None:
            return False
        st = _stat(path)
        return st is not None and (st.st_dev, st.st_ino) != (cur.dev, cur.ino)

    def _rename(self, cur: _Open) -> None:
        """Learn the rotated file's new name, for the positions and parse errors that point into it."""
        for path in self._rotated():
            st = _stat(path)
            if st is not None and (st.st_dev, st.st_ino) == (cur.dev, cur.ino):
                cur.path = path
                return

    def _truncated(self, cur: _Open) -> Chunk | None:
        """The file shrank or was replaced in place: finish what it held from its copy, then read it anew."""
        copy = None
        for path in self._candidates():
            st = _stat(path)
            if st is None or (st.st_dev, st.st_ino) == (cur.dev, cur.ino) or st.st_size < cur.offset:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if _head(fd, cur.head_len, cur.head_len)[0] == cur.head:
                    copy = path
                    break
            finally:
                os.close(fd)
        self.close()
        if copy is not None:
            self._open(copy, offset=cur.offset, line=cur.line)
            return self.read()
        self._pending_gap = (
            f"{cur.path} was truncated at offset {cur.offset} and no rotated copy of it was found; "
            "lines written to it after that offset, if any, were not read"
        )
        if self._open(self._locate() or cur.path) is None:
            return None
        return self.read()

    def _finish(self, cur: _Open) -> None:
        self._finished = cur.position()
        self._done.add((cur.dev, cur.ino))
        self.close()

    def _open_successor(self) -> bool:
        """Open the file that follows the one finished last: the oldest rotated file written after it, or the
        current file."""
        current = self._locate()
        if self._finished is None:
            # The file did not exist when reading started: all of it is new, whatever start_at says.
            if current is None or _stat(current) is None:
                return False
            return self._open(current) is not None
        after = self._finished.mtime_ns
        best: tuple[int, int, str] | None = None
        for path in self._candidates():
            st = _stat(path)
            if st is None or (st.st_dev, st.st_ino) in self._done or st.st_mtime_ns < after:
                continue
            if (st.st_dev, st.st_ino) == (self._finished.dev, self._finished.ino):
                continue
            rank = (st.st_mtime_ns, 1 if path == current else 0, path)
            if best is None or rank < best:
                best = rank
        if best is None:
            return False
        if best[2] == current:
            self._done = set()
        self._finished = None
        return self._open(best[2]) is not None

    def _candidates(self) -> list[str]:
        current = self._locate()
        paths = [p for p in self._rotated() if not p.endswith(_SKIP_SUFFIXES)]
        if current is not None:
            paths = [current] + [p for p in paths if p != current]
        return paths

    def _open(self, path: str, *, offset: int = 0, line: int = 0, at_end: bool = False) -> _Open | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        st = os.fstat(fd)
        head, head_len = _head(fd, st.st_size)
        if at_end:
            offset, line = st.st_size, 0
        self._cur = _Open(fd, path, st.st_dev, st.st_ino, head, head_len, st.st_mtime_ns, offset, line)
        return self._cur
