"""Screenshots of the web UI over the synthetic bank, for the README and docs:

    python -m tests.e2e.ui_screenshots docs/screenshots

Starts a collector process on the scenario's data (tests/helpers/ui_site.py) and drives headless Chromium."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright
from sqlalchemy import select

from collector.db import alerts
from tests.helpers.ui_data import PASSWORD
from tests.helpers.ui_site import launch, log_in, ui_site


def take(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with tempfile.TemporaryDirectory() as tmp, ui_site(Path(tmp)) as site, sync_playwright() as p:
        with site.engine.connect() as conn:
            usb = conn.scalar(select(alerts.c.alert_id).where(alerts.c.rule_id == "custos.export_after_bulk_read"))
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
        log_in(page, site.url, "ana", PASSWORD)
        for name, path, full in (("alert-queue", "/alerts", False), ("alert", f"/alerts/{usb}", False),
                                 ("person", "/people/co03", False)):
            page.goto(site.url + path)
            shots.append(out / f"{name}.png")
            page.screenshot(path=str(shots[-1]), full_page=full)
        manager = browser.new_page(viewport={"width": 1100, "height": 1300}, device_scale_factor=1)
        log_in(manager, site.url, "mona", PASSWORD)
        manager.goto(f"{site.url}/summaries/risk/{site.week}")
        shots.append(out / "weekly-summary.png")
        manager.screenshot(path=str(shots[-1]), full_page=False)
        browser.close()
    return shots


if __name__ == "__main__":
    for shot in take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")):
        print(shot)
