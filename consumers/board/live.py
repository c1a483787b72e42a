"""Live state now of stored clocks, by the engine's own rules (pure: no I/O, no wall clock).

The worker writes each clock's facts (type, start, stop) and the state it last judged; the
board re-judges open clocks at the instant of each answer with `Clock.thresholds`, the same
function the engine schedules its state changes with, so a 2-hour clock is at risk from 90:00
and breached from 120:01 elapsed, and a 2-day clock at risk from noon on its last allowed day
and breached from the local midnight ending it (midnights in the rules' time zone,
`CRISISWATCH_TIMEZONE`). SQL only narrows the rows with bounds derived from the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from typing import Any, Final, NamedTuple

from streams.engine import Clock, Rules, format_instant
from streams.engine.outcome import AT_RISK, BREACHED, CLOCK_REABLEMENT, CLOCK_UCR, WAITING
from streams.engine.rules import day_after

_MIDNIGHT: Final = time(0, 0)
# Widest swing of a UTC offset across a night (seconds): DST shifts are at most an hour, but a
# bound with room keeps the SQL pre-filter a superset whatever the configured time zone.
_OFFSET_MARGIN_SECONDS: Final = 2 * 3600

LIVE_STATES: Final = (WAITING, AT_RISK, BREACHED)


def ucr_offsets(rules: Rules) -> tuple[int, int]:
    """(at risk from, breached from) as seconds after a 2-hour clock's start."""
    at_risk_at, breach_at = Clock.thresholds(rules, CLOCK_UCR, 0)
    return at_risk_at, breach_at


def reablement_lookback(rules: Rules) -> int:
    """Seconds a 2-day clock has run at least before it can be at risk (an SQL pre-filter).

    A clock started just before a local midnight reaches its last day's at-risk time soonest:
    (days - 1) whole days plus the at-risk time of day, less any change of UTC offset.
    """
    at = rules.reablement_at_risk_time
    of_day = at.hour * 3600 + at.minute * 60 + at.second
    return max(0, (rules.reablement_days - 1) * 86400 + of_day - _OFFSET_MARGIN_SECONDS)


def today(rules: Rules, now: int) -> tuple[int, int]:
    """The local day of `now`: (its midnight, the next midnight), epoch seconds."""
    day = rules.local_date(now)
    return (
        rules.local_instant(day, _MIDNIGHT),
        rules.local_instant(day_after(day), _MIDNIGHT),
    )


def local_hour(rules: Rules, instant: int) -> str:
    """`HH:00` of an instant in the rules' time zone."""
    from datetime import datetime

    return datetime.fromtimestamp(instant, rules.zone).strftime("%H:00")


class Item(NamedTuple):
    """One open clock on the worklist, judged at `now` (a tuple: thousands are built per
    answer)."""

    referral_id: str
    pathway: str
    clock_type: str
    state: str
    region: str
    icb: str
    provider: str
    clock_start: int
    # When the standard is lost: 2-hour, start + the limit (120:00 is still met); 2-day, the
    # local midnight that ends the last allowed day.
    deadline: int
    minutes_waiting: int
    minutes_left: int  # negative: minutes past the deadline

    def to_json(self) -> dict[str, Any]:
        return {
            "referral_id": self.referral_id,
            "pathway": self.pathway,
            "clock_type": self.clock_type,
            "state": self.state,
            "region": self.region,
            "icb": self.icb,
            "provider": self.provider,
            "clock_start": format_instant(self.clock_start),
            "deadline": format_instant(self.deadline),
            "minutes_waiting": self.minutes_waiting,
            "minutes_left": self.minutes_left,
        }


def judge(
    rules: Rules,
    now: int,
    referral_id: str,
    pathway: str,
    clock_type: str,
    region: str,
    icb: str,
    provider: str,
    start: int,
) -> Item | None:
    """The worklist item of an open type-05/06 clock if it is at risk or breached at `now`."""
    at_risk_at, breach_at = Clock.thresholds(rules, clock_type, start)
    if now >= breach_at:
        state = BREACHED
    elif now >= at_risk_at:
        state = AT_RISK
    else:
        return None
    deadline = breach_at if clock_type == CLOCK_REABLEMENT else start + rules.ucr_limit_seconds
    return Item(
        referral_id,
        pathway,
        clock_type,
        state,
        region,
        icb,
        provider,
        start,
        deadline,
        (now - start) // 60,
        (deadline - now) // 60,  # floor division: 30 s over is -1 minute
    )


def pct(part: int, whole: int) -> float | None:
    """A percentage with one decimal; None when `whole` is 0."""
    return round(100.0 * part / whole, 1) if whole else None


@dataclass(frozen=True, slots=True)
class Area:
    """A tile: type-05 (2-hour) clocks of England or one region, live now and today."""

    code: str
    name: str
    waiting: int = 0
    at_risk: int = 0
    breached: int = 0
    stopped_today: int = 0
    met_today: int = 0

    @property
    def pct_met_today(self) -> float | None:
        return pct(self.met_today, self.stopped_today)

    @property
    def projected_pct_met_today(self) -> float | None:
        """% met if every open breached clock is stopped today, not met."""
        return pct(self.met_today, self.stopped_today + self.breached)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "waiting": self.waiting,
            "at_risk": self.at_risk,
            "breached": self.breached,
            "stopped_today": self.stopped_today,
            "met_today": self.met_today,
            "pct_met_today": self.pct_met_today,
            "projected_pct_met_today": self.projected_pct_met_today,
        }


@dataclass(frozen=True, slots=True)
class Hour:
    """Today's trend: one local hour of type-05 activity."""

    hour: str  # "HH:00" local
    received: int
    stopped: int
    met: int

    @property
    def pct_met(self) -> float | None:
        return pct(self.met, self.stopped)

    def to_json(self) -> dict[str, Any]:
        return {
            "hour": self.hour,
            "received": self.received,
            "stopped": self.stopped,
            "met": self.met,
            "pct_met": self.pct_met,
        }
