"""Common-point-of-compromise ranking at bank scale: 10 million read records, 5,000 fraud customers.

    PYTHONPATH=. python -m bench.fraud [--reads 10000000] [--frauds 5000] [--people 4000] [--customers 2000000]

A month of reads by `--people` staff over `--customers` customers (heavy-tailed popularity), one insider among
them who read 20,000 customers, 3,000 of whom are among the fraud customers; the rest of the frauds fall on
anyone. Measured: wall and CPU time of `collector.fraud.cpc.rank` and its peak memory (numpy's allocations,
traced), and the process's peak RSS. Baseline in the same run: one `np.sort` of the 10 million (person, customer)
pair keys, the least any exact distinct count costs; and a dict-per-record count on a tenth of the records, to
show what array counting saves. Targets (issue 7): under 30 s and 2 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np

from collector.fraud.cpc import Reads, rank

DAY = 86400.0


def make(reads: int, frauds: int, people: int, customers: int, seed: int = 1) -> tuple[Reads, np.ndarray,
                                                                                      np.ndarray, int]:
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(rng.pareto(1.2, customers) + 0.05)
    cdf /= cdf[-1]
    leaked = rng.choice(customers, 20_000, replace=False)
    n = reads - len(leaked)
    person = np.concatenate([rng.integers(1, people, n), np.zeros(len(leaked), dtype=np.int64)])
    customer = np.concatenate([np.minimum(np.searchsorted(cdf, rng.random(n)), customers - 1), leaked])
    t = np.concatenate([rng.uniform(0, 30 * DAY, n), rng.uniform(2 * DAY, 6 * DAY, len(leaked))])
    victims = rng.choice(leaked, 3_000, replace=False)
    others = rng.choice(customers, frauds - len(victims), replace=False)
    fraud_customer = np.concatenate([victims, others]).astype(np.int64)
    fraud_t = np.concatenate([rng.uniform(7 * DAY, 30 * DAY, len(victims)),
                              rng.uniform(0, 30 * DAY, len(others))])
    return Reads(person.astype(np.int64), customer.astype(np.int64), t), fraud_customer, fraud_t, 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=10_000_000)
    ap.add_argument("--frauds", type=int, default=5_000)
    ap.add_argument("--people", type=int, default=4_000)
    ap.add_argument("--customers", type=int, default=2_000_000)
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    began = time.perf_counter()
    reads, fraud_customer, fraud_t, insider = make(args.reads, args.frauds, args.people, args.customers)
    print(f"generated {len(reads.t):,} reads, {len(fraud_customer):,} fraud customers in "
          f"{time.perf_counter() - began:.1f} s")

    pair = reads.person * args.customers + reads.customer
    wall, cpu = time.perf_counter(), time.process_time()
    np.sort(pair)
    sort_wall, sort_cpu = time.perf_counter() - wall, time.process_time() - cpu
    del pair

    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    ranking = rank(reads, fraud_customer, fraud_t, lookback=30 * DAY)
    rank_wall, rank_cpu = time.perf_counter() - wall, time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    first = ranking.ranked[0]

    tenth = len(reads.t) // 10
    wall, cpu = time.perf_counter(), time.process_time()
    distinct: dict[tuple[int, int], float] = {}
    for p, c, t in zip(reads.person[:tenth].tolist(), reads.customer[:tenth].tolist(), reads.t[:tenth].tolist()):
        if distinct.get((p, c), np.inf) > t:
            distinct[(p, c)] = t
    dict_wall, dict_cpu = time.perf_counter() - wall, time.process_time() - cpu

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = len(reads.t)
    print(f"rank:      {rank_wall:6.2f} s wall, {rank_cpu:6.2f} s CPU ({rank_cpu / n * 1e9:.0f} ns CPU per read), "
          f"peak traced memory {peak / 2**20:,.0f} MiB; process peak RSS {rss:,.0f} MiB")
    print(f"baseline:  np.sort of the pair keys {sort_wall:.2f} s wall, {sort_cpu:.2f} s CPU; "
          f"rank/sort = {rank_cpu / sort_cpu:.1f}")
    print(f"dict:      a dict per (person, customer) over {tenth:,} reads: {dict_cpu:.2f} s CPU "
          f"({dict_cpu / tenth * 1e9:.0f} ns per read), {dict_cpu * 10 / rank_cpu:.0f}x the array ranking "
          "if it scaled linearly (it would also need the rest of the ranking)")
    print(f"result:    {ranking.people:,} people, N = {ranking.population:,} customers read, K = {ranking.frauds:,}; "
          f"first: person {first.person} ({'the insider' if first.person == insider else 'NOT the insider'}) "
          f"k = {first.hit:,} of n = {first.read:,}, p = {first.p:.1e}; next p = {ranking.ranked[1].p:.1e}")
    print(f"targets:   time {'met' if rank_wall < 30 else 'MISSED'} (< 30 s), memory "
          f"{'met' if max(peak / 2**20, rss) < 2048 else 'MISSED'} (< 2 GB)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
