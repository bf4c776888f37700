"""The collector's OpenAPI document is valid, and schemathesis, generating requests from it against the real
served app with real credentials, finds no server error and no answer that the document does not describe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from agent.events import KINDS
from tests.helpers.api import EVENTS, Served

MAX_EXAMPLES = 100  # per operation; with the coverage phase this is about 3000 requests in under a minute


def test_the_openapi_document_is_valid_and_describes_every_event_kind(sqlite_api: Served) -> None:
    doc = httpx.get(sqlite_api.url + "/openapi.json", timeout=10).json()

    validate(doc)  # raises naming the first thing wrong
    schemas = doc["components"]["schemas"]
    batch_ref = doc["paths"][EVENTS]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    items = schemas[batch_ref.rsplit("/", 1)[1]]["properties"]["events"]["items"]
    assert set(items["discriminator"]["mapping"]) == set(KINDS)
    for ref in items["discriminator"]["mapping"].values():
        assert ref.rsplit("/", 1)[1] in schemas
    assert doc["components"]["securitySchemes"]["bearer"] == {**doc["components"]["securitySchemes"]["bearer"],
                                                              "type": "http", "scheme": "bearer"}
    for method in ("get", "post"):
        assert doc["paths"][EVENTS][method]["security"] == [{"bearer": []}]
        assert {"401", "403", "503"} <= set(doc["paths"][EVENTS][method]["responses"])


def _schemathesis_config(path: Path, api: Served) -> Path:
    # Each operation gets the credential that may use it; answers without one are fuzzed too (ignored_auth).
    # The ingest endpoint takes a batch whose events break the schema and answers 200 listing each refused
    # event: that is its contract, so "schema-violating request accepted" does not apply to it.
    path.write_text(f"""
[[operations]]
include-name = "POST {EVENTS}"
headers = {{ Authorization = "Bearer {api.agent_token}" }}
checks.negative_data_rejection.enabled = false

[[operations]]
include-name = "GET {EVENTS}"
headers = {{ Authorization = "Bearer {api.api_token}" }}

[[operations]]
include-path-regex = "^/api/v1/(alerts|summaries|attestations)"
headers = {{ Authorization = "Bearer {api.api_token}" }}
""")
    return path


@pytest.mark.slow  # about a minute per database on a busy 2-core machine
def test_schemathesis_finds_no_server_error_and_every_answer_conforms(api: Served, tmp_path: Path) -> None:
    config = _schemathesis_config(tmp_path / "schemathesis.toml", api)
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config), "run",
         f"{api.url}/openapi.json", "--max-examples", str(MAX_EXAMPLES),
         # One worker: with two threads, CPython 3.11's ast module (used by hypothesis to describe its
         # strategies) can raise "AST constructor recursion depth mismatch" inside the fuzzer itself.
         "--workers", "1",
         "--request-timeout", "30", "--generation-database", "none",
         # Every check is on by default; health checks judge the generator (too slow on a busy machine), not the API.
         "--suppress-health-check", "all"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    (tmp_path / "schemathesis.log").write_text(proc.stdout + proc.stderr)
    start = max(proc.stdout.find("FAILURES"), proc.stdout.find("ERRORS"), 0)
    report = proc.stdout[start:start + 8000] + proc.stderr[-2000:]

    assert proc.returncode == 0, report
    # Warnings (operations that answered 404 for made-up alert ids) are not failures; failures and errors are.
    assert " FAILURES " not in proc.stdout and " ERRORS " not in proc.stdout, report
    assert "generated" in proc.stdout and " passed" in proc.stdout, report
    metrics = httpx.get(api.url + "/metrics", timeout=10).text
    accepted = next(float(line.split()[-1]) for line in metrics.splitlines()
                    if line.startswith('custos_ingest_events_total{result="accepted"}'))
    assert accepted > 0, "no generated event reached the store: the fuzzing did not get past validation"
    assert api.stored()  # and they are in the database
