"""Reporting periods: ISO weeks and calendar months in local time (STANDARDS section 5).

A period is local: an ISO week runs from Monday 00:00 to Sunday 24:00 (next Monday 00:00)
Europe/London time, a month from the 1st 00:00 to the next 1st 00:00. Its bounds are turned
into UTC instants through `zoneinfo`, so a week containing a clock change is 167 or 169 hours
long, never a fixed 7 x 24 h window. Periods are half-open, [start, end): an event at exactly
the end belongs to the next period.

Pure and stdlib-only, like the engine: the zone is an argument (`Rules.zone`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

__all__ = ["MONTH", "WEEK", "Period", "month", "parse_month", "parse_week", "week"]

WEEK: Final = "week"
MONTH: Final = "month"

_WEEK: Final = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH: Final = re.compile(r"^(\d{4})-(\d{2})$")
_MIDNIGHT: Final = time(0, 0)


@dataclass(frozen=True, slots=True)
class Period:
    """One reporting period: its label (`2026-W43`, `2026-10`) and its local bounds."""

    kind: str  # WEEK or MONTH
    label: str
    first_day: date  # local date of the first day
    end_day: date  # local date of the day after the last day
    zone: ZoneInfo

    @property
    def start(self) -> int:
        """Epoch seconds of the local midnight that opens the period."""
        return _instant(self.first_day, self.zone)

    @property
    def end(self) -> int:
        """Epoch seconds of the local midnight that closes it (exclusive)."""
        return _instant(self.end_day, self.zone)

    @property
    def last_day(self) -> date:
        return self.end_day - timedelta(days=1)

    def previous(self) -> Period:
        """The period of the same kind just before this one."""
        if self.kind == WEEK:
            return week(self.first_day - timedelta(days=7), self.zone)
        return month(self.first_day - timedelta(days=1), self.zone)

    def trailing(self, count: int) -> list[Period]:
        """The `count` periods ending with this one, oldest first."""
        periods = [self]
        while len(periods) < count:
            periods.append(periods[-1].previous())
        return periods[::-1]

    def describe(self) -> str:
        """Human wording, e.g. 'Monday 19 October 2026 to Sunday 25 October 2026'."""
        return f"{_long(self.first_day)} to {_long(self.last_day)}"


def week(day: date, zone: ZoneInfo) -> Period:
    """The ISO week containing the local date `day`."""
    year, number, weekday = day.isocalendar()
    monday = day - timedelta(days=weekday - 1)
    return Period(WEEK, f"{year}-W{number:02d}", monday, monday + timedelta(days=7), zone)


def month(day: date, zone: ZoneInfo) -> Period:
    """The calendar month containing the local date `day`."""
    first = day.replace(day=1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return Period(MONTH, f"{first.year}-{first.month:02d}", first, following, zone)


def parse_week(text: str, zone: ZoneInfo) -> Period:
    """`YYYY-Www` (ISO 8601 week); ValueError if malformed or no such week (e.g. W53)."""
    match = _WEEK.match(text.strip().upper())
    if match is None:
        raise ValueError(f"{text!r} is not an ISO week (YYYY-Www, e.g. 2026-W43)")
    year, number = int(match.group(1)), int(match.group(2))
    try:
        monday = date.fromisocalendar(year, number, 1)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {year} has no ISO week {number}") from exc
    return week(monday, zone)


def parse_month(text: str, zone: ZoneInfo) -> Period:
    """`YYYY-MM`; ValueError if malformed."""
    match = _MONTH.match(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"{text!r} is not a calendar month (YYYY-MM, e.g. 2026-10)")
    return month(date(int(match.group(1)), int(match.group(2)), 1), zone)


def _instant(day: date, zone: ZoneInfo) -> int:
    # Local midnight never falls in a Europe/London DST gap or overlap (changes are at 01:00
    # and 02:00); elsewhere PEP 495's fold=0 picks the first occurrence.
    return int(datetime.combine(day, _MIDNIGHT, tzinfo=zone).timestamp())


def _long(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"
