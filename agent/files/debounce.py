"""From a storm of file events to one finished file: the debouncer the watcher's worker feeds.

Editors and browsers do not write a file once. A save is often "write a temporary file, rename it over the
original"; a download is "write `name.part` / `name.crdownload`, rename when done"; a copy is a create followed by
hundreds of modify events; `created` arrives before the writer has finished. The debouncer keeps one pending
entry per final path, follows renames (`dest_path`), ignores in-progress names, forgets files deleted before they
settled, and hands a path out once it has had no event for `quiet` seconds (or after `max_wait` of continuous
writing). It is pure bookkeeping on an injected clock: no threads, no I/O, so it can be tested exactly.
"""

from __future__ import annotations

import fnmatch
import heapq
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from agent.events import ProcessInfo

Action = Literal["created", "modified", "moved"]
RawKind = Literal["created", "modified", "closed", "deleted", "moved"]

# Names that are never a finished file: browsers' partial downloads, editors' lock, swap and save files,
# rsync/gio temporaries. The final file arrives by rename (followed) or by writes under its own name.
_TEMP_SUFFIXES = (
    ".part", ".crdownload", ".download", ".partial", ".opdownload", ".filepart", ".tmp", ".temp", ".swp",
    ".swx", ".swo", ".kate-swp", ".!qb", "~",
)
_TEMP_PREFIXES = (".~lock.", "~$", ".goutputstream-", ".#", ".com.google.chrome.", ".org.chromium.", ".nfs",
                  ".fuse_hidden", ".~")
_TEMP_PATTERNS = re.compile(
    r"^(?:4913|#.*#|\..+\.[A-Za-z0-9]{6}|tmp[a-z0-9_]{8}|.+\.sb-[0-9a-f]{8}-[A-Za-z0-9]{6})$"
)


def is_temporary_name(name: str, extra_globs: Iterable[str] = ()) -> bool:
    """Whether a file name is an in-progress or helper file rather than something a person saved."""
    low = name.lower()
    if low.endswith(_TEMP_SUFFIXES) or low.startswith(_TEMP_PREFIXES) or _TEMP_PATTERNS.match(name):
        return True
    return any(fnmatch.fnmatchcase(name, g) for g in extra_globs)


@dataclass(frozen=True, slots=True)
class RawEvent:
    """What the watchdog handler enqueues: only strings and flags, built in microseconds."""

    kind: RawKind
    path: str
    dest: str = ""
    is_directory: bool = False
    synthetic: bool = False  # made up by the observer for the contents of a moved or created directory
    closes_unseen: bool = False  # from polling or a re-scan: no "closed" event will follow


@dataclass(slots=True)
class Pending:
    path: str
    action: Action
    first_seen: float
    last_event: float
    moved_from: str | None = None
    open_for_writing: bool = False  # written to, and no "closed" event since
    holder: ProcessInfo | None = None
    looked_for_holder: bool = False
    last_size: int | None = None
    deadline_queued: float | None = None
    forced: bool = False


@dataclass(frozen=True, slots=True)
class Ready:
    """A file that has settled: report it."""

    path: str
    action: Action
    first_seen: float
    moved_from: str | None = None
    holder: ProcessInfo | None = None
    last_size: int | None = None
    forced: bool = False  # handed out before it was quiet (max_wait, max_pending or its mount went away)


