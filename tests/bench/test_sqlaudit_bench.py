"""The SQL analysis benchmark runs as documented and reports every path against its baseline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sqlaudit_benchmark_quick_run_reports_every_path() -> None:
    done = subprocess.run(
        [sys.executable, "bench/sqlaudit.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == [
        "baseline: bare sqlglot.parse_one",
        "cold: new shape, full analysis",
        "shape cached, new literal values",
        "exact text repeated",
        "lexer alone (redaction + split)",
        "pgbench -M simple statements, cached",
        "customer key HMAC (normalise + hash)",
    ]
    assert all(float(row.split("|")[3].replace(",", "")) > 0 for row in rows[1:])
