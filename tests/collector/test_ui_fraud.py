"""The loan-fraud pages over the real app: the common-point-of-compromise ranking and the customer look-up for
analysts, refused to managers, every use in the audit trail without the identifier typed."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from agent.customer_keys import CustomerKeyHasher
from collector.app import create_app
from collector.config import CollectorConfig, CustomersSection, RulesSection
from collector.db import audit_log, customer_hits, make_engine
from collector.migrate import upgrade
from collector.ui_config import WeeklySection
from collector.users import create_user
from tests.collector.test_cpc import _store_bank
from tests.collector.test_ui_api import PASSWORD, _log_in

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

KEY = b"ui-fraud-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, str, Path]]:
    tmp = tmp_path_factory.mktemp("ui-fraud")
    engine = make_engine(f"sqlite:///{tmp / 'custos.db'}")
    upgrade(engine)
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=45)).replace(microsecond=0)
    insider, _ = _store_bank(engine, start, CustomerKeyHasher(KEY))
    create_user(engine, "ana", "analyst", PASSWORD)
    create_user(engine, "mona", "manager", PASSWORD, team="call_centre")
    key_file = tmp / "key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    yield engine, insider, key_file
    engine.dispose()


@pytest.fixture
def client(site: tuple[Engine, str, Path]) -> Iterator[TestClient]:
    config = CollectorConfig(rules=RulesSection(enabled=False), weekly=WeeklySection(enabled=False),
                             customers=CustomersSection(key_file=str(site[2])))
    with TestClient(create_app(config, site[0])) as c:
        yield c


def test_an_analyst_sees_the_insider_first_and_flagged(client: TestClient, site: tuple[Engine, str, Path]) -> None:
    _log_in(client, "ana")
    page = client.get("/investigate/cpc", params={"since": "90d"})
    assert page.status_code == 200
    rows = re.findall(r'<tr data-who="([^"]+)" class="([^"]*)">', page.text)
    assert rows[0] == (site[1], "flagged")
    assert all(cls == "" for _, cls in rows[1:])
    assert 'href="/investigate/cpc"' in client.get("/alerts").text
    assert client.get("/investigate/cpc", params={"since": "soon"}).status_code == 400


def test_a_manager_is_refused_the_fraud_pages_and_not_shown_them(client: TestClient) -> None:
    _log_in(client, "mona")
    assert client.get("/investigate/cpc").status_code == 403
    assert client.get("/investigate/customer").status_code == 403
    assert "/investigate/" not in client.get("/summaries").text


def test_a_customer_look_up_lists_the_readers_and_logs_only_the_hash(client: TestClient,
                                                                      site: tuple[Engine, str, Path]) -> None:
    engine, insider, _ = site
    _log_in(client, "ana")
    with engine.connect() as conn:
        key = conn.scalar(select(customer_hits.c.customer_key).limit(1))
    # find the clear identifier the synthetic bank hashed into this key
    hasher = CustomerKeyHasher(KEY)
    clear = next(f"CUST-{i:06d}" for i in range(20_000) if hasher.hash(f"CUST-{i:06d}") == key)
    page = client.get("/investigate/customer", params={"q": clear.lower().replace("-", " - "), "by": "id"})
    assert page.status_code == 200 and key[:16] in page.text
    assert "fraud_confirmed" in page.text and "reads by" in page.text
    assert clear not in page.text and clear.lower() not in page.text
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.subject == "customer")).mappings().all()
    assert rows and rows[-1]["subject_id"] == key[:16]
    assert all(clear not in str(dict(r)) and clear.lower() not in str(dict(r)) for r in rows)
    assert client.get("/investigate/customer", params={"q": "FR-nope", "by": "case"}).status_code == 404
