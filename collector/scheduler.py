"""Scheduled jobs of the collector (APScheduler 3): the weekly summaries (cron, Monday 08:00 in the
organisation's time zone by default) and attestation reminders.

Every collector process runs a scheduler, so each run first claims its key (`weekly:2026-W47`) in the
`job_runs` table: an INSERT only one process can win. A run whose holder died is taken over once its lease
expires. Misfires are coalesced (`coalesce`, `misfire_grace_time`); and because a scheduler's memory forgets a
run missed while every collector was down, a run due within the grace period and not yet done is caught up
once at start.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import zoneinfo
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from collector.config import CollectorConfig
from collector.db import job_runs
from collector.weekly import week_of

log = logging.getLogger("custos.jobs")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def claim(engine: Engine, job: str, key: str, holder: str, *, lease: dt.timedelta = dt.timedelta(hours=1),
          now: dt.datetime | None = None) -> bool:
    """True when this holder may run `job` for `key`: nobody has, or a previous holder failed or let its lease
    run out."""
    now = now or _now()
    try:
        with engine.begin() as conn:
            conn.execute(job_runs.insert().values(job=job, run_key=key, holder=holder, status="running",
                                                  started_at=now, lease_until=now + lease))
        return True
    except IntegrityError:
        pass
    with engine.begin() as conn:
        taken = conn.execute(update(job_runs).where(
            job_runs.c.job == job, job_runs.c.run_key == key,
            or_(job_runs.c.status == "failed", and_(job_runs.c.status == "running", job_runs.c.lease_until < now)))
            .values(holder=holder, status="running", started_at=now, lease_until=now + lease)).rowcount
    return taken == 1


def release(engine: Engine, job: str, key: str, holder: str, ok: bool, now: dt.datetime | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(update(job_runs).where(job_runs.c.job == job, job_runs.c.run_key == key,
                                            job_runs.c.holder == holder)
                     .values(status="done" if ok else "failed", finished_at=now or _now()))


def run_state(engine: Engine, job: str, key: str) -> tuple[str, str] | None:
    with engine.connect() as conn:
        r = conn.execute(select(job_runs.c.status, job_runs.c.holder).where(
            job_runs.c.job == job, job_runs.c.run_key == key)).first()
    return (r[0], r[1]) if r is not None else None


CPC_PERIOD = dt.timedelta(days=90)  # the frauds the daily ranking looks at
CPC_HOUR = 6  # organisation time: after the lending systems' nightly exports


class Jobs:
    def __init__(self, engine: Engine, config: CollectorConfig, *, on_sent: Callable[[], None] | None = None,
                 clock: Callable[[], dt.datetime] = _now) -> None:
        self.engine = engine
        self.config = config
        self.zone = zoneinfo.ZoneInfo(config.weekly.timezone)
        self.clock = clock
        self.on_sent = on_sent  # wakes the notification dispatcher
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        w = config.weekly
        self.trigger = CronTrigger(day_of_week=w.day_of_week, hour=w.hour, minute=w.minute, second=w.second,
                                   timezone=self.zone)
        self.scheduler: BackgroundScheduler | None = None

    def weekly_key(self, fired: dt.datetime) -> str:
        """The week a run at `fired` summarises: the one before the run's own week."""
        return week_of(fired.astimezone(self.zone).date() - dt.timedelta(days=7))

    def run_weekly(self, fired: dt.datetime | None = None) -> bool:
        """One weekly run; False when another process has it (or had it) already."""
        from collector.weekly_jobs import send_summaries

        week = self.weekly_key(fired or self.clock())
        key = f"weekly:{week}"
        if not claim(self.engine, "weekly", key, self.holder, now=self.clock()):
            state = run_state(self.engine, "weekly", key)
            log.info("weekly summaries for %s: already run by another process (%s)", week, state)
            return False
        ok = False
        try:
            teams = send_summaries(self.engine, self.config, week, self.clock())
            ok = True
            log.info("weekly summaries for %s built and queued for %d teams", week, len(teams))
        finally:
            release(self.engine, "weekly", key, self.holder, ok, self.clock())
        if self.on_sent is not None:
            self.on_sent()
        return True

    def run_reminders(self) -> None:
        from collector.weekly_jobs import remind

        hour = self.clock().strftime("%Y-%m-%dT%H")
        if claim(self.engine, "remind", f"remind:{hour}", self.holder, now=self.clock()):
            ok = False
            try:
                remind(self.engine, self.config, self.clock())
                ok = True
            finally:
                release(self.engine, "remind", f"remind:{hour}", self.holder, ok, self.clock())

    def run_cpc(self) -> list[str]:
        """The daily common-point-of-compromise ranking of the last 90 days' frauds: a person ranked far above
        chance becomes an alert (collector/fraud/investigate.py). Once a day across processes; the alert ids."""
        from collector.fraud.investigate import cpc, raise_cpc_alerts

        now = self.clock()
        key = f"cpc:{now.astimezone(self.zone):%Y-%m-%d}"
        if not claim(self.engine, "cpc", key, self.holder, now=now):
            return []
        ok = False
        try:
            raised = raise_cpc_alerts(self.engine, cpc(self.engine, now - CPC_PERIOD, now))
            ok = True
        finally:
            release(self.engine, "cpc", key, self.holder, ok, self.clock())
        if raised:
            log.info("common point of compromise: %d alert(s) raised", len(raised))
        return raised

    def _fire_cpc(self) -> None:
        try:
            self.run_cpc()
        except Exception:  # noqa: BLE001 - logged; tomorrow's run tries again
            log.exception("common-point-of-compromise ranking failed")

    def last_due(self, now: dt.datetime) -> dt.datetime | None:
        """The latest scheduled time at or before `now`, within the misfire grace period."""
        grace = dt.timedelta(minutes=self.config.weekly.misfire_grace_minutes)
        t = self.trigger.get_next_fire_time(None, now - grace)
        last = None
        for _ in range(100_000):
            if t is None or t > now:
                break
            last = t
            t = self.trigger.get_next_fire_time(t, t + dt.timedelta(seconds=1))
        return last

    def start(self) -> None:
        w = self.config.weekly
        sched = BackgroundScheduler(timezone=self.zone, daemon=True, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": int(w.misfire_grace_minutes * 60)})
        sched.add_job(self._fire_weekly, self.trigger, id="weekly-summaries", name="weekly summaries")
        sched.add_job(self.run_reminders, IntervalTrigger(minutes=w.reminder_check_minutes, timezone=self.zone),
                      id="attestation-reminders", name="attestation reminders")
        sched.add_job(self._fire_cpc, CronTrigger(hour=CPC_HOUR, timezone=self.zone), id="fraud-cpc",
                      name="common point of compromise", replace_existing=True)
        missed = self.last_due(self.clock())
        if missed is not None and run_state(self.engine, "weekly", f"weekly:{self.weekly_key(missed)}") is None:
            log.info("weekly run of %s was missed while the collector was down; running it now", missed)
            sched.add_job(self.run_weekly, args=[missed], id="weekly-catch-up", name="weekly catch-up")
        sched.start()
        self.scheduler = sched

    def _fire_weekly(self) -> None:
        try:
            self.run_weekly()
        except Exception:  # noqa: BLE001 - logged; the run is marked failed and another tick may take it over
            log.exception("weekly summaries failed")

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None


class IntervalJobs:
    """Jobs that run every few seconds in every collector process (the ledger's sealing, the integrity checks):
    each guards itself (a block number can be sealed once; alert ids are derived), so no run needs claiming.
    One job never runs twice at once, and runs missed while the process was busy are coalesced into one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scheduler: BackgroundScheduler | None = None
        self._jobs: list[tuple[str, Callable[[], object], float]] = []

    def add(self, job_id: str, fn: Callable[[], object], seconds: float) -> None:
        self._jobs.append((job_id, fn, seconds))

    def start(self) -> None:
        sched = BackgroundScheduler(timezone=dt.timezone.utc, daemon=True, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 60})
        for job_id, fn, seconds in self._jobs:
            sched.add_job(self._guarded(job_id, fn), IntervalTrigger(seconds=seconds, timezone=dt.timezone.utc),
                          id=job_id, name=job_id, replace_existing=True)
        sched.start()
        self.scheduler = sched

    def _guarded(self, job_id: str, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - logged; the next tick tries again
                log.exception("%s job %s failed", self.name, job_id)
        return run

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
