"""`custos demo`: the stages in order, the summary, and — unless --no-serve — the collector left running."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from collector.demo import extras
from collector.demo.bank import AGENTS, DemoBank, DemoError, build_bank
from collector.demo.outcome import Outcome, outcome, print_outcome, read_alerts
from collector.demo.pg import ProxyPart, check_pg, run_through_proxy
from collector.demo.progress import Progress
from collector.demo.replay import replay
from collector.demo.site import ANALYST_TOKEN, Site, child_env

STEPS = 6  # bank, database, collector, agents, replay, rules; with --pg also postgres and proxy


@contextmanager
def workdir_for(path: Path | None) -> Iterator[tuple[Path, bool]]:
    """(the working directory, whether it is ours to remove): `path`, new or empty, else a temporary one."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise DemoError(f"--workdir {path} is not empty; give a new or empty directory")
        yield path, False
        return
    tmp = Path(tempfile.mkdtemp(prefix="custos-demo-"))
    try:
        yield tmp, True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe_bank(bank: DemoBank) -> str:
    scn = bank.scenario
    staff = sum(1 for p in scn.people if p.kind == "person")
    last = bank.start + dt.timedelta(days=bank.days - 1)
    return (f"seed {bank.seed}: {staff} staff in {len(bank.teams)} teams, {bank.days} days "
            f"({bank.start:%a %d %b} – {last:%a %d %b %Y}), {bank.total:,} events; {len(scn.planted)} insiders "
            "planted")


def run_demo(*, seed: int = 1, serve: bool = True, workdir: Path | None = None, out: IO[str] = sys.stdout,
             start: dt.date | None = None, pg: str | None = None, without: tuple[str, ...] = (),
             timeout: float = 300.0) -> int:
    """The whole demo; the exit status is 0 when every event arrived and every planted scenario the rules can
    find was found."""
    began = time.monotonic()
    if pg is not None:
        check_pg(pg)
    unknown = sorted(set(without) - extras.rule_ids())
    if unknown:
        raise DemoError(f"--without-rule {', '.join(unknown)}: no such rule; `custos rules lint` lists them")
    bank = build_bank(seed, start)
    progress = Progress(out, STEPS + (2 if pg is not None else 0))
    with workdir_for(workdir) as (where, temporary):
        out.write(f"custos demo: a bank in a box — a collector and {len(AGENTS)} agents on this machine, in {where}"
                  + ("; the database part through the PostgreSQL proxy" if pg is not None else "") + "\n")
        progress.step("bank", describe_bank(bank) + (f"; left out: {', '.join(without)}" if without else ""))
        through: ProxyPart | None = None
        if pg is not None:
            through = run_through_proxy(pg, bank, where, progress, child_env())
        with Site(where, bank, progress, without=without) as site:
            counts = replay(site, bank, progress, timeout)
            progress.step("replay", f"{bank.days} days: {counts.stored:,} events shipped and stored")
            progress.step("rules", f"{counts.evaluated:,} events evaluated, {counts.alerts} alerts; "
                                   f"{time.monotonic() - began:.1f} s since the start")
            kinds = extras.rule_kinds([site.rules_dir])
            result = outcome(bank, read_alerts(site.db), kinds)
            print_outcome(out, result)
            if through is not None:
                out.write(f"\n{through.describe()}\n")
            _weekly(site, bank, out, temporary and not serve)
            ok = result.all_found and counts.stored == bank.total
            verdict = "every planted scenario was found" if result.all_found else "NOT every planted scenario was found"
            out.write(f"\n{verdict}; {time.monotonic() - began:.1f} s in all\n")
            if serve:
                _serve_until_interrupted(site, result, out)
        out.write("stopped the agents and the collector\n")
    return 0 if ok else 1


def _weekly(site: Site, bank: DemoBank, out: IO[str], removed: bool) -> None:
    week = (bank.start + dt.timedelta(days=7)).isocalendar()
    label = f"{week[0]}-W{week[1]:02d}"
    if not extras.has_weekly():
        out.write("\nweekly summaries for managers come with the web UI (custos report weekly); this checkout does "
                  "not have them yet\n")
        return
    paths = extras.write_weekly_summaries(site.db, site.config_path, bank.teams, label, site.workdir / "weekly")
    out.write(f"\nweekly access summaries of {label}, one per team, written to {paths[0].parent}"
              + (" (a temporary directory, removed on exit: keep them with --workdir DIR)" if removed else "") + ":\n")
    for path in paths:
        out.write(f"  {path.name}\n")


def _serve_until_interrupted(site: Site, result: Outcome, out: IO[str]) -> None:
    out.write(f"\nThe collector keeps running at {site.url}\n")
    if site.logins and extras.has_web_ui():
        out.write(f"  web UI: {site.url}/ — log in as\n")
        for login in site.logins:
            out.write(f"    {login.describe()}\n")
    else:
        out.write("  (the web UI, with log-ins for an analyst and a manager, comes with the UI work; this checkout "
                  "does not have it yet)\n")
    out.write(f"  events through the API: curl -H 'Authorization: Bearer {site.tokens[ANALYST_TOKEN]}' "
              f"'{site.url}/api/v1/events?kind=file.export&limit=20'\n"
              f"  the store: {site.database_url}; logs: {site.workdir / 'logs'}\n"
              "Press Ctrl-C to stop.\n")
    out.flush()
    # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored, and Ctrl-C must still work.
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while all(child.alive() for child in site.children):
            time.sleep(0.5)  # waiting for Ctrl-C, not for a condition: nothing to poll
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
