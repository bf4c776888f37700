"""Customer identifiers in text: checks that tell a real identity or card number from any long number.

Counted classes (always all present in a result, 0 when none were found):
- `cn_resident_id`: mainland China resident identity number, 18 characters, a known province code, a real date of
  birth not in the future, and the ISO 7064 MOD 11-2 check character (GB 11643-1999); an 18-digit number shaped
  like one (province, date of birth) with a wrong check character counts as nothing, not as a card that happens
  to pass Luhn;
- `bank_card`: 13-19 digits with a valid Luhn check digit and a known issuer range (UnionPay 62/81, Visa, Mastercard,
  American Express, JCB, Discover, Diners, and the domestic 9-prefixed ranges); also written in groups of four;
- `cn_mobile`: mainland mobile numbers (1 + a known carrier prefix + 8 digits), with or without +86;
- `email`: e-mail addresses;
- any custom class from configuration: every match of its regular expression.

Text is scanned as bytes (UTF-8 or another ASCII-compatible encoding); digits only count as one number when no
letter or digit touches them. A number is counted in the first class it satisfies, in the order above.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

BUILTIN_CLASSES = ("cn_resident_id", "bank_card", "cn_mobile", "email")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = b"10X98765432"
_PROVINCES = frozenset(
    [11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54,
     61, 62, 63, 64, 65, 71, 81, 82, 83]
)


def resident_id_shaped(s: bytes, today: dt.date | None = None) -> bool:
    """18 characters with a known province code and a real, past date of birth: an identity number, or a typo of one."""
    if len(s) != 18 or not s[:17].isdigit():
        return False
    if int(s[:2]) not in _PROVINCES:
        return False
    try:
        born = dt.date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    return 1900 <= born.year and born <= (today or dt.date.today())


def resident_id_ok(s: bytes, today: dt.date | None = None) -> bool:
    """An 18-character resident identity number with a plausible region, birth date and check character."""
    return resident_id_shaped(s, today) and resident_id_check_ok(s)


def resident_id_check_ok(s: bytes) -> bool:
    total = sum((c - 48) * w for c, w in zip(s[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == s[17] or (s[17] == 0x78 and _ID_CHECK[total % 11] == 0x58)  # x or X


_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_ok(digits: bytes) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = c - 48
        total += _LUHN_DOUBLE[d] if i & 1 else d
    return total % 10 == 0


_ANY = frozenset(range(16, 20))
# (first digits low, high, length of that prefix, allowed card lengths)
_IIN_RANGES: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    (62, 62, 2, _ANY),  # China UnionPay
    (81, 81, 2, _ANY),  # China UnionPay (newer range)
    (4, 4, 1, frozenset({13, 16, 19})),  # Visa, and the many Chinese bank cards co-branded with it
    (51, 55, 2, frozenset({16})),  # Mastercard
    (2221, 2720, 4, frozenset({16})),  # Mastercard 2-series
    (34, 34, 2, frozenset({15})),  # American Express
    (37, 37, 2, frozenset({15})),
    (3528, 3589, 4, _ANY),  # JCB
    (6011, 6011, 4, _ANY),  # Discover
    (644, 649, 3, _ANY),
    (65, 65, 2, _ANY),
    (300, 305, 3, frozenset(range(14, 20))),  # Diners Club
    (36, 36, 2, frozenset(range(14, 20))),
    (38, 39, 2, _ANY),
    (50, 50, 2, _ANY),  # Maestro and domestic debit ranges
    (56, 58, 2, _ANY),
    (60, 60, 2, _ANY),  # domestic (e.g. 601382 Bank of China Great Wall)
    (95, 96, 2, _ANY),  # domestic legacy (95588 ICBC, 95599 ABC …)
)


def card_iin_ok(digits: bytes) -> bool:
    n = len(digits)
    for low, high, width, lengths in _IIN_RANGES:
        if n in lengths and low <= int(digits[:width]) <= high:
            return True
    return False


def bank_card_ok(digits: bytes) -> bool:
    return 13 <= len(digits) <= 19 and card_iin_ok(digits) and luhn_ok(digits)


_MOBILE = re.compile(rb"^(?:86)?1(?:3\d|4[5-9]|5[0-35-9]|6[2567]|7[0-8]|8\d|9[0-35-9])\d{8}$")


def mobile_ok(digits: bytes) -> bool:
    return _MOBILE.match(digits) is not None


# Each pattern can only start where no letter or digit precedes it, so a long run of digits or letters is tried
# from one place, not from every position in it: the scan stays linear on hostile input.
_NUMBER = re.compile(rb"(?<![0-9A-Za-z])\d{11,19}[Xx]?(?![0-9A-Za-z])")
_GROUPED_CARD = re.compile(rb"(?<![0-9A-Za-z])\d{4}(?:[ -]\d{4}){2,3}(?:[ -]?\d{1,3})?(?![0-9A-Za-z])")
_GROUPED_MOBILE = re.compile(rb"(?<![0-9A-Za-z+])(?:\+?86[ -]?)?1\d{2}[ -]\d{4}[ -]\d{4}(?![0-9A-Za-z])")
_EMAIL = re.compile(
    rb"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}"
    rb"(?![A-Za-z0-9-])"
)
_SEPARATORS = re.compile(rb"[ -]")


class Detector:
    """Counts identifiers in chunks of bytes; `counts` holds every class, built-in and custom."""

    def __init__(self, patterns: Mapping[str, str] | None = None, today: dt.date | None = None) -> None:
        self.custom = {name: re.compile(p.encode("utf-8")) for name, p in (patterns or {}).items()}
        self.today = today or dt.date.today()
        self.counts: dict[str, int] = dict.fromkeys((*BUILTIN_CLASSES, *self.custom), 0)

    def scan(self, data: bytes) -> None:
        ids = cards = mobiles = 0
        today = self.today
        for m in _NUMBER.finditer(data):
            token = m.group()
            if len(token) == 18 and resident_id_shaped(token, today):
                # A mistyped identity number is not a card number, even when it happens to pass Luhn.
                ids += resident_id_check_ok(token)
            elif token[-1] in b"Xx":
                continue
            elif bank_card_ok(token):
                cards += 1
            elif mobile_ok(token):
                mobiles += 1
        if b" " in data or b"-" in data:
            for m in _GROUPED_CARD.finditer(data):
                if bank_card_ok(_SEPARATORS.sub(b"", m.group())):
                    cards += 1
            for m in _GROUPED_MOBILE.finditer(data):
                if mobile_ok(_SEPARATORS.sub(b"", m.group()).lstrip(b"+")):
                    mobiles += 1
        c = self.counts
        c["cn_resident_id"] += ids
        c["bank_card"] += cards
        c["cn_mobile"] += mobiles
        if b"@" in data:
            c["email"] += sum(1 for _ in _EMAIL.finditer(data))
        for name, rx in self.custom.items():
            c[name] += sum(1 for _ in rx.finditer(data))
