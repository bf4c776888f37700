"""The staff-agent benchmark runs end to end (short windows): figures are produced and no file event is lost.

The figures themselves are not asserted here: speed is measured by the benchmark, not by timed tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.procs import ROOT, base_env


def test_the_staff_agent_benchmark_measures_both_agents_and_loses_no_file_event(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "agent_idle.py"), "--warmup", "1", "--idle", "3", "--load", "3",
         "--rate", "50", "--json", str(out)],
        env=base_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    figures = json.loads(out.read_text())
    assert set(figures["idle"]) == {"baseline", "staff"}
    assert figures["files_written"] >= 100
    assert figures["file_exports_at_collector"] == figures["files_written"]
    assert 0 < figures["idle"]["staff"]["rss_max_mb"] < 1024
    assert "targets (RSS <=" in proc.stdout