@dataclass
class Debouncer:
    quiet: float
    unclosed_wait: float = 30.0
    max_wait: float = 600.0
    max_pending: int = 50_000
    temporary_globs: tuple[str, ...] = ()
    crossing: Callable[[str, str], bool] = field(default=lambda src, dest: True)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.pending: dict[str, Pending] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._seq = 0
        self.forced = 0  # entries handed out early because max_pending was reached

    # -- feeding --------------------------------------------------------------------------------------------

    def is_temporary(self, path: str) -> bool:
        return is_temporary_name(os.path.basename(path), self.temporary_globs)

    def feed(self, event: RawEvent) -> None:
        if event.kind == "moved":
            # An empty side is outside every watch: moved in from elsewhere, or out to elsewhere.
            if not event.is_directory:
                self._moved(event.path, event.dest, event.synthetic)
            elif event.path and event.dest:
                self._moved_directory(event.path, event.dest)
            elif event.path:
                self._dropped_directory(event.path)
            # a directory moved in: its files arrive as synthetic "created" events
        elif event.is_directory:
            return
        elif event.kind == "deleted":
            self._drop(event.path)
        elif self.is_temporary(event.path):
            return
        else:
            # Writing is what a modify event says, or the creation of a file (its writer has it open, and may take
            # longer than `quiet` to write the first buffer); a close ends it. The observer's own "created" events
            # for files it found already written in a new directory (synthetic) say nothing, and a polled change
            # or a re-scan will never be followed by a close.
            writing: bool | None = None
            if event.kind == "closed" or event.closes_unseen:
                writing = False  # closed, or we could never tell (and lost track of an earlier close)
            elif event.kind == "modified" or (event.kind == "created" and not event.synthetic):
                writing = True
            self._touch(event.path, "created" if event.kind == "created" else "modified", writing=writing)

    def _touch(self, path: str, action: Action, moved_from: str | None = None, *,
               writing: bool | None = False) -> Pending:
        now = self.clock()
        entry = self.pending.get(path)
        if entry is None:
            entry = self.pending[path] = Pending(path, action, now, now, moved_from, open_for_writing=bool(writing))
            self._arm(entry)
            if len(self.pending) > self.max_pending:
                self._force_oldest()
        else:
            entry.last_event = now
            if writing is not None:
                entry.open_for_writing = writing
            if action == "created" and entry.action == "modified":
                entry.action = "created"
            self._arm(entry)  # a close can bring the deadline forward
        return entry

    def _moved(self, src: str, dest: str, synthetic: bool) -> None:
        entry = self._drop(src) if src else None
        if not dest or self.is_temporary(dest):
            return  # moved away, or renamed to a backup or temporary name: nothing final here
        if not src:
            self._touch(dest, "created")  # moved in from an unwatched place: complete, no close to wait for
        elif entry is not None:
            merged = self._touch(dest, entry.action, entry.moved_from)
            merged.first_seen = min(merged.first_seen, entry.first_seen)
            merged.holder = merged.holder or entry.holder
            merged.looked_for_holder = merged.looked_for_holder or entry.looked_for_holder
        elif self.is_temporary(src):
            self._touch(dest, "created")  # atomic save or finished download
        elif not synthetic or self.crossing(src, dest):
            # A settled file renamed: one event; inside a moved directory only when it changes destination.
            self._touch(dest, "moved", moved_from=src)

    def _moved_directory(self, src: str, dest: str) -> None:
        prefix = src.rstrip("/") + "/"
        for path in [p for p in self.pending if p.startswith(prefix)]:
            entry = self.pending.pop(path)
            entry.path = dest.rstrip("/") + "/" + path[len(prefix):]
            entry.deadline_queued = None
            self.pending[entry.path] = entry
            self._arm(entry)

    def _dropped_directory(self, src: str) -> None:
        prefix = src.rstrip("/") + "/"
        for path in [p for p in self.pending if p.startswith(prefix)]:
            del self.pending[path]

    def _drop(self, path: str) -> Pending | None:
        return self.pending.pop(path, None)

    def expire_under(self, root: str) -> int:
        """Hand out every pending file under `root` at the next `due()` (its mount is going away)."""
        prefix = root.rstrip("/") + "/"
        n = 0
        for entry in self.pending.values():
            if entry.path.startswith(prefix):
                entry.forced = True
                self._arm(entry, at=self.clock())
                n += 1
        return n

    def force_all(self) -> None:
        """Hand out every pending file at the next `due()` (shutdown)."""
        now = self.clock()
        for entry in self.pending.values():
            entry.forced = True
            self._arm(entry, at=now)

    # -- timing ---------------------------------------------------------------------------------------------

    def _deadline(self, entry: Pending) -> float:
        if entry.forced:
            return entry.first_seen
        # A file still open for writing is not finished, however long the writer pauses (a stalled copy, a busy
        # machine): wait for its close, or for `unclosed_wait` without any event.
        settle = self.unclosed_wait if entry.open_for_writing else self.quiet
        return min(entry.last_event + settle, entry.first_seen + self.max_wait)

    def _arm(self, entry: Pending, at: float | None = None) -> None:
        when = self._deadline(entry) if at is None else at
        if entry.deadline_queued is not None and entry.deadline_queued <= when:
            return  # an earlier timer is already queued; it re-arms itself if the file is still busy then
        entry.deadline_queued = when
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, entry.path))

    def _force_oldest(self) -> None:
        oldest = next((e for e in self.pending.values() if not e.forced), None)
        if oldest is None:
            return
        oldest.forced = True
        self.forced += 1
        self._arm(oldest, at=self.clock())

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def due(self) -> list[Ready]:
        """Files quiet for long enough (or forced), removed from the pending set, oldest first."""
        now = self.clock()
        ready: list[Ready] = []
        while self._timers and self._timers[0][0] <= now:
            when, _, path = heapq.heappop(self._timers)
            entry = self.pending.get(path)
            if entry is None or entry.deadline_queued != when:
                continue  # stale timer: the file was dropped, renamed or re-armed earlier
            entry.deadline_queued = None
            deadline = self._deadline(entry)
            if deadline > now:
                self._arm(entry)  # written to since: wait for quiet again
                continue
            del self.pending[path]
            ready.append(Ready(entry.path, entry.action, entry.first_seen, entry.moved_from, entry.holder,
                               entry.last_size, entry.forced))
        return ready

    def unattributed(self) -> list[Pending]:
        return [e for e in self.pending.values() if not e.looked_for_holder]
