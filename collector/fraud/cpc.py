"""Common point of compromise: which staff read the confirmed-fraud customers far more often than chance.

For each person, `n` is the number of distinct customers they read in the period and `k` how many of those were
later hit by fraud (read before the hit, within the look-back). Under the null hypothesis that a person's reads
have nothing to do with who gets hit, `k` follows the hypergeometric distribution of `n` draws from the `N`
customers anyone read, `K` of whom were hit; `p` is its upper tail P(X >= k). With forty or four thousand people
ranked, some innocent one will have a small `p` by chance, so `p_adj` (Bonferroni: `p` times the people ranked)
is what an alert is raised on.

Counting is done on arrays (numpy): 10 million read records cost a few sorts, not a Python object per read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.stats import hypergeom

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
NO_HIT = np.inf


@dataclass(frozen=True)
class Reads:
    """Read records as parallel arrays: who (person index), which customer (customer index), when (epoch s)."""

    person: IntArray
    customer: IntArray
    t: FloatArray

    def __post_init__(self) -> None:
        if not len(self.person) == len(self.customer) == len(self.t):
            raise ValueError("person, customer and t must be arrays of the same length")


@dataclass(frozen=True)
class Hit:
    customer: int
    read_t: float  # the first read by this person
    hit_t: float  # when the fraud hit the customer


@dataclass(frozen=True)
class Ranked:
    person: int  # index, as in Reads.person
    read: int  # n: distinct customers read
    hit: int  # k: of those, hit by fraud after the read
    share: float  # k / K: the share of all hit customers this person read
    lift: float  # (k / n) / (K / N): how many times the base rate
    p: float  # hypergeometric upper tail
    p_adj: float  # Bonferroni over the people ranked
    hits: tuple[Hit, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Ranking:
    population: int  # N: distinct customers anyone read
    frauds: int  # K: of those, hit by fraud
    people: int  # people who read anything (the Bonferroni factor)
    ranked: list[Ranked]


def first_reads(pair: IntArray, t: FloatArray) -> tuple[IntArray, FloatArray]:
    """Each distinct pair key once, in order, with the time of its first read.

    When the pair key and the time in whole seconds fit in 63 bits together, both go into one integer and one
    plain sort does it (times are rounded up to the second, so a read counts as before a hit only when it is);
    otherwise a slower stable sort by time, then each pair's first occurrence."""
    if len(pair) == 0:
        return pair, t
    t0 = float(np.floor(t.min()))
    span = int(np.ceil(t.max() - t0)) + 1
    pair_bits, time_bits = int(pair.max()).bit_length(), span.bit_length()
    if pair_bits + time_bits <= 63:
        packed = (pair << time_bits) | np.ceil(t - t0).astype(np.int64)
        packed.sort()
        keys = packed >> time_bits
        start = np.empty(len(keys), dtype=bool)
        start[0] = True
        np.not_equal(keys[1:], keys[:-1], out=start[1:])
        firsts = packed[start]
        return firsts >> time_bits, (firsts & ((1 << time_bits) - 1)).astype(np.float64) + t0
    order = np.argsort(t, kind="stable")
    keys, first = np.unique(pair[order], return_index=True)
    return keys, t[order][first]


def rank(reads: Reads, fraud_customer: IntArray, fraud_t: FloatArray, *, lookback: float | None = None,
         top: int = 20, detail: int = 20) -> Ranking:
    """Rank people by `p`; `fraud_customer[i]` was hit at `fraud_t[i]` (the earliest time counts when a customer
    is given twice). `lookback` (seconds) keeps only reads at most that long before the hit. `top` people are
    returned, the first `detail` of them with the customers they read that were hit."""
    if len(fraud_customer) != len(fraud_t):
        raise ValueError("fraud_customer and fraud_t must be arrays of the same length")
    person = np.asarray(reads.person, dtype=np.int64)
    customer = np.asarray(reads.customer, dtype=np.int64)
    if len(person) == 0:
        return Ranking(0, 0, 0, [])
    n_customers = int(max(customer.max(), fraud_customer.max() if len(fraud_customer) else 0)) + 1
    n_people = int(person.max()) + 1
    hit_at = np.full(n_customers, NO_HIT)
    np.minimum.at(hit_at, np.asarray(fraud_customer, dtype=np.int64), np.asarray(fraud_t, dtype=np.float64))

    pair, first_t = first_reads(person * n_customers + customer, np.asarray(reads.t, dtype=np.float64))
    p_of = pair // n_customers
    c_of = pair % n_customers

    read_by_anyone = np.zeros(n_customers, dtype=bool)
    read_by_anyone[c_of] = True
    population = int(read_by_anyone.sum())
    frauds = int((read_by_anyone & (hit_at < NO_HIT)).sum())

    hit_t = hit_at[c_of]
    is_hit = (hit_t < NO_HIT) & (first_t < hit_t)
    if lookback is not None:
        is_hit &= hit_t - first_t <= lookback
    n = np.bincount(p_of, minlength=n_people)
    k = np.bincount(p_of[is_hit], minlength=n_people)
    active = np.flatnonzero(n)
    people = len(active)
    if frauds == 0:
        return Ranking(population, 0, people, [])
    n_a, k_a = n[active], k[active]
    p = hypergeom.sf(k_a - 1, population, frauds, n_a)
    p = np.where(k_a > 0, p, 1.0)
    p_adj = np.minimum(p * people, 1.0)
    base = frauds / population
    lift = np.where(n_a > 0, (k_a / np.maximum(n_a, 1)) / base, 0.0)
    best = np.lexsort((-k_a, p))[:top]
    out: list[Ranked] = []
    hit_idx = np.flatnonzero(is_hit)
    for rank_no, i in enumerate(best):
        who = int(active[i])
        hits: tuple[Hit, ...] = ()
        if rank_no < detail and k_a[i]:
            mine = hit_idx[p_of[hit_idx] == who]
            hits = tuple(Hit(int(c_of[j]), float(first_t[j]), float(hit_t[j])) for j in mine)
        out.append(Ranked(who, int(n_a[i]), int(k_a[i]), float(k_a[i] / frauds), float(lift[i]), float(p[i]),
                          float(p_adj[i]), hits))
    return Ranking(population, frauds, people, out)
