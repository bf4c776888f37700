"""Benchmark of the shared SQL analysis (agent/sqlaudit): cold parse against the two caches.

    PYTHONPATH=. /work/venv/bin/python bench/sqlaudit.py [--shapes 300] [--repeat 20000] [--quick]

Baseline, measured in the same run on the same statements: one bare `sqlglot.parse_one` per statement, the
least any per-statement parser would pay. Figures are statements per second (wall), CPU microseconds per
statement (process time), and each path's speed as a ratio to the baseline's, from CPU time.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlglot  # noqa: E402

from agent.customer_keys import CustomerKeyHasher  # noqa: E402
from agent.sqlaudit import Analyser, Catalogue, SensitiveMap  # noqa: E402
from agent.sqlaudit.lexer import scan  # noqa: E402

TABLES = {
    "customers": ["id", "name", "ssn", "phone", "email", "address", "balance", "created_at"],
    "accounts": ["id", "customer_id", "iban", "opened", "status", "balance"],
    "cards": ["id", "customer_id", "pan", "expires", "status"],
    "loans": ["id", "customer_id", "amount", "rate", "status", "applied_at"],
    "branches": ["id", "name", "city"],
}
SENSITIVE = SensitiveMap.of({
    "public.customers.ssn": "id_number", "public.customers.name": "name", "public.customers.phone": "phone",
    "public.customers.address": "address", "public.cards.pan": "bank_card", "public.accounts.iban": "bank_card",
})
CATALOGUE = Catalogue.of({f"public.{t}": cols for t, cols in TABLES.items()})


def literal(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return str(rng.randrange(10**9))
    if kind == 1:
        return "'" + "".join(rng.choice("abcdefghij0123456789 -") for _ in range(rng.randrange(4, 20))) + "'"
    return f"{rng.randrange(10**6)}.{rng.randrange(100)}"


def shape(rng: random.Random) -> Callable[[random.Random], str]:
    """One statement shape: a function that fills it with new literals each call."""
    table = rng.choice(list(TABLES))
    cols = rng.sample(TABLES[table], rng.randrange(1, 4))
    other = rng.choice([t for t in TABLES if t != table])
    kind = rng.randrange(6)
    if kind == 0:
        return lambda r: f"SELECT {', '.join(cols)} FROM {table} WHERE id = {literal(r)}"
    if kind == 1:
        return lambda r: (f"SELECT t.{cols[0]}, o.id FROM {table} t JOIN {other} o ON o.id = t.id "
                          f"WHERE t.{cols[-1]} > {literal(r)} ORDER BY 1 LIMIT {r.randrange(1, 100)}")
    if kind == 2:
        return lambda r: (f"SELECT {cols[0]} FROM {table} WHERE id IN ("
                          + ", ".join(literal(r) for _ in range(r.randrange(1, 30))) + ")")
    if kind == 3:
        return lambda r: (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ("
                          + ", ".join(literal(r) for _ in cols) + ")")
    if kind == 4:
        return lambda r: f"UPDATE {table} SET {cols[0]} = {literal(r)} WHERE id = {literal(r)}"
    return lambda r: (f"WITH recent AS (SELECT * FROM {table} WHERE id > {literal(r)}) "
                      f"SELECT count(*), max({cols[0]}) FROM recent /*custos_user='u{r.randrange(50)}'*/")


PGBENCH = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};",
    "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);",
]


@dataclass(frozen=True)
class Figure:
    name: str
    statements: int
    wall_s: float
    cpu_s: float

    @property
    def per_second(self) -> float:
        return self.statements / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.statements * 1e6


def measure(name: str, work: Callable[[str], object], statements: Sequence[str]) -> Figure:
    wall, cpu = time.perf_counter(), time.process_time()
    for sql in statements:
        work(sql)
    return Figure(name, len(statements), time.perf_counter() - wall, time.process_time() - cpu)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=300, help="distinct statement shapes (cold parses)")
    parser.add_argument("--repeat", type=int, default=20000, help="statements in each cached run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a small run that only checks the benchmark works")
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes, args.repeat = 20, 500
    rng = random.Random(args.seed)
    shapes = [shape(rng) for _ in range(args.shapes)]
    first = [s(rng) for s in shapes]  # one text per shape: every one a structure-cache miss
    fresh = [shapes[i % len(shapes)](rng) for i in range(args.repeat)]  # new literals: structure-cache hits
    pgbench = [PGBENCH[i % 3].format(aid=rng.randrange(1, 10**6), delta=rng.randrange(-5000, 5000),
                                     tid=rng.randrange(1, 10), bid=rng.randrange(1, 2)) for i in range(args.repeat)]

    baseline = measure("baseline: bare sqlglot.parse_one", lambda s: sqlglot.parse_one(s, read="postgres"),
                       fresh[: max(50, args.repeat // 20)])
    analyser = Analyser("postgres", sensitive=SENSITIVE, catalogue=CATALOGUE)
    figures = [
        baseline,
        measure("cold: new shape, full analysis", analyser.analyse, first),
        measure("shape cached, new literal values", analyser.analyse, fresh),
        measure("exact text repeated", analyser.analyse, [fresh[i % 64] for i in range(args.repeat)]),
        measure("lexer alone (redaction + split)", lambda s: scan(s, False), fresh),
    ]
    pg = Analyser("postgres")
    pg.analyse(pgbench[0]), pg.analyse(pgbench[1]), pg.analyse(pgbench[2])
    figures.append(measure("pgbench -M simple statements, cached", pg.analyse, pgbench))
    if analyser.errors:
        print(f"the analyser failed on {analyser.errors} statements", file=sys.stderr)
        return 1
    hasher = CustomerKeyHasher(b"k" * 32)
    ids = [f"1101051949{rng.randrange(10**8):08d}" for _ in range(args.repeat)]
    key_figure = measure("customer key HMAC (normalise + hash)", hasher.hash, ids)

    # Ratios use CPU time: on a shared machine it is steadier than wall time, and the work is single-threaded.
    print("| path | statements | statements/s (wall) | CPU µs/statement | speed × baseline (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for f in figures + [key_figure]:
        ratio = baseline.cpu_us / f.cpu_us if f.cpu_us else float("inf")
        print(f"| {f.name} | {f.statements} | {f.per_second:,.0f} | {f.cpu_us:,.1f} | {ratio:,.1f} |")
    print(f"\nstructure cache: {analyser.structures.misses} misses, {analyser.structures.hits} hits; "
          f"text cache: {analyser.texts.hits} hits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
