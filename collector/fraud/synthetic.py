"""A synthetic bank for the common-point-of-compromise ranking: staff looking customers up over a month as
staff do, one insider who bulk-reads customers whose identities are then sold, and the fraud that follows.

Realistic enough to be a fair test: customers differ in how often they call (a heavy-tailed popularity), teams
look customers up at different rates, risk analysts read thousands of customers in portfolio queries, fraud also
hits customers nobody inside leaked (phishing), and victims call the bank after the fraud, so the staff who
take those calls read them too — after the hit, which must not count against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collector.fraud.cpc import FloatArray, IntArray, Reads

DAY = 86400.0
TEAMS = (("call_centre", 16, (60, 120)), ("loans", 10, (20, 40)), ("branch", 10, (15, 30)), ("risk", 4, (5, 15)))


@dataclass(frozen=True)
class SyntheticBank:
    staff: list[tuple[str, str]]  # (staff id, team), index = person index in `reads`
    customers: int
    reads: Reads
    fraud_customer: IntArray
    fraud_t: FloatArray
    insider: int
    leaked: IntArray  # the customers the insider bulk-read
    victims: IntArray  # those of them later hit


def generate(seed: int, *, staff: int = 40, days: int = 30, customers: int = 100_000, bulk: int = 2_000,
             victims: int = 150, background_fraud: int = 100, start: float = 1_790_000_000.0) -> SyntheticBank:
    """The bank's month: `staff` people (team sizes scaled from TEAMS), one of them in the call centre the
    insider; `bulk` customers read by the insider on days 2–6, `victims` of them hit 1–20 days after their read."""
    rng = np.random.default_rng(seed)
    popularity = rng.pareto(1.2, customers) + 0.05
    cdf = np.cumsum(popularity / popularity.sum())
    scale = staff / sum(n for _, n, _ in TEAMS)
    people: list[tuple[str, str, tuple[int, int]]] = []
    for team, n, rate in TEAMS:
        for _ in range(max(1, round(n * scale))):
            people.append((f"{team[:2]}{len(people):03d}", team, rate))
    people = people[:staff]
    call_centre = [i for i, p in enumerate(people) if p[1] == "call_centre"]
    insider = int(rng.choice(call_centre))

    who: list[IntArray] = []
    whom: list[IntArray] = []
    when: list[FloatArray] = []

    def add(person: int, custs: IntArray, times: FloatArray) -> None:
        who.append(np.full(len(custs), person, dtype=np.int64))
        whom.append(custs.astype(np.int64))
        when.append(times)

    for day in range(days):
        weekend = (day % 7) in (5, 6)
        day0 = start + day * DAY
        for i, (_, team, (lo, hi)) in enumerate(people):
            if weekend and team != "call_centre":
                continue
            n = int(rng.integers(lo, hi + 1)) // (3 if weekend else 1)
            add(i, np.minimum(np.searchsorted(cdf, rng.random(n)), customers - 1), day0 + rng.uniform(8, 18, n) * 3600)
            if team == "risk" and day % 7 == 1:  # the weekly portfolio query: thousands of customers at once
                m = int(rng.integers(1_000, 4_000))
                add(i, rng.choice(customers, m, replace=False), np.full(m, day0 + rng.uniform(9, 17) * 3600))

    leaked = rng.choice(customers, bulk, replace=False).astype(np.int64)
    leak_t = start + rng.integers(2, 7, bulk) * DAY + rng.uniform(9, 17, bulk) * 3600
    add(insider, leaked, leak_t)

    pick = rng.choice(bulk, victims, replace=False)
    hit_victims = leaked[pick]
    hit_t = leak_t[pick] + rng.uniform(1, 20, victims) * DAY
    others = rng.choice(customers, background_fraud, replace=False).astype(np.int64)  # phishing: anyone
    others_t = start + rng.uniform(0, days, background_fraud) * DAY
    fraud_customer = np.concatenate([hit_victims, others])
    fraud_t = np.concatenate([hit_t, others_t])
    # Victims call in after the fraud; whoever takes the call reads them.
    callers = rng.choice(call_centre, len(fraud_customer))
    for c, t, person in zip(fraud_customer, fraud_t, callers):
        add(int(person), np.array([c]), np.array([t + rng.uniform(0.1, 2) * DAY]))

    reads = Reads(np.concatenate(who), np.concatenate(whom), np.concatenate(when))
    return SyntheticBank([(p[0], p[1]) for p in people], customers, reads, fraud_customer, fraud_t, insider,
                         leaked, hit_victims)
