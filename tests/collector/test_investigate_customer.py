"""Victim-centric look-up and evidence export, on a real store through the real command line."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.customer_keys import CustomerKeyHasher
from agent.events import (Actor, DbQuery, DbQueryPayload, FileExport, FileExportPayload, FraudConfirmed,
                          FraudConfirmedPayload, Source, new_event)
from collector.alerts import AlertStore
from collector.db import audit_log, make_engine
from collector.migrate import upgrade
from collector.rules_state import import_directory
from collector.store import EventStore
from rules.alerts import Alert
from rules.identity import Person
from tests.helpers.procs import base_env

SECRET = "investigate-test-key-0123456789abcdef"
CUSTOMER = "390101000123X"
T0 = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=20)


def _query(who: str, when: dt.datetime, keys: list[str], fingerprint: str) -> DbQuery:
    return new_event(DbQuery, DbQueryPayload(  # type: ignore[return-value]
        session_id=f"s-{who}", statement_type="SELECT", fingerprint=fingerprint,
        statement="SELECT full_name, phone FROM customers WHERE customer_id = ANY($1)", rows=len(keys),
        customer_keys=keys, database="core"), source=Source(type="proxy", name="pg"),
        actor=Actor(db_user=who), host="db01", ts=when)


def _export(who: str, when: dt.datetime, path: str, destination: str) -> FileExport:
    return new_event(FileExport, FileExportPayload(  # type: ignore[return-value]
        path=path, action="created", size=4096, destination=destination, counts={"phone": 180}),
        source=Source(type="staff", name="ws"), actor=Actor(os_user=who), host=f"ws-{who}", ts=when)


@pytest.fixture
def site(db_url: str) -> Iterator[dict[str, object]]:
    engine = make_engine(db_url)
    upgrade(engine)
    import_directory(engine, [Person("alice", "Alice Berg", "loans", db_users=("alice",), os_users=("alice",)),
                              Person("bob", "Bob Kalns", "loans", db_users=("bob",), os_users=("bob",))])
    hasher = CustomerKeyHasher(SECRET.encode())
    key = hasher.hash(CUSTOMER)
    others = [hasher.hash(f"390101{i:06d}X") for i in range(200, 380)]
    alice_read = _query("alice", T0, [key] + others, "fp-bulk-0001")
    events = [alice_read,
              _query("bob", T0 + dt.timedelta(days=1), [key], "fp-point-0002"),
              _query("carol", T0 - dt.timedelta(days=200), [key], "fp-old"),
              _export("alice", T0 + dt.timedelta(hours=2), "/media/usb/phones.csv", "removable"),
              _export("bob", T0 + dt.timedelta(days=4), "/home/bob/report.xlsx", "local"),
              new_event(FraudConfirmed, FraudConfirmedPayload(customer_key=key, case_id="FR-9",
                                                              confirmed_on=(T0 + dt.timedelta(days=6)).date()),
                        source=Source(type="business", name="lending"), host="lending",
                        ts=T0 + dt.timedelta(days=6))]
    EventStore(engine).insert(events, agent="test")
    yield {"engine": engine, "key": key, "alice_read": alice_read.id, "url": db_url}
    engine.dispose()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True, timeout=120,
                          env=base_env(CUSTOS_DATABASE_URL=url, CUSTOS_CUSTOMER_KEY_SECRET=SECRET))


def test_a_customer_typed_any_way_lists_its_readers_and_the_copy_to_usb_that_followed(site: dict) -> None:
    out = _cli(site["url"], "investigate", "customer", " 390101-000123 x ").stdout  # type: ignore[arg-type]
    lines = out.splitlines()
    assert "2 by 2 people" in lines[0] and site["key"][:16] in lines[0]  # type: ignore[index]
    assert any("fraud_confirmed  FR-9" in line for line in lines)
    alice = next(line for line in lines if "Alice Berg" in line)
    assert "fp-bulk-0001" in alice and " 181 " in alice
    assert any("Bob Kalns" in line and "fp-point-0002" in line for line in lines)
    assert "carol" not in out  # read 200 days ago: outside the 90 days
    (then,) = [line for line in lines if line.startswith("then ")]
    assert "alice" in then and "/media/usb/phones.csv (removable)" in then and "2.0 h after" in then
    assert CUSTOMER not in out and "390101" not in out


def test_a_fraud_case_or_a_key_finds_the_same_readers(site: dict) -> None:
    period = ("--since", (T0 - dt.timedelta(days=30)).isoformat(), "--until", (T0 + dt.timedelta(days=30)).isoformat())
    by_case = _cli(site["url"], "investigate", "customer", "--case", "FR-9", *period).stdout  # type: ignore[arg-type]
    by_key = _cli(site["url"], "investigate", "customer", "--key", site["key"],  # type: ignore[arg-type]
                  *period).stdout
    assert by_case == by_key and "Alice Berg" in by_case and "Bob Kalns" in by_case
    missing = _cli(site["url"], "investigate", "customer", "--case", "FR-404")  # type: ignore[arg-type]
    assert missing.returncode == 2 and "no confirmed fraud with case id 'FR-404'" in missing.stderr


def test_an_evidence_export_holds_the_case_its_events_and_a_manifest_that_checks(site: dict,
                                                                                  tmp_path: Path) -> None:
    engine = site["engine"]
    alert = Alert(alert_id="a" * 32, rule_id="custos.read_then_fraud", title="Read then fraud", severity="high",
                  tags=("T1213",), group="alice", ts=T0 + dt.timedelta(days=6), first_ts=T0,
                  last_ts=T0 + dt.timedelta(days=6), summary="Alice Berg read 3 customers …",
                  evidence=(site["alice_read"],), staff_id="alice", person_name="Alice Berg", team="loans")
    AlertStore(engine).save([alert])  # type: ignore[arg-type]
    out = tmp_path / "case.zip"

    done = _cli(site["url"], "evidence", "export", "--case", "a" * 32, "--out", str(out))  # type: ignore[arg-type]

    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        assert names == {"alerts.json", "evidence.jsonl", "activity.jsonl", "person.json", "README.txt",
                         "MANIFEST.sha256"}
        manifest = z.read("MANIFEST.sha256").decode().splitlines()
        assert len(manifest) == 5
        for line in manifest:
            digest, name = line.split("  ")
            assert hashlib.sha256(z.read(name)).hexdigest() == digest
        assert json.loads(z.read("alerts.json"))[0]["alert_id"] == "a" * 32
        (cited,) = [json.loads(x) for x in z.read("evidence.jsonl").decode().splitlines()]
        assert cited["id"] == site["alice_read"]
        activity = [json.loads(x) for x in z.read("activity.jsonl").decode().splitlines()]
        assert {e["kind"] for e in activity} == {"db.query", "file.export"}
        assert {e["actor"].get("db_user") or e["actor"].get("os_user") for e in activity} == {"alice"}
        manifest_hash = hashlib.sha256(z.read("MANIFEST.sha256")).hexdigest()
    assert manifest_hash in done.stdout
    with engine.connect() as conn:  # type: ignore[attr-defined]
        (row,) = conn.execute(select(audit_log).where(audit_log.c.action == "export")).mappings().all()
    assert row["subject_id"] == "a" * 32 and row["staff_id"] == "alice" and manifest_hash in row["detail"]
    again = _cli(site["url"], "evidence", "export", "--case", "a" * 32, "--out", str(out))  # type: ignore[arg-type]
    assert again.returncode == 2 and "exists already" in again.stderr
    unknown = _cli(site["url"], "evidence", "export", "--case", "nope", "--out",  # type: ignore[arg-type]
                   str(tmp_path / "x.zip"))
    assert unknown.returncode == 2 and "no alert or case 'nope'" in unknown.stderr
