"""Business records from lending systems, through the real collector's API and the CSV import: identifiers in
clear or hashed become the proxy's keyed hash, and nothing else of them is kept."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.customer_keys import CustomerKeyHasher
from agent.proxy.keys import hash_key
from collector import credentials
from collector.fraud.business import BUSINESS_EVENTS_PATH
from tests.helpers.api import Served, served
from tests.helpers.procs import base_env

SECRET = b"business-test-customer-key-0123456789"
CANONICAL = "11010519491231002x"
VARIANTS = ["11010519491231002X", " 110105 19491231 002X ", "110105-19491231-002x",
            "１１０１０５１９４９１２３１００２Ｘ", "110105\u3000194912310\u201302X"]


@pytest.fixture
def keyed_api(db_url: str, tmp_path: Path) -> Iterator[Served]:
    key = tmp_path / "customer-key"
    key.write_bytes(SECRET + b"\n")
    key.chmod(0o600)
    config = tmp_path / "collector.toml"
    config.write_text(f'[customers]\nkey_file = "{key}"\n')
    with served(tmp_path / "collector", db_url, config=config) as s:
        yield s


def _post(api: Served, token: str, records: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(api.url + BUSINESS_EVENTS_PATH, json={"records": records},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _bodies(api: Served) -> list[dict[str, object]]:
    return [json.loads(r["body"]) for r in api.stored().values()]


def test_a_customer_written_any_way_is_stored_as_the_proxys_key_and_never_in_clear(keyed_api: Served) -> None:
    token = credentials.create(keyed_api.engine, "lending", "source")
    proxy_key = hash_key(SECRET, "11010519491231002X")  # what the proxy computes for the column value
    records = [{"type": "loan_application", "ts": "2026-11-20T10:0%d:00Z" % i, "ref": f"LA-{i}", "customer": v,
                "application_id": f"LA-{i}", "amount": 12000, "new_device": True} for i, v in enumerate(VARIANTS)]
    records.append({"type": "fraud_confirmed", "ts": "2026-11-24T09:00:00Z", "ref": "FR-1",
                    "customer_key": proxy_key.upper(), "case_id": "FR-1"})

    ack = _post(keyed_api, token, records).json()

    assert ack == {"accepted": len(records), "duplicates": 0, "rejected": []}
    bodies = _bodies(keyed_api)
    assert {b["payload"]["customer_key"] for b in bodies} == {proxy_key}  # type: ignore[index]
    assert proxy_key == CustomerKeyHasher(SECRET).hash(CANONICAL)
    assert {b["kind"] for b in bodies} == {"business.loan_application", "business.fraud_confirmed"}
    assert all(b["source"] == {"type": "business", "name": "lending"} for b in bodies)
    stored = json.dumps([dict(r) for r in keyed_api.stored().values()], default=str)
    for clear in (CANONICAL, "19491231", "１９４９"):
        assert clear not in stored


def test_bad_records_are_refused_one_by_one_naming_the_field_and_resent_ones_stored_once(
        keyed_api: Served) -> None:
    token = credentials.create(keyed_api.engine, "lending", "source")
    good = {"type": "contact_change", "ts": "2026-11-20T10:00:00Z", "ref": "CC-1", "customer": "42",
            "field": "phone"}
    records = [good,
               {"type": "loan_application", "ts": "2026-11-20T10:00:00Z", "customer": "42",
                "application_id": "A", "amount": "lots"},
               {"type": "contact_change", "ts": "2026-11-20T10:00:00", "customer": "42", "field": "phone"},
               {"type": "contact_change", "ts": "2026-11-20T10:00:00Z", "field": "phone"},
               {"type": "contact_change", "ts": "2026-11-20T10:00:00Z", "customer_key": "abc", "field": "phone"},
               {"type": "wire_transfer", "ts": "2026-11-20T10:00:00Z", "customer": "42"},
               {"type": "device_login", "ts": "2026-11-20T10:00:00Z", "customer": "42", "device_id": "d",
                "colour": "red"}]

    ack = _post(keyed_api, token, records).json()

    assert ack["accepted"] == 1
    reasons = {r["index"]: r["reason"] for r in ack["rejected"]}
    assert reasons[1].startswith("amount:")
    assert reasons[2].startswith("ts:") and "zone" in reasons[2]
    assert reasons[3].startswith("customer:") and "customer_key" in reasons[3]
    assert reasons[4].startswith("customer_key:")
    assert reasons[5].startswith("type:") and "loan_application" in reasons[5]
    assert reasons[6].startswith("colour:")
    assert _post(keyed_api, token, [good]).json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert len(keyed_api.stored()) == 1


def test_only_business_source_credentials_may_send_records(keyed_api: Served) -> None:
    record = {"type": "contact_change", "ts": "2026-11-20T10:00:00Z", "customer": "42", "field": "email"}
    for token in (keyed_api.agent_token, keyed_api.api_token):
        answer = _post(keyed_api, token, [record])
        assert answer.status_code == 403 and "custos sources enroll" in answer.json()["detail"]
    assert _post(keyed_api, "cst_" + "x" * 43, [record]).status_code == 401
    assert httpx.post(keyed_api.url + BUSINESS_EVENTS_PATH, content=b'{"events": []}',
                      headers={"Authorization": f"Bearer {credentials.create(keyed_api.engine, 's', 'source')}",
                               "Content-Type": "application/json"}, timeout=30).status_code == 400
    assert keyed_api.stored() == {}


def test_without_a_customer_key_clear_identifiers_are_refused_and_hashed_ones_kept(
        sqlite_api: Served) -> None:
    token = credentials.create(sqlite_api.engine, "lending", "source")
    hashed = CustomerKeyHasher(SECRET).hash("42")
    ack = _post(sqlite_api, token, [
        {"type": "fraud_confirmed", "ts": "2026-11-20T10:00:00Z", "customer": "42", "case_id": "C1"},
        {"type": "fraud_confirmed", "ts": "2026-11-20T10:00:00Z", "customer_key": hashed, "case_id": "C1"}]).json()
    assert ack["accepted"] == 1
    assert ack["rejected"][0]["index"] == 0 and "CUSTOS_CUSTOMER_KEY_SECRET" in ack["rejected"][0]["reason"]


def test_the_csv_import_keeps_good_rows_and_names_the_line_and_field_of_bad_ones(sqlite_url: str,
                                                                                  tmp_path: Path) -> None:
    from collector.db import make_engine
    from collector.migrate import upgrade
    from collector.store import EventStore

    engine = make_engine(sqlite_url)
    upgrade(engine)
    csv_file = tmp_path / "lending.csv"
    csv_file.write_text(
        "type,ts,ref,customer,customer_key,application_id,amount,new_device,case_id\n"
        "loan_application,2026-11-20T10:00:00Z,LA-1, 110105 19491231 002X ,,LA-1,12000,true,\n"
        "loan_application,2026-11-20T10:00:00Z,LA-2,42,,LA-2,twelve,true,\n"
        f"fraud_confirmed,2026-11-24T10:00:00Z,FR-1,,{CustomerKeyHasher(SECRET).hash(CANONICAL)},,,,FR-1\n",
        encoding="utf-8")
    env = base_env(CUSTOS_DATABASE_URL=sqlite_url, CUSTOS_CUSTOMER_KEY_SECRET=SECRET.decode())
    proc = subprocess.run([sys.executable, "-m", "collector", "import", "business-events", str(csv_file),
                           "--source", "lending-nightly"], env=env, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 1, proc.stderr
    assert f"{csv_file}:3: amount:" in proc.stderr
    assert "2 records stored, 0 already stored, 1 refused" in proc.stdout
    rows = EventStore(engine).query(kind="business.*")
    keys = {json.loads(r.body)["payload"]["customer_key"] for r in rows}
    assert keys == {CustomerKeyHasher(SECRET).hash(CANONICAL)}
    assert {r.agent for r in rows} == {"lending-nightly"}
    again = subprocess.run([sys.executable, "-m", "collector", "import", "business-events", str(csv_file),
                            "--source", "lending-nightly"], env=env, capture_output=True, text=True, timeout=120)
    assert "0 records stored, 2 already stored, 1 refused" in again.stdout
    engine.dispose()
