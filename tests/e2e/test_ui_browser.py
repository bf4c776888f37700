"""The web UI in headless Chromium against a real collector process over the synthetic bank: an analyst triages
the top alert; a manager sees their own team only; forms without the CSRF token are refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import select

from collector.db import alert_history, alerts, audit_log
from tests.helpers.ui_data import PASSWORD
from tests.helpers.ui_site import Site, launch, log_in, ui_site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with ui_site(tmp_path_factory.mktemp("ui")) as s:
        yield s


@pytest.fixture
def browser() -> Iterator[object]:
    """Per test: Playwright's event loop and its worker threads end with the test."""
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def _status(site: Site, alert_id: str) -> str:
    with site.engine.connect() as conn:
        return str(conn.scalar(select(alerts.c.status).where(alerts.c.alert_id == alert_id)))


def _team_alert(site: Site, team: str) -> str:
    with site.engine.connect() as conn:
        return str(conn.scalar(select(alerts.c.alert_id).where(alerts.c.team == team).limit(1)))


def test_analyst_opens_the_top_alert_sees_its_evidence_and_acknowledges_it(  # type: ignore[no-untyped-def]
        site: Site, browser, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{site.url}/alerts")
    assert "/login" in page.url  # not signed in: sent to the log-in page
    log_in(page, site.url, "ana", PASSWORD)
    assert page.url.endswith("/alerts")
    top = page.locator("table.queue tbody tr").first
    top_id = top.get_attribute("data-alert-id")
    risks = [float(t) for t in page.locator("td.risk").all_inner_texts()]
    assert risks == sorted(risks, reverse=True) and risks[0] > 0
    top.locator("a.alert-link").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/alerts/{top_id}")
    with site.engine.connect() as conn:
        row = conn.execute(select(alerts.c.summary, alerts.c.evidence, alerts.c.staff_id)
                           .where(alerts.c.alert_id == top_id)).one()
    assert page.inner_text("#summary") == row.summary
    shown = page.locator("#evidence tr.evidence").evaluate_all("rows => rows.map(r => r.dataset.eventId)")
    assert set(shown) == set(json.loads(row.evidence))
    assert page.locator("#timeline tbody tr").count() >= len(shown)
    assert _status(site, top_id) == "new"
    page.click("#acknowledge")
    page.wait_for_load_state()
    assert "acknowledged" in page.inner_text("#status")
    assert page.inner_text("#assignee") == "ana"
    assert _status(site, top_id) == "acknowledged"
    with site.engine.connect() as conn:
        changes = conn.execute(select(alert_history.c.field, alert_history.c.actor, alert_history.c.new)
                               .where(alert_history.c.alert_id == top_id)).all()
        views = conn.execute(select(audit_log.c.staff_id).where(
            audit_log.c.actor == "ana", audit_log.c.action == "view", audit_log.c.subject_id == top_id)).all()
    assert ("status", "ana", "acknowledged") in [tuple(c) for c in changes]
    assert views and views[0].staff_id == row.staff_id  # who looked at whom
    page.screenshot(path=str(tmp_path / "alert.png"), full_page=True)
    assert (tmp_path / "alert.png").stat().st_size > 10_000
    page.close()


def test_manager_opens_their_team_summary_and_nothing_of_another_team(  # type: ignore[no-untyped-def]
        site: Site, browser) -> None:
    page = browser.new_page()
    log_in(page, site.url, "mona", PASSWORD)  # manager of team risk
    assert page.url.endswith("/summaries")
    resp = page.goto(f"{site.url}/summaries/risk/{site.week}")
    assert resp.status == 200
    assert "Weekly access summary: risk" in page.inner_text("h1")
    assert page.locator("ol.attention li").count() >= 1
    assert page.locator("svg").count() >= 2  # inline charts
    other_person = next(p.staff_id for p in site.scenario.people if p.team == "loans" and p.kind == "person")
    for path in (f"/people/{other_person}", f"/alerts/{_team_alert(site, 'loans')}", f"/summaries/loans/{site.week}"):
        resp = page.goto(site.url + path)
        assert resp.status in (403, 404), path
    assert page.goto(f"{site.url}/people/rk04").status == 200  # one of her own team
    page.goto(f"{site.url}/alerts?status=")
    teams = set(page.locator("table.queue tbody tr td:nth-child(4)").all_inner_texts())
    assert teams == {"risk"}
    assert page.goto(f"{site.url}/agents").status == 403
    page.close()


def test_a_form_post_without_the_csrf_token_is_refused(site: Site, browser) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    log_in(page, site.url, "ana", PASSWORD)
    target = _team_alert(site, "collections")
    before = _status(site, target)
    for form in ({"status": "closed_fp"}, {"status": "closed_fp", "csrf": "forged"}):
        resp = page.request.post(f"{site.url}/alerts/{target}/triage", form=form, max_redirects=0)
        assert resp.status == 403, form
    assert _status(site, target) == before
    # The same post with the page's token goes through: the refusal was the token's doing.
    page.goto(f"{site.url}/alerts/{target}")
    token = page.locator("#triage input[name=csrf]").get_attribute("value")
    resp = page.request.post(f"{site.url}/alerts/{target}/triage", form={"status": "closed_fp", "csrf": token},
                             max_redirects=0)
    assert resp.status == 303 and _status(site, target) == "closed_fp"
    # And the log-in form itself needs its token.
    fresh = browser.new_context().new_page()
    resp = fresh.request.post(f"{site.url}/login", form={"username": "ana", "password": PASSWORD})
    assert resp.status == 403
    fresh.context.close()
    context.close()
