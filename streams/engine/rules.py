"""The settings of the national rules (STANDARDS.md), with their documented defaults.

Everything that STANDARDS.md marks [default], and every live-state threshold, is a field here
rather than a constant in the code, so an operator can follow a change of national guidance
without a code change. `Rules` is a frozen value: the engine never mutates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

UTC = ZoneInfo("UTC")


class StartMode(StrEnum):
    """R1: what starts the clock."""

    RECEIVED = "received"  # the national default: the service received the referral
    TRIAGED = "triaged"  # the first triage/acceptance decision


@dataclass(frozen=True, slots=True)
class Rules:
    """Thresholds and options of the two standards (defaults: STANDARDS.md sections 3-4)."""

    # R4: a 2-hour clock is met iff wait <= this many seconds (120:00 met, 120:01 not).
    ucr_limit_seconds: int = 7200
    # Live state: a 2-hour clock is at risk from this elapsed time (90 minutes).
    ucr_at_risk_seconds: int = 5400
    # R5: a 2-day clock is met iff the stop's local date <= start's local date + this many days.
    reablement_days: int = 2
    # Live state: a 2-day clock is at risk from this local time on its last allowed day.
    reablement_at_risk_time: time = time(12, 0)
    start_mode: StartMode = StartMode.RECEIVED
    # Local time zone for midnights, days and periods (an IANA name).
    timezone: str = "Europe/London"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ucr_limit_seconds <= 0:
            raise ValueError("ucr_limit_seconds must be positive")
        if not 0 <= self.ucr_at_risk_seconds <= self.ucr_limit_seconds:
            raise ValueError("ucr_at_risk_seconds must be between 0 and ucr_limit_seconds")
        if self.reablement_days < 0:
            raise ValueError("reablement_days must not be negative")
        object.__setattr__(self, "_zone", ZoneInfo(self.timezone))

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    def local_date(self, instant: int) -> date:
        """The local calendar date of an instant (epoch seconds)."""
        return _local_date(self._zone, instant)

    def local_instant(self, day: date, at: time) -> int:
        """Epoch seconds of a local wall-clock time on a local date.

        zoneinfo resolves a wall time in a DST gap or overlap by PEP 495 (fold=0: the first
        occurrence); Europe/London's midnight and noon never fall in either.
        """
        return int(datetime.combine(day, at, tzinfo=self._zone).timestamp())


def _local_date(zone: ZoneInfo, instant: int) -> date:
    return datetime.fromtimestamp(instant, zone).date()


def day_after(day: date, days: int = 1) -> date:
    return day + timedelta(days=days)
