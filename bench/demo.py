"""How long the demo takes, and what the real path costs over the engine alone on the same events.

    PYTHONPATH=. python -m bench.demo [--seed 1] [--repeat 2]

Baseline, measured in the same run: generating the bank and evaluating its events in this process with the rule
engine (rules.scenario.replay_scenario), which is what any replay pays. The demo adds starting a collector and
five agents, spooling, shipping over HTTP, storing in SQLite and the rule worker. Both are wall time: the demo's
cost is mostly waiting on other processes, which CPU time of this one would not see.
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import time

from collector.demo import build_bank, run_demo
from rules.parse import load_rules
from rules.scenario import replay_scenario


def engine_alone(seed: int) -> float:
    began = time.perf_counter()
    bank = build_bank(seed)
    replay_scenario(bank.scenario, load_rules())
    return time.perf_counter() - began


def demo(seed: int) -> tuple[float, dict[str, float], int]:
    out = io.StringIO()
    began = time.perf_counter()
    status = run_demo(seed=seed, serve=False, out=out)
    total = time.perf_counter() - began
    text = out.getvalue()
    rules = re.search(r"\[6/6\] rules .*; ([\d.]+) s since the start", text)
    stages = {"until every event is evaluated": float(rules.group(1)) if rules else float("nan")}
    return total, stages, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    base = [engine_alone(args.seed) for _ in range(args.repeat)]
    runs = [demo(args.seed) for _ in range(args.repeat)]
    b = statistics.median(base)
    d = statistics.median(r[0] for r in runs)
    evaluated = statistics.median(r[1]["until every event is evaluated"] for r in runs)
    print(f"baseline (generate + engine in process): {b:.1f} s (median of {args.repeat})")
    print(f"custos demo --no-serve: {d:.1f} s in all, {evaluated:.1f} s until every event was stored and evaluated "
          f"(median of {args.repeat}); exit statuses {[r[2] for r in runs]}")
    print(f"demo / baseline = {d / b:.1f}")


if __name__ == "__main__":
    main()
