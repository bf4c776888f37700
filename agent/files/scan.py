"""A bounded walk for files changed since a moment: the watcher's answer to events it may have missed.

Used after the observer's queue overflowed or an observer was restarted, while the inotify limit keeps new
folders unwatched, on new media, and every `rescan_interval`. It keeps no snapshot in memory (a home directory can
hold millions of files): it compares modification times with the time of the previous scan, and files already
reported unchanged are dropped downstream.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Iterator


def changed_since(roots: Iterable[str], since: float, *, max_files: int, budget_s: float) -> Iterator[str]:
    """Paths of regular files under `roots` modified at or after `since` (Unix time); bounded in count and time."""
    deadline = time.monotonic() + budget_s
    seen = 0
    stack = list(roots)
    while stack:
        if time.monotonic() > deadline:
            return
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > max_files:
                return
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            elif stat.S_ISREG(st.st_mode) and max(st.st_mtime, st.st_ctime) >= since:
                yield entry.path
