"""A collector process serving the web UI over the synthetic bank (tests/helpers/ui_data.py), and headless
Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from collector.config import CollectorConfig, RulesSection
from collector.db import make_engine
from collector.migrate import upgrade
from collector.ui_config import WeeklySection
from collector.weekly import last_week
from collector.weekly_jobs import make_summary
from rules.scenario import Scenario
from tests.helpers.procs import Collector
from tests.helpers.ui_data import add_users, seed_scenario

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ZONE = "Europe/Vilnius"
CONFIG = f"""
[rules]
enabled = false   # the alerts are stored with the data
[weekly]
enabled = false
timezone = "{ZONE}"
"""


@dataclass
class Site:
    collector: Collector
    engine: Engine
    scenario: Scenario
    week: str

    @property
    def url(self) -> str:
        return self.collector.url


@contextmanager
def ui_site(workdir: Path) -> Iterator[Site]:
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{workdir / 'custos.db'}"
    engine = make_engine(url)
    upgrade(engine)
    scn = seed_scenario(engine)
    add_users(engine)
    config = CollectorConfig(rules=RulesSection(enabled=False), weekly=WeeklySection(enabled=False, timezone=ZONE))
    week = last_week(dt.datetime.now(dt.timezone.utc), zoneinfo.ZoneInfo(ZONE))
    for team in ("risk", "loans"):
        make_summary(engine, config, team, week)
    (workdir / "collector.toml").write_text(CONFIG)
    collector = Collector(workdir, url, config=workdir / "collector.toml")
    try:
        collector.start()
        yield Site(collector, engine, scn, week)
    finally:
        collector.close()
        engine.dispose()


def launch(playwright: Any) -> Any:
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: install Debian's browser with `apt-get install -y chromium` "
                             "(Playwright drives it; `playwright install` is never used)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def log_in(page: Any, base: str, name: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
