"""The watched roots: each on the inotify observer, or on the polling observer once the inotify limit is reached.

The inotify observer is started before any root is scheduled, so that `schedule()` itself raises ENOSPC. A root
whose own watch succeeds may still be only partly watched (watchdog skips subdirectories it cannot watch without
a word), so a throw-away probe watch follows every schedule: when it fails with ENOSPC too, the root moves to
polling, and the move is announced in an `agent.parse_error` event and in the log.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from dataclasses import dataclass
from typing import Literal

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from agent.files.debounce import RawEvent
from agent.files.pipeline import ExportPipeline
from agent.platform import Platform

log = logging.getLogger("custos.agent.files")

# No open/close-without-write events: reading a file (our own classifier included) must cost nothing.
EVENT_FILTER = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent,
                DirMovedEvent]
_KINDS = {"created": "created", "modified": "modified", "closed": "closed", "deleted": "deleted",
          "moved": "moved"}


class Enqueue(FileSystemEventHandler):
    """The observers' handler: turn the event into a RawEvent and enqueue it, nothing else."""

    def __init__(self, pipeline: ExportPipeline, *, closes_unseen: bool = False) -> None:
        self.submit = pipeline.submit
        self.closes_unseen = closes_unseen  # the polling observer cannot see a writer close its file

    def dispatch(self, event: FileSystemEvent) -> None:
        kind = _KINDS.get(event.event_type)
        if kind is not None:
            src, dest = os.fsdecode(event.src_path), os.fsdecode(event.dest_path)
            self.submit(RawEvent(kind, src, dest, event.is_directory, event.is_synthetic,  # type: ignore[arg-type]
                                 self.closes_unseen))


@dataclass
class Root:
    path: str
    mode: Literal["inotify", "polling"]
    watch: ObservedWatch


class WatchedRoots:
    def __init__(self, pipeline: ExportPipeline, platform: Platform, *, poll_interval: float,
                 poll_interval_text: str = "") -> None:
        self.pipeline = pipeline
        self.platform = platform
        self.poll_interval = poll_interval
        self._poll_text = poll_interval_text or f"{poll_interval:g}s"
        self.handler = Enqueue(pipeline)
        self.poll_handler = Enqueue(pipeline, closes_unseen=True)
        self.roots: dict[str, Root] = {}
        self.polled_for_limit: set[str] = set()
        self.observer: BaseObserver = _started(_native_observer())
        self.poller: BaseObserver = _started(PollingObserver(timeout=poll_interval))

    def sync(self, want: list[str]) -> None:
        """Watch exactly `want`: unschedule roots that went, schedule new ones."""
        for path in [p for p in self.roots if p not in want]:
            self.unschedule(path)
        for path in sorted(set(want) - set(self.roots)):
            self.schedule(path)

    def schedule(self, path: str) -> None:
        if path in self.polled_for_limit:
            self._poll(path)
            return
        try:
            watch = self.observer.schedule(self.handler, path, recursive=True, event_filter=EVENT_FILTER)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EMFILE):
                self._limit(path, e.strerror or str(e))
            else:
                self.pipeline.errors["schedule"] += 1
                log.warning("cannot watch %s (%s); will try again", path, e)
            return
        self.roots[path] = Root(path, "inotify", watch)
        if self.platform.watch_limit_reached(path):
            self.unschedule(path)
            self._limit(path, "inotify watch limit reached")

    def _limit(self, path: str, why: str) -> None:
        self.polled_for_limit.add(path)
        self.pipeline.errors["inotify_limit"] += 1
        # The user namespace's own limit where there is one (containers), else the machine's.
        limit = _read_int("/proc/sys/user/max_inotify_watches") or _read_int("/proc/sys/fs/inotify/max_user_watches")
        reason = (f"{why} (fs.inotify.max_user_watches={limit}); watching {path} by polling every "
                  f"{self._poll_text}; raise the limit to watch it by inotify")
        log.warning("%s", reason)
        self.pipeline.notice(path, reason)
        self._poll(path)

    def _poll(self, path: str) -> None:
        try:
            watch = self.poller.schedule(self.poll_handler, path, recursive=True)
        except OSError as e:
            self.pipeline.errors["schedule"] += 1
            log.warning("cannot poll %s (%s); will try again", path, e)
            return
        self.roots[path] = Root(path, "polling", watch)

    def unschedule(self, path: str) -> None:
        root = self.roots.pop(path, None)
        if root is None:
            return
        try:
            (self.observer if root.mode == "inotify" else self.poller).unschedule(root.watch)
        except (KeyError, OSError):
            pass  # already gone with its filesystem

    def restart_dead(self) -> list[str]:
        """Replace a dead observer and forget roots whose emitter died; returns the roots that missed events."""
        missed: list[str] = []
        for mode in ("inotify", "polling"):
            obs = self.observer if mode == "inotify" else self.poller
            if obs.is_alive():
                continue
            log.error("the %s observer died; restarting it", mode)
            self.pipeline.errors["observer_restarts"] += 1
            try:
                obs.stop()  # its emitters may still be running, queueing to nobody
            except Exception:  # noqa: BLE001 - it is being replaced whatever state it is in
                pass
            if mode == "inotify":
                self.observer = _started(_native_observer())
            else:
                self.poller = _started(PollingObserver(timeout=self.poll_interval))
            lost = [p for p, r in self.roots.items() if r.mode == mode]
            for p in lost:
                del self.roots[p]
            missed += lost
        for obs in (self.observer, self.poller):
            for emitter in list(obs.emitters):
                if not emitter.is_alive():  # its root was deleted or unmounted
                    for path in [p for p, r in self.roots.items() if r.watch == emitter.watch]:
                        missed.append(path)
                        self.unschedule(path)
        return missed

    def inotify_paths(self) -> list[str]:
        return [r.path for r in self.roots.values() if r.mode == "inotify"]

    def polled(self) -> int:
        return sum(1 for r in self.roots.values() if r.mode == "polling")

    def stop(self) -> None:
        for obs in (self.observer, self.poller):
            obs.stop()
            obs.join(timeout=10)


def _native_observer() -> BaseObserver:
    if sys.platform.startswith("linux"):
        from watchdog.observers.inotify import InotifyObserver

        # Full events: a move in from (or out to) an unwatched place arrives as a move with one side empty, not as
        # a plain create; a moved-in file is complete, where a created one may still be written to.
        return InotifyObserver(generate_full_events=True)
    return Observer()


def _started(observer: BaseObserver) -> BaseObserver:
    observer.daemon = True
    observer.start()  # before any schedule(): then schedule() itself raises ENOSPC
    return observer


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
