"""Log timestamps to UTC: PostgreSQL's `2026-11-27 01:52:37.695 UTC` and MariaDB's zone-less `20261127 01:54:29`.

A zone abbreviation other than UTC/GMT or a numeric offset means nothing on its own ("CST" is three different
zones), so such times, and MariaDB's server-local times, are read in the configured IANA zone — and for
PostgreSQL the abbreviation the log printed must be the one that zone uses at that moment, which also settles the
repeated hour when clocks go back.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.errors import ConfigError

UTC = dt.timezone.utc
_UTC_NAMES = frozenset({"UTC", "GMT", "UCT", "Z", "Etc/UTC", "Zulu"})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})?$")


class TimeFormatError(ValueError):
    """A timestamp that cannot be read; the message says why without quoting the line."""


def load_zone(name: str | None, where: str) -> dt.tzinfo | None:
    if name is None:
        return None
    if name in _UTC_NAMES:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"{where}: {name!r} is not a time zone name such as \"Europe/Berlin\" or \"UTC\"") from e


class LogTimes:
    """Converts one log's timestamps, caching the last second seen (logs repeat it for many lines)."""

    def __init__(self, zone: dt.tzinfo | None) -> None:
        self.zone = zone
        self._last_key = ""
        self._last_base: dt.datetime | None = None
        self._last_text: str | None = None  # never equal to a text: "" must still be refused
        self._last_value = _EPOCH

    def pg(self, text: str) -> dt.datetime:
        """`YYYY-MM-DD HH:MM:SS[.fff] ZONE` (log_line_prefix %m/%t, csvlog log_time)."""
        if text == self._last_text:  # many lines share one millisecond
            return self._last_value
        value = self._pg(text)
        self._last_text, self._last_value = text, value
        return value

    def _pg(self, text: str) -> dt.datetime:
        if len(text) < 21 or text[4] != "-" or text[10] != " ":
            raise TimeFormatError("the timestamp is not YYYY-MM-DD HH:MM:SS ZONE")
        if text[19] == ".":
            space = text.find(" ", 20)
            frac = text[20:space] if space > 0 else ""
        else:
            space, frac = 19, ""
        if space < 0 or not frac.isdigit() and frac:
            raise TimeFormatError("the timestamp's fraction of a second is not a number")
        zone = text[space + 1 :]
        key = text[:19] + zone
        if key != self._last_key or self._last_base is None:
            self._last_base = self._resolve(text[:19], zone)
            self._last_key = key
        if not frac:
            return self._last_base
        micros = int(frac) * 1000 if len(frac) == 3 else int(frac.ljust(6, "0")[:6])
        return self._last_base + dt.timedelta(microseconds=micros) if micros else self._last_base

    def pg_epoch(self, text: str) -> dt.datetime:
        """%n: seconds since the epoch with milliseconds."""
        try:
            return dt.datetime.fromtimestamp(float(text), UTC)
        except (ValueError, OverflowError) as e:
            raise TimeFormatError("the epoch timestamp is not a number") from e

    def _resolve(self, local: str, zone: str) -> dt.datetime:
        try:
            naive = dt.datetime(
                int(local[0:4]), int(local[5:7]), int(local[8:10]), int(local[11:13]), int(local[14:16]),
                int(local[17:19]),
            )
        except ValueError as e:
            raise TimeFormatError("the timestamp is not a valid date and time") from e
        if zone in _UTC_NAMES:
            return naive.replace(tzinfo=UTC)
        m = _OFFSET.match(zone)
        if m:
            minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
            offset = dt.timedelta(minutes=minutes if m.group(1) == "+" else -minutes)
            return naive.replace(tzinfo=dt.timezone(offset)).astimezone(UTC)
        if self.zone is None:
            raise TimeFormatError(
                "the timestamp's zone is an abbreviation; set the source's timezone (or log_timezone = 'UTC')"
            )
        for fold in (0, 1):
            aware = naive.replace(tzinfo=self.zone, fold=fold)
            if aware.tzname() == zone:
                return aware.astimezone(UTC)
        raise TimeFormatError("the timestamp's zone abbreviation does not belong to the configured timezone")

    def mariadb(self, text: str) -> dt.datetime:
        """`YYYYMMDD HH:MM:SS` in the server's local time (the configured zone)."""
        if text == self._last_key and self._last_base is not None:
            return self._last_base
        if len(text) != 17 or text[8] != " ":
            raise TimeFormatError("the timestamp is not YYYYMMDD HH:MM:SS")
        try:
            naive = dt.datetime(
                int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]), int(text[12:14]), int(text[15:17])
            )
        except ValueError as e:
            raise TimeFormatError("the timestamp is not a valid date and time") from e
        zone = self.zone or UTC
        self._last_base = naive.replace(tzinfo=zone).astimezone(UTC)
        self._last_key = text
        return self._last_base
