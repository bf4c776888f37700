"""`type = "file_watch"`: watchdog observers on the places customer data lands, supervised.

Watched: each local user's Downloads, Desktop and Documents (or `paths`, or `CUSTOS_WATCH_PATHS`, colon-separated),
the cloud-sync folders, and every removable or network mount as it appears. Roots are watched with inotify; when
the kernel's watch limit is reached (ENOSPC) the watcher says so in an `agent.parse_error` event and in its log,
and watches the rest by polling (`agent.files.roots`). A supervisor thread wakes on mount changes and every
`supervise_interval`: it restarts a dead observer, follows roots that appear or go, and re-scans for changes that
no event reported (after a queue overflow, an observer restart, the limit, and every `rescan_interval`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from watchdog.observers.api import BaseObserver

from agent.config import AgentConfig
from agent.files.classify import Classifier
from agent.files.config import FileWatchConfig
from agent.files.debounce import RawEvent
from agent.files.mounts import MountPolicy, MountTable
from agent.files.pipeline import ExportPipeline
from agent.files.roots import Root, WatchedRoots
from agent.files.scan import changed_since
from agent.governor import Limits, ResourceGovernor, shared_governor
from agent.platform import Platform, current
from agent.section import load_section
from agent.spool import Spool
from agent.units import parse_duration

log = logging.getLogger("custos.agent.files")


class FileWatchSource:
    def __init__(self, name: str, config: FileWatchConfig, *, governor: ResourceGovernor | None = None,
                 env: Mapping[str, str] | None = None, platform: Platform | None = None, agent_id: str = "",
                 exclude_dirs: tuple[str, ...] = ()) -> None:
        self.name = name
        self.config = config
        self.platform = platform or current()
        self.governor = governor or shared_governor(Limits())
        self.agent_id = agent_id
        self.exclude_dirs = exclude_dirs
        env = os.environ if env is None else env
        override = [p for p in env.get("CUSTOS_WATCH_PATHS", "").split(":") if p]
        self.static_paths = override or config.paths
        self.table = MountTable(MountPolicy(config, self.platform))
        self.pipeline: ExportPipeline | None = None
        self.watched: WatchedRoots | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._waiter: Any = None
        self._limit_noticed = False
        self._scan_mark = time.time()
        self._next_rescan = time.monotonic() + parse_duration(config.rescan_interval)
        self._started = False
        self._user_folders: list[str] = []
        self._user_folders_until = 0.0

    @classmethod
    def from_config(cls, name: str, section: dict[str, Any], config: AgentConfig) -> FileWatchSource:
        governor = shared_governor(Limits.from_config(config.limits))
        spool_dir = os.path.abspath(config.spool.dir)
        return cls(name, load_section(FileWatchConfig, name, section), governor=governor,
                   agent_id=config.agent_id, exclude_dirs=(spool_dir,))

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self, spool: Spool) -> None:
        self.pipeline = ExportPipeline(
            self.name, self.config, spool=spool, table=self.table, platform=self.platform, governor=self.governor,
            classifier=Classifier(self.config.classify), agent_id=self.agent_id, exclude_dirs=self.exclude_dirs,
        )
        self.watched = WatchedRoots(self.pipeline, self.platform,
                                    poll_interval=parse_duration(self.config.poll_interval),
                                    poll_interval_text=str(self.config.poll_interval))
        self._waiter = self.platform.mount_waiter(parse_duration(self.config.mount_poll_interval))
        self.table.refresh()  # after the waiter opened: a mount in between is announced to it
        self._spawn("settle", self.pipeline.run_settle)
        self._spawn("classify", self.pipeline.run_classify)
        self._sync_roots()
        self._spawn("supervise", self._supervise_loop)
        self._started = True
        log.info("file watcher %s: %d roots (%s)", self.name, len(self.roots),
                 ", ".join(f"{r.path} [{r.mode}]" for r in self.roots.values()))

    def _spawn(self, what: str, target: Any) -> None:
        t = threading.Thread(target=target, name=f"custos-{self.name}-{what}", daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def roots(self) -> dict[str, Root]:
        return self.watched.roots if self.watched is not None else {}

    @property
    def observer(self) -> BaseObserver | None:
        return self.watched.observer if self.watched is not None else None

    def stop(self) -> None:
        self._stop.set()
        if self._waiter is not None:
            self._waiter.wake()
        supervise = [t for t in self._threads if t.name.endswith("-supervise")]
        for t in supervise:
            t.join(timeout=30)
        if self.watched is not None:
            self.watched.stop()
        if self.pipeline is not None:
            self.pipeline.stop([t for t in self._threads if t not in supervise])
        if self._waiter is not None:
            self._waiter.close()

    def counters(self) -> dict[str, dict[str, int]]:
        p = self.pipeline
        if p is None:
            return {}
        inotify = self.platform.kernel_watches()
        watches = {"polled_roots": self.watched.polled() if self.watched else 0}
        if inotify is not None:
            watches["inotify"] = inotify
        return {"errors": dict(p.errors), "excluded": dict(p.excluded), "shed": dict(p.shed), "watches": watches}

    # -- roots ----------------------------------------------------------------------------------------------

    def desired_roots(self) -> list[str]:
        paths: list[str] = []
        if self.static_paths is not None:
            paths += [os.path.expanduser(p) for p in self.static_paths]
        else:
            if time.monotonic() >= self._user_folders_until:  # the user list can come from a directory service
                users = self.platform.local_users()
                self._user_folders = [str(p) for u in users for p in self.platform.user_folders(u)]
                self._user_folders_until = time.monotonic() + 300.0
            paths += self._user_folders
        paths += self.table.policy.sync_paths
        if self.config.watch_mounts:
            paths += [m.mount_point for m in self.table.mounts.values()]
        roots: list[str] = []
        for p in sorted({os.path.abspath(p) for p in paths}, key=lambda p: (len(p), p)):
            if os.path.isdir(p) and not any(p.startswith(r.rstrip("/") + "/") for r in roots):
                roots.append(p)
        return roots

    def _sync_roots(self) -> None:
        with self._lock:
            if self.watched is not None:
                self.watched.sync(self.desired_roots())

    # -- supervision ----------------------------------------------------------------------------------------

    def _supervise_loop(self) -> None:
        interval = parse_duration(self.config.supervise_interval)
        next_check = time.monotonic() + interval
        while not self._stop.is_set():
            changed = self._waiter.wait(max(0.0, next_check - time.monotonic()))
            if self._stop.is_set():
                return
            try:
                if changed:
                    self._mounts_changed()
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + interval
                    self.supervise()
            except Exception:  # noqa: BLE001 - supervision must outlive any one fault
                self.pipeline.errors["supervise"] += 1  # type: ignore[union-attr]
                log.exception("file watcher supervision fault; going on")

    def _mounts_changed(self) -> None:
        added, removed = self.table.refresh()
        for m in removed:
            self.pipeline.expire_under(m.mount_point)  # type: ignore[union-attr]
        if added or removed:
            noticed = time.time()
            self._sync_roots()
            # Files written between the mount and its watch: found by their time, not by an event.
            self._catch_up([m.mount_point for m in added], since=noticed - 5.0, update_mark=False)

    def supervise(self) -> None:
        """Restart dead observers, follow roots, and re-scan where events may have been missed."""
        if self.watched is None or self.pipeline is None:
            return
        with self._lock:
            missed = self.watched.restart_dead()
            self.watched.sync(self.desired_roots())
            inotify_roots = self.watched.inotify_paths()
            if inotify_roots and self.platform.watch_limit_reached(inotify_roots[0]):
                if not self._limit_noticed:
                    self._limit_noticed = True
                    self.pipeline.errors["inotify_limit"] += 1
                    reason = "inotify watch limit reached: new folders are not watched; re-scanning them"
                    log.warning("%s", reason)
                    self.pipeline.notice("inotify", reason)
                missed += inotify_roots
            else:
                self._limit_noticed = False
            if self.pipeline.overflowed.is_set():
                self.pipeline.overflowed.clear()
                missed += list(self.roots)
            rescan = parse_duration(self.config.rescan_interval)
            if rescan > 0 and time.monotonic() >= self._next_rescan:
                self._next_rescan = time.monotonic() + rescan
                missed += list(self.roots)
        if missed:
            self._catch_up(sorted(set(missed)), since=self._scan_mark)

    def _catch_up(self, roots: list[str], since: float, update_mark: bool = True) -> None:
        """Report files under `roots` changed since `since` (wall clock) that no event may have told us of."""
        started = time.time()
        n = 0
        complete = True
        for path in changed_since(roots, since - 2.0, max_files=200_000, budget_s=60.0):
            if self._stop.is_set():
                return
            event = RawEvent("modified", path, closes_unseen=True)
            complete &= self.pipeline.submit(event, wait=5.0)  # type: ignore[union-attr]
            n += 1
        if update_mark and complete:  # else the next round looks as far back again
            self._scan_mark = started
        if n:
            log.info("re-scan found %d recently changed files under %d roots", n, len(roots))

