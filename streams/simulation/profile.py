"""What the simulator imitates: tuning constants, configuration and England's reference figures.

The constants are the model's shape (shares, delays, category weights); the reference data in
``streams/data`` (published ICB and monthly England figures) sets volumes and 2-hour
performance. ``icb_profiles`` derives the synthetic providers and calibrates each one's response
delay; the ``_rate_scale`` family calibrates the arrival process. See the package docstring.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from importlib.resources import files
from typing import Final
from zoneinfo import ZoneInfo

from streams.engine.event import CANCEL_REASONS, EXCLUSION_REASONS

# Local time for hour-of-day and weekday effects, visiting hours and +01:00 timestamps.
LONDON: Final = ZoneInfo("Europe/London")
_SECONDS_PER_DAY: Final = 86_400
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()  # day 0 of epoch-day arithmetic

# Shares of referrals (fractions of all referrals unless said otherwise).
_CANCEL_SHARE: Final = 0.025
_EXCLUDED_SHARE: Final = 0.03  # of UCR referrals: triaged not subject to the standard (type 07)
_RETRIAGE_SHARE: Final = 0.02  # moved to the other pathway at triage
_TRIAGED_SHARE: Final = 0.75  # get any referral.triaged event
_NEVER_VISITED_SHARE: Final = 0.01  # no attended face-to-face contact at all
_NO_ICB_SHARE: Final = 0.03  # omit icb and region: region "unknown"
_EXPLICIT_REGION_SHARE: Final = 0.15  # of referrals with an icb: also send region
_NO_PATIENT_REF_SHARE: Final = 0.08  # send no patient_ref at all
_LOCAL_OFFSET_SHARE: Final = 0.05  # of BST times written with +01:00 rather than Z

# UCR response: first attended face-to-face = receipt + minimum + lognormal (seconds).
_UCR_MIN_RESPONSE_S: Final = 600.0  # travel and preparation, 10 minutes
_UCR_SIGMA: Final = 0.75  # lognormal shape, fixed; the median is solved per provider
_TWO_HOURS_S: Final = 7200.0
# Excluded (type 07) referrals: visited later by design, 90 min + lognormal (median 4 h).
_EXCLUDED_MIN_S: Final = 5400.0
_EXCLUDED_MU: Final = math.log(4 * 3600.0)
_EXCLUDED_SIGMA: Final = 0.7
# Reablement first visit: local days after the receipt's local date (80% within two days).
_REABLEMENT_DAY_WEIGHTS: Final = (0.22, 0.36, 0.22, 0.12, 0.05, 0.03)
_VISIT_DAY_START_S: Final = 8 * 3600  # local visiting hours 08:00-18:00
_VISIT_DAY_END_S: Final = 18 * 3600

# Contacts other than the first visit (counts by probability; means chosen for ~2.3 a referral).
_UCR_PRE_CALLS: Final = ((0, 0.62), (1, 0.33), (2, 0.05))
_REABLEMENT_PRE_CALLS: Final = ((0, 0.40), (1, 0.55), (2, 0.05))
_DNA_BEFORE_VISIT_SHARE: Final = 0.04  # a face-to-face visit with nobody in, before the stop
_UCR_FOLLOW_UPS: Final = ((0, 0.54), (1, 0.26), (2, 0.11), (3, 0.06), (4, 0.03))
_REABLEMENT_FOLLOW_UPS: Final = ((0, 0.20), (1, 0.25), (2, 0.25), (3, 0.15), (4, 0.10), (5, 0.05))
_FOLLOW_UP_ATTENDED: Final = 0.95  # probability a follow-up contact is attended
_CALL_ANSWERED: Final = 0.95  # probability a telephone/video call before the visit connects

# Recording delays, seconds (exponential means and caps).
_RECEIPT_DELAY_MEAN_S: Final = 20.0
_DECISION_DELAY_MEAN_S: Final = 60.0
_PROMPT_CONTACT_MEAN_S: Final = 180.0
_PROMPT_CONTACT_CAP_S: Final = 1500.0  # prompt means under 25 min, late means 30 min or more
_LATE_CONTACT_MIN_S: Final = 1800.0
_LATE_CONTACT_MEAN_S: Final = 5400.0  # beyond the minimum
_LATE_CONTACT_CAP_S: Final = 10 * 3600.0
_DUPLICATE_DELAY_MAX_S: Final = 600.0

# Local hour-of-day profile of receipts (relative; normalised to mean 1 below).
_HOUR_WEIGHTS: Final = (
    0.25, 0.20, 0.20, 0.20, 0.20, 0.25, 0.40, 0.70,  # 00-07
    1.20, 1.60, 1.75, 1.75, 1.65, 1.60, 1.60, 1.55,  # 08-15
    1.50, 1.35, 1.15, 1.00, 0.80, 0.60, 0.45, 0.35,  # 16-23
)  # fmt: skip
_WEEKEND_RELATIVE: Final = 0.80  # a weekend day has 80% of a weekday's referrals

# Who refers, and for what, by pathway: (value, relative weight) for a weighted pick.
_UCR_SOURCES: Final = (
    ("gp", 0.28),
    ("111", 0.10),
    ("999", 0.14),
    ("care_home", 0.12),
    ("self_carer", 0.14),
    ("social_care", 0.08),
    ("community_nursing", 0.08),
    ("other", 0.06),
)
_REABLEMENT_SOURCES: Final = (
    ("gp", 0.35),
    ("social_care", 0.35),
    ("self_carer", 0.15),
    ("community_nursing", 0.10),
    ("other", 0.05),
)
_UCR_CONDITIONS: Final = (
    ("falls", 0.26),
    ("frailty_deterioration", 0.16),
    ("reduced_function", 0.12),
    ("urinary_tract_infection", 0.09),
    ("confusion_delirium", 0.08),
    ("catheter_care", 0.07),
    ("respiratory", 0.07),
    ("palliative_end_of_life", 0.06),
    ("diabetes", 0.03),
    ("other", 0.06),
)
_REABLEMENT_CONDITIONS: Final = (
    ("reduced_function", 0.45),
    ("falls", 0.20),
    ("frailty_deterioration", 0.20),
    ("other", 0.15),
)
# Why a triage puts a UCR referral outside the standard, and why a referral is cancelled:
# the engine's vocabularies in its order, with relative weights.
_EXCLUSION_REASONS: Final = tuple(zip(EXCLUSION_REASONS, (0.45, 0.45, 0.10), strict=True))
_CANCEL_REASONS: Final = tuple(zip(CANCEL_REASONS, (0.35, 0.20, 0.30, 0.15), strict=True))


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate. Rates are fractions (0.002 = 0.2%)."""

    start: datetime  # tz-aware; first possible referral receipt
    duration: timedelta  # of event time for referral receipts
    speed: float = 1.0  # multiple of England's real referral rate
    seed: int = 0
    reablement_share: float = 0.10
    duplicate_rate: float = 0.002
    bad_rate: float = 0.001
    nhs_number_rate: float = 0.005
    late_contact_share: float = 0.15

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        if self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError("speed must be a positive number")
        if not 0.0 <= self.reablement_share <= 0.9:
            raise ValueError("reablement_share must be between 0 and 0.9")
        for name in ("duplicate_rate", "bad_rate", "nhs_number_rate", "late_contact_share"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be at least 0 and below 1")


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """A synthetic provider: ODS-like code, share of its ICB's referrals, 2-hour target."""

    code: str
    icb: str
    region: str
    share: float  # of its ICB's referrals
    pct_within_2h: float  # target % of UCR first visits within 2 hours
    mu: float  # log-seconds median of the lognormal part of the UCR response


@dataclass(frozen=True, slots=True)
class IcbProfile:
    """An ICB as the simulator sees it (from ``icbs.csv``)."""

    code: str
    region: str
    mean_referrals_per_month: float
    pct_within_2h: float
    providers: tuple[ProviderProfile, ...]


def _norm_ppf(p: float) -> float:
    """Inverse of the standard normal CDF (bisection on erf; only used at start-up)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _ucr_mu(pct: float) -> float:
    """Lognormal mu so that P(min + LN(mu, sigma) <= 2 h) = pct / 100."""
    z = _norm_ppf(pct / 100.0)
    return math.log(_TWO_HOURS_S - _UCR_MIN_RESPONSE_S) - _UCR_SIGMA * z


def _read_csv(name: str) -> list[dict[str, str]]:
    text = (files("streams") / "data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


# Synthetic provider codes are "R" + two of these characters.
_PROVIDER_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PROVIDER_SPREAD_POINTS: Final = 4.0  # provider targets scatter up to +-4 points around the ICB


@lru_cache(maxsize=1)
def icb_profiles() -> tuple[IcbProfile, ...]:
    """The 42 ICBs with their synthetic providers, identical in every run (sorted by code).

    Provider codes and shares come from a generator seeded with the ICB code only; ICBs are
    visited in code order so that a code already taken by another ICB is deterministically
    skipped.
    """
    rows = sorted(_read_csv("icbs.csv"), key=lambda row: row["icb_code"])
    taken: set[str] = set()
    out: list[IcbProfile] = []
    for row in rows:
        icb = row["icb_code"]
        region = row["region_code"]
        pct = float(row["mean_pct_within_2h"])
        rng = random.Random(f"crisiswatch-providers:{icb}")
        wanted = rng.randint(2, 6)
        codes: list[str] = []
        while len(codes) < wanted:
            code = "R" + rng.choice(_PROVIDER_ALPHABET) + rng.choice(_PROVIDER_ALPHABET)
            if code not in taken:
                taken.add(code)
                codes.append(code)
        raw = [rng.uniform(0.3, 1.0) for _ in codes]
        shares = [w / sum(raw) for w in raw]
        offsets = [rng.uniform(-1.0, 1.0) for _ in codes]
        centre = sum(s * d for s, d in zip(shares, offsets, strict=True))
        centred = [d - centre for d in offsets]
        widest = max(abs(d) for d in centred) or 1.0
        spread = min(_PROVIDER_SPREAD_POINTS, 99.0 - pct, pct - 40.0) / widest
        providers = tuple(
            ProviderProfile(
                code=code,
                icb=icb,
                region=region,
                share=share,
                pct_within_2h=pct + spread * d,
                mu=_ucr_mu(pct + spread * d),
            )
            for code, share, d in zip(codes, shares, centred, strict=True)
        )
        out.append(
            IcbProfile(
                code=icb,
                region=region,
                mean_referrals_per_month=float(row["mean_referrals_per_month"]),
                pct_within_2h=pct,
                providers=providers,
            )
        )
    return tuple(out)


@lru_cache(maxsize=1)
def _monthly_type05_per_second() -> tuple[float, ...]:
    """Published type-05 referrals a second for each calendar month (index 0 = January)."""
    rates = [0.0] * 12
    for row in _read_csv("england_monthly_2024_25.csv"):
        year, month = (int(part) for part in row["month"].split("-"))
        following = date(year + month // 12, month % 12 + 1, 1)
        days = (following - date(year, month, 1)).days
        rates[month - 1] = int(row["referrals_type05"]) / (days * _SECONDS_PER_DAY)
    return tuple(rates)


# -- calibration of the arrival process ---------------------------------------------------


def _rate_scale(config: SimulationConfig) -> float:
    """Factor on the published type-05 rate so that type-05 clocks arrive at ``speed`` x it."""
    r = config.reablement_share
    type05_fraction = (1 - _CANCEL_SHARE) * (
        (1 - r) * (1 - _EXCLUDED_SHARE - _RETRIAGE_SHARE) + r * _RETRIAGE_SHARE
    )
    return config.speed / type05_fraction


def _plain_triage_share(config: SimulationConfig) -> float:
    """Triage probability for a plain referral so that ~75% of all referrals are triaged."""
    r = config.reablement_share
    special = (1 - r) * (_EXCLUDED_SHARE + _RETRIAGE_SHARE) + r * _RETRIAGE_SHARE
    plain = (_TRIAGED_SHARE / (1 - _CANCEL_SHARE) - special) / (1 - special)
    return min(1.0, max(0.0, plain))


def _hour_factors() -> list[float]:
    """Receipt-rate factor per local hour of day, mean 1."""
    mean_weight = sum(_HOUR_WEIGHTS) / len(_HOUR_WEIGHTS)
    return [w / mean_weight for w in _HOUR_WEIGHTS]


def _day_factors() -> list[float]:
    """Receipt-rate factor per weekday (Monday first), mean 1."""
    weekday = 7 / (5 + 2 * _WEEKEND_RELATIVE)
    return [weekday] * 5 + [weekday * _WEEKEND_RELATIVE] * 2
