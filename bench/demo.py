"""How long the demo takes, and what the real path costs over the engine alone on the same events.

    PYTHONPATH=. python -m bench.demo [--seed 1] [--repeat 2] [--pg DSN]

Baseline, measured in the same run: generating the bank and evaluating its events in this process with the rule
engine (rules.scenario.replay_scenario), which is what any replay pays. The demo adds starting a collector and
five agents, spooling, shipping over HTTP, storing in SQLite and the rule worker. Both are wall time: the demo's
cost is mostly waiting on other processes, which CPU time of this one would not see.

With --pg DSN the demo also runs with the database part through the real proxy (`custos demo --pg`), against the
plain demo of the same run: its statements through the proxy per second (wall), and CPU seconds of the whole run
(this process and its children: the proxy, agents and collector) beside those of the plain demo.
"""

from __future__ import annotations

import argparse
import io
import re
import resource
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


def cpu() -> float:
    """CPU seconds of this process and of its children that have exited."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def demo(seed: int, pg: str | None = None) -> tuple[float, dict[str, float], int]:
    out = io.StringIO()
    began, cpu_began = time.perf_counter(), cpu()
    status = run_demo(seed=seed, serve=False, out=out, pg=pg)
    total = time.perf_counter() - began
    text = out.getvalue()
    rules = re.search(r"\[\d/\d\] rules .*; ([\d.]+) s since the start", text)
    stages = {"until every event is evaluated": float(rules.group(1)) if rules else float("nan"),
              "cpu": cpu() - cpu_began}
    proxy = re.search(r"\] proxy +([\d,]+) statements sent through custos-agent proxy \(pid \d+\) in (\d+) s", text)
    if proxy:
        stages["statements"] = float(proxy.group(1).replace(",", ""))
        stages["proxy stage"] = float(proxy.group(2))
    return total, stages, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--pg", metavar="DSN", help="also run `custos demo --pg DSN` and compare it with the plain demo")
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
    if args.pg:
        pg_runs = [demo(args.seed, args.pg) for _ in range(args.repeat)]
        p = statistics.median(r[0] for r in pg_runs)
        stage = statistics.median(r[1]["proxy stage"] for r in pg_runs)
        n = pg_runs[0][1]["statements"]
        plain_cpu = statistics.median(r[1]["cpu"] for r in runs)
        pg_cpu = statistics.median(r[1]["cpu"] for r in pg_runs)
        print(f"custos demo --no-serve --pg: {p:.1f} s in all (median of {args.repeat}); exit statuses "
              f"{[r[2] for r in pg_runs]}; database stage (tables, {n:,.0f} statements through the proxy, reading "
              f"its events back) {stage:.0f} s = {n / stage:,.0f} statements/s")
        print(f"CPU s, whole run with children: plain {plain_cpu:.1f}, --pg {pg_cpu:.1f}; the difference per "
              f"statement {1000 * (pg_cpu - plain_cpu) / n:.2f} ms")
        print(f"demo --pg / demo = {p / d:.1f}")


if __name__ == "__main__":
    main()
