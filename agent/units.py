"""Human sizes ("1GiB") and durations ("90s", "5m") as used in configuration files."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "tib": 1024**4,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as "512MiB"; raises ValueError naming a valid example."""
    if isinstance(value, bool):
        raise ValueError('must be a positive size such as "1GiB"')
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f'must be a positive size such as "1GiB", not {value!r}')
        n = int(float(m.group(1)) * _SIZE_FACTORS[(m.group(2) or "b").lower()])
    if n <= 0:
        raise ValueError('must be a positive size such as "1GiB"')
    return n


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string such as "250ms", "90s", "5m", "2h"."""
    if isinstance(value, bool):
        raise ValueError('must be a duration such as "30s" or "5m"')
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f'must be a duration such as "30s" or "5m", not {value!r}')
        seconds = float(m.group(1)) * _DURATION_FACTORS[m.group(2) or "s"]
    if seconds < 0:
        raise ValueError('must be a duration such as "30s" or "5m", not negative')
    return seconds
