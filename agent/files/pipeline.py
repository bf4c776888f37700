"""From raw watchdog events to spooled `file.export` events, in two worker threads the observer never waits on.

    observer thread ──submit()──▶ raw queue ──▶ settle worker ──▶ job queue ──▶ classify worker ──▶ spool
                                   (bounded)    debounce, who,     (bounded)    counts, SHA-256
                                                where, dedupe

A full raw queue loses events: that is counted and flagged, and the watcher re-scans for recent changes. A full
job queue, or the agent above its CPU or memory ceiling, sheds the classification of a file, never its event.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import queue
import re
import stat
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agent import procinfo
from agent.events import Actor, FileExport, FileExportPayload, ParseError, ParseErrorPayload, ProcessInfo, Source
from agent.events import new_event
from agent.files.classify import Classification, Classifier
from agent.files.config import FileWatchConfig
from agent.files.debounce import Debouncer, RawEvent, Ready
from agent.files.mounts import Destination, MountTable
from agent.governor import ResourceGovernor
from agent.platform import Platform
from agent.runtime import spool_events
from agent.spool import Spool
from agent.units import parse_duration

log = logging.getLogger("custos.agent.files")

_IDLE_WAIT = 5.0  # the settle worker's longest sleep with nothing pending (stop() wakes it at once)
_EMITTED_MEMORY = 20_000  # files whose last reported (size, mtime, inode) is remembered, to drop repeats


@dataclass(frozen=True, slots=True)
class Job:
    ready: Ready
    size: int
    destination: Destination
    mount_point: str | None
    owner: str | None


class ExportPipeline:
    def __init__(self, name: str, config: FileWatchConfig, *, spool: Spool, table: MountTable, platform: Platform,
                 governor: ResourceGovernor, classifier: Classifier, agent_id: str = "",
                 exclude_dirs: tuple[str, ...] = (), clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = config
        self.spool = spool
        self.table = table
        self.platform = platform
        self.governor = governor
        self.classifier = classifier
        self.agent_id = agent_id
        self.clock = clock
        self.raw: queue.Queue[RawEvent | None] = queue.Queue(maxsize=config.queue_size)
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=1000)
        self.debouncer = Debouncer(
            quiet=parse_duration(config.quiet), unclosed_wait=parse_duration(config.unclosed_wait),
            max_wait=parse_duration(config.max_wait),
            max_pending=config.max_pending, temporary_globs=tuple(config.temporary_names),
            crossing=lambda src, dest: table.destination(src)[0] != table.destination(dest)[0], clock=clock,
        )
        globs = list(config.exclude) + [os.path.join(d, "*") for d in exclude_dirs]
        self._excluded = re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        self._holder_every = parse_duration(config.holder_scan_interval)
        self._next_holder_scan = 0.0
        self._emitted: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self._by_signature: dict[tuple[int, int, int], str] = {}
        self.overflowed = threading.Event()
        self.errors: Counter[str] = Counter()
        self.excluded: Counter[str] = Counter()
        self.shed: Counter[str] = Counter()
        self.exported = 0
        self._stop = threading.Event()
        self._settling = False
        self._expire: queue.SimpleQueue[str] = queue.SimpleQueue()

    # -- called on the observer's thread: enqueue only ------------------------------------------------------

    def submit(self, event: RawEvent, wait: float = 0.0) -> bool:
        """Queue a raw event; the observer never waits (`wait` is for the re-scan). False when it was lost."""
        rx = self._excluded
        if rx is not None and rx.match(event.path) and (not event.dest or rx.match(event.dest)):
            self.excluded["exclude"] += 1
            return True
        try:
            if wait > 0:
                self.raw.put(event, timeout=wait)
            else:
                self.raw.put_nowait(event)
        except queue.Full:
            self.errors["queue_overflow"] += 1
            self.overflowed.set()
            return False
        return True

    def expire_under(self, mount_point: str) -> None:
        """Report now the files still settling under a mount that is going away (from any thread)."""
        self._expire.put(mount_point)
        try:
            self.raw.put_nowait(None)  # wake the settle worker
        except queue.Full:
            pass  # it is busy anyway and will see the request on its next round

    # -- settle worker --------------------------------------------------------------------------------------

    def run_settle(self) -> None:
        while not self._stop.is_set():
            try:
                self._settle_once()
            except Exception:  # noqa: BLE001 - the worker outlives any one file; counted for heartbeats
                self.errors["settle"] += 1
                log.exception("file settle worker fault; going on")

    def _settle_once(self) -> None:
        deadline = self.debouncer.next_deadline()
        wait = _IDLE_WAIT if deadline is None else min(_IDLE_WAIT, max(0.0, deadline - self.clock()))
        try:
            first: RawEvent | None = self.raw.get(timeout=wait)
            got = True
        except queue.Empty:
            first, got = None, False
        self._settling = True
        try:
            if got:
                self._feed(first)
            for _ in range(10_000):  # take what is queued now, then look at the clock again
                self._feed(self.raw.get_nowait())
        except queue.Empty:
            pass
        try:
            self._after_feed()
        finally:
            self._settling = False

    def _after_feed(self) -> None:
        while not self._expire.empty():
            self.debouncer.expire_under(self._expire.get_nowait())
        self._attribute()
        for ready in self.debouncer.due():
            self._settled(ready)

    def idle(self) -> bool:
        """Nothing queued, settling or being classified (for tests and shutdown; read in this order on purpose)."""
        return (self.raw.unfinished_tasks == 0 and not self._settling and not self.debouncer.pending
                and self.jobs.unfinished_tasks == 0)

    def _feed(self, event: RawEvent | None) -> None:
        if event is not None:
            self.debouncer.feed(event)
        self.raw.task_done()

    def _attribute(self) -> None:
        """Find the process writing each new pending file, while it still has it open (rate-limited)."""
        now = self.clock()
        if now < self._next_holder_scan:
            return
        entries = self.debouncer.unattributed()[:2000]
        if not entries:
            return
        self._next_holder_scan = now + self._holder_every
        reason = self.governor.over()
        if reason is not None:  # walking every process's descriptors is the next cost after classification
            self.shed[f"attribution.{reason}"] += len(entries)
            for e in entries:
                e.looked_for_holder = True
            return
        holders = self.platform.holders([e.path for e in entries], budget_s=0.05)
        for e in entries:
            e.looked_for_holder = True
            try:
                e.last_size = os.stat(e.path).st_size
            except OSError:
                pass
            found = sorted(holders.get(e.path, []), key=lambda h: not h.writing)
            for h in found:
                info = procinfo.process_info(h.pid)
                if info is not None:
                    e.holder = info
                    break

    def _settled(self, ready: Ready) -> None:
        try:
            st = os.stat(ready.path)
        except FileNotFoundError:
            if ready.forced and ready.last_size:  # its mount went away: report what we knew
                self._job_unclassified(self._job(ready, ready.last_size, None), caps=["unavailable"])
            else:
                self.excluded["vanished"] += 1
            return
        except OSError:
            self.errors["stat"] += 1
            return
        if not stat.S_ISREG(st.st_mode):
            return
        if st.st_size == 0:
            self.excluded["empty"] += 1  # placeholders (a browser's before its .part is renamed), `touch`
            return
        signature = (st.st_size, st.st_mtime_ns, st.st_ino)
        if self._emitted.get(ready.path) == signature:
            self.excluded["unchanged"] += 1  # attribute changes, duplicate events, a re-scan of a reported file
            return
        earlier = self._by_signature.get(signature)
        if ready.action == "created" and earlier and earlier != ready.path and not os.path.lexists(earlier):
            # A move between two watched roots arrives as "deleted" here and "created" there: same inode.
            ready = dataclasses.replace(ready, action="moved", moved_from=earlier)
        self._remember(ready.path, signature)
        job = self._job(ready, st.st_size, procinfo.username_of_uid(st.st_uid))
        reason = self.governor.over()
        if reason is not None:
            self.shed[f"classification.{reason}"] += 1
            self._job_unclassified(job)
            return
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.shed["classification.queue_full"] += 1
            self._job_unclassified(job)

    def _remember(self, path: str, signature: tuple[int, int, int]) -> None:
        old = self._emitted.pop(path, None)
        if old is not None:
            self._by_signature.pop(old, None)
        self._emitted[path] = signature
        self._by_signature[signature] = path
        if len(self._emitted) > _EMITTED_MEMORY:
            _, dropped = self._emitted.popitem(last=False)
            self._by_signature.pop(dropped, None)

    def _job(self, ready: Ready, size: int, owner: str | None) -> Job:
        destination, mount_point = self.table.destination(ready.path)
        return Job(ready, size, destination, mount_point, owner)

    # -- classify worker ------------------------------------------------------------------------------------

    def run_classify(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                self.jobs.task_done()
                return
            try:
                self._classify(job)
            except Exception as e:  # noqa: BLE001 - never lose the event of a file that broke the classifier
                self.errors["classify"] += 1
                # Only the error's type: a reader's message could quote what it read.
                log.error("classifying %s failed (%s); reported without counts", job.ready.path, type(e).__name__)
                self._job_unclassified(job, caps=["unreadable"])
            finally:
                self.jobs.task_done()

    def _classify(self, job: Job) -> None:
        reason = self.governor.over()
        if reason is not None:
            self.shed[f"classification.{reason}"] += 1
            self._job_unclassified(job)
            return
        try:
            result = self.classifier.classify(job.ready.path)
        except FileNotFoundError:
            self._job_unclassified(job, caps=["unavailable"])
            return
        self._emit(job, result)

    def _job_unclassified(self, job: Job, caps: list[str] | None = None) -> None:
        self._emit(job, Classification(job.size, None, {}, caps or [], classified=False))

    def _emit(self, job: Job, c: Classification) -> None:
        r = job.ready
        holder: ProcessInfo | None = r.holder
        payload = FileExportPayload(
            path=r.path[:4096], action=r.action, size=c.size, destination=job.destination, sha256=c.sha256,
            mount_point=job.mount_point, moved_from=r.moved_from, owner=job.owner, process=holder,
            counts=c.counts, caps_reached=c.caps_reached, classified=c.classified,
        )
        actor = Actor(os_user=(holder.username if holder and holder.username else job.owner))
        event = new_event(FileExport, payload, source=Source(type="file_watch", name=self.name), actor=actor,
                          agent_id=self.agent_id)
        self._spool([event])
        self.exported += 1

    def notice(self, location: str, reason: str) -> None:
        """An `agent.parse_error` event saying what the watcher cannot do (the inotify limit), for the collector."""
        payload = ParseErrorPayload(location=location[:4096], reason=reason[:1024])
        self._spool([new_event(ParseError, payload, source=Source(type="file_watch", name=self.name),
                               agent_id=self.agent_id)])

    def _spool(self, events: list) -> None:  # type: ignore[type-arg]
        try:
            spool_events(self.spool, events)
        except Exception:  # noqa: BLE001 - a full or broken spool is counted; the watcher goes on
            self.errors["spool"] += 1
            log.exception("could not spool a file event")

    # -- lifecycle ------------------------------------------------------------------------------------------

    def stop(self, threads: list[threading.Thread], drain_seconds: float = 5.0) -> None:
        """Report what is still settling (classified while time allows), then stop both workers."""
        self._stop.set()
        try:
            self.raw.put_nowait(None)
        except queue.Full:
            pass
        settle = [t for t in threads if t.name.endswith("-settle")]
        for t in settle:
            t.join(timeout=10)
        while True:  # what the observer queued before it stopped
            try:
                self._feed(self.raw.get_nowait())
            except queue.Empty:
                break
        self.debouncer.force_all()
        for ready in self.debouncer.due():
            self._settled(ready)
        deadline = time.monotonic() + drain_seconds
        while not self.jobs.empty() and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded wait for the classifier to finish what was queued before shutdown
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self.shed["classification.shutdown"] += 1
                self._job_unclassified(job)
        self.jobs.put(None)
        for t in threads:
            if t not in settle:
                t.join(timeout=drain_seconds + 30)
