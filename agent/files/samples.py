"""Synthetic customer identifiers for tests and benchmarks: valid by every check the detector makes, and invented.

No real person or card is behind any number made here: they come from a seeded random generator.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_PROVINCES = (11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53,
              54, 61, 62, 63, 64, 65)
_CARD_PREFIXES = (("622202", 19), ("621700", 19), ("622848", 19), ("625807", 16), ("436742", 16), ("512345", 16))
_MOBILE_PREFIXES = ("138", "139", "150", "186", "177", "199", "135", "158")


def id_check(first17: str) -> str:
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS)) % 11]


def resident_id(rng: random.Random) -> str:
    born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(0, 55 * 365))
    first17 = f"{rng.choice(_PROVINCES)}{rng.randrange(0, 10000):04d}{born:%Y%m%d}{rng.randrange(0, 1000):03d}"
    return first17 + id_check(first17)


def luhn_digit(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:  # doubled: these sit left of the check digit
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def bank_card(rng: random.Random) -> str:
    prefix, length = rng.choice(_CARD_PREFIXES)
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    return body + luhn_digit(body)


def mobile(rng: random.Random) -> str:
    return rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(0, 10**8):08d}"


def email(rng: random.Random, n: int) -> str:
    return f"customer{n}.{rng.randrange(10**6)}@example{rng.randrange(100)}.com"


def break_check(number: str) -> str:
    """The same number with a wrong final check character."""
    last = number[-1]
    options = [c for c in "0123456789" if c != last]
    return number[:-1] + options[(ord(number[0]) + len(number)) % len(options)]


@dataclass(frozen=True, slots=True)
class Expected:
    rows: int
    cn_resident_id: int
    bank_card: int
    cn_mobile: int
    email: int


def write_customer_csv(path: Path, rows: int, *, valid: bool = True, seed: int = 7, delimiter: str = ",") -> Expected:
    """A customer export as a bank's reporting tool writes it; `valid=False` breaks every ID and card check digit."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["customer_no", "name", "id_number", "card_number", "mobile", "email", "balance"])
        for n in range(rows):
            ident, card = resident_id(rng), bank_card(rng)
            if not valid:
                ident, card = break_check(ident), break_check(card)
            w.writerow([f"C{n:08d}", f"客户{n}", ident, card, mobile(rng), email(rng, n),
                        f"{rng.randrange(0, 10**7) / 100:.2f}"])
    ok = rows if valid else 0
    return Expected(rows + 1, ok, ok, rows, rows)
