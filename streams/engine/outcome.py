"""Per-referral outcome records (CONTRACT section 2) and their CSV/JSON forms."""

from __future__ import annotations

from time import gmtime as _gmtime
from time import strftime as _strftime
from typing import Final, NamedTuple

MET: Final = "met"
NOT_MET: Final = "not_met"
WAITING: Final = "waiting"
AT_RISK: Final = "at_risk"
BREACHED: Final = "breached"
EXCLUDED: Final = "excluded"
CANCELLED_STATE: Final = "cancelled"
INVALID: Final = "invalid"

OPEN_STATES: Final = (WAITING, AT_RISK, BREACHED)
STATES: Final = (MET, NOT_MET, WAITING, AT_RISK, BREACHED, EXCLUDED, CANCELLED_STATE, INVALID)

CLOCK_UCR: Final = "05"  # 2-hour, subject to the standard
CLOCK_REABLEMENT: Final = "06"  # 2-day reablement
CLOCK_UCR_EXCLUDED: Final = "07"  # 2-hour, not subject to the standard

COLUMNS: Final = (
    "referral_id",
    "pathway",
    "clock_type",
    "region",
    "icb",
    "provider",
    "clock_start",
    "clock_stop",
    "wait_seconds",
    "state",
    "exclusion_reason",
)


class Outcome(NamedTuple):
    """What the standard says about one referral at one instant (immutable, cheap to build)."""

    referral_id: str
    pathway: str
    clock_type: str | None  # None: no clock (cancelled)
    region: str
    icb: str
    provider: str
    clock_start: int | None  # epoch seconds
    clock_stop: int | None
    wait_seconds: int | None
    state: str
    exclusion_reason: str | None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def to_row(self) -> list[str]:
        """The CSV row of CONTRACT section 2 (empty string for absent values)."""
        return [
            self.referral_id,
            self.pathway,
            self.clock_type or "",
            self.region,
            self.icb,
            self.provider,
            format_instant(self.clock_start),
            format_instant(self.clock_stop),
            "" if self.wait_seconds is None else str(self.wait_seconds),
            self.state,
            self.exclusion_reason or "",
        ]

    def to_record(self) -> dict[str, str | int | None]:
        """The JSON record published on `referral-outcomes` (same keys as the CSV)."""
        return {
            "referral_id": self.referral_id,
            "pathway": self.pathway,
            "clock_type": self.clock_type,
            "region": self.region,
            "icb": self.icb,
            "provider": self.provider,
            "clock_start": format_instant(self.clock_start) or None,
            "clock_stop": format_instant(self.clock_stop) or None,
            "wait_seconds": self.wait_seconds,
            "state": self.state,
            "exclusion_reason": self.exclusion_reason,
        }


def format_instant(instant: int | None) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ`, or empty for None."""
    if instant is None:
        return ""
    # time.gmtime + strftime: the same text as datetime's, at a third of the cost (this runs
    # for every outcome published and every CSV row).
    return _strftime("%Y-%m-%dT%H:%M:%SZ", _gmtime(instant))
