"""Fourteen days in under a minute: each day's events go into the agents' spools as that day "happens", the
agents ship them, the collector stores them and its rule worker evaluates them, each at its own timestamp.

A day is released in two parts — first the staff workstations and the audit tailer, then the proxy and the
lending system — and each part waits until it is stored: in a real bank the workstation agent reports a
database connection (who, which program) the moment it opens, before the proxy's first query on it arrives, and
the rules rely on that order to name the person behind a shared account. Within a part, agents race as they do
in life. Progress is read from the spools, the store and the collector's /metrics, never assumed from a delay.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from collector.demo.bank import AGENTS, DemoBank, DemoError
from collector.demo.progress import Counts, Progress
from collector.demo.site import Site

POLL = 0.1  # seconds between looks at the spools, the store and /metrics


def wait_until(site: Site, written: int, done: Callable[[Counts], bool], deadline: float, what: str,
               draw: Callable[[Counts], None]) -> Counts:
    """Poll the site's counts until `done` says so, drawing progress; DemoError at `deadline` or when one of
    the demo's processes has died."""
    while True:
        site.check_children()
        counts = site.counts(written)
        draw(counts)
        if done(counts):
            return counts
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}: {counts.shipped:,} of {written:,} events shipped, "
                            f"{counts.stored:,} stored, {counts.evaluated:,} evaluated; the processes' logs are "
                            f"in {site.workdir / 'logs'}")
        time.sleep(POLL)


def replay(site: Site, bank: DemoBank, progress: Progress, timeout: float) -> Counts:
    """Release the bank's days one by one; returns the counts once every event is stored and evaluated."""
    deadline = time.monotonic() + timeout
    total = bank.total
    written = 0
    counts = Counts()
    for day in range(bank.days):
        label = f"{bank.day_label(day)}"

        def draw(c: Counts, label: str = label) -> None:
            progress.bar("replay", label, c, total)

        for first in (True, False):
            for spec in AGENTS:
                if spec.first is first:
                    written += site.put(spec.name, bank.by_day[day].get(spec.name, []))
            target = written
            # Stored, and acknowledged to the agents: the collector stores a batch before its answer reaches the
            # shipper, which only then takes it out of the spool.
            counts = wait_until(site, written, lambda c, t=target: c.stored >= t and c.shipped >= t,  # type: ignore[misc]
                                deadline, f"day {day + 1} to be stored and acknowledged", draw)
        progress.bar("replay", label, counts, total, line=True)
    counts = wait_until(site, written, lambda c: c.stored >= total and c.evaluated >= c.stored, deadline,
                        "the rules to evaluate every stored event", lambda c: progress.bar("replay", "rules", c,
                                                                                          total))
    return counts
