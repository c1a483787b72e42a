"""Synthetic referral events shaped like England's 2024-25 urgent community response.

The simulator writes CloudEvents 1.0 JSON lines (CONTRACT section 1) for made-up referrals
whose volumes, performance and recording habits look like the published national figures in
``streams/data`` (NHS England 2-hour UCR workbook, 2024-25). No patient-level data is used or
produced: every identifier is synthetic.

Model
-----
* **Arrivals.** Referral receipts form a Poisson process in *event time* (exponential gaps),
  with a piecewise-constant rate per UTC hour: England's published type-05 rate for that
  calendar month (``england_monthly_2024_25.csv``), times a weekday/weekend factor and a
  time-of-day profile (busy 08:00-20:00 Europe/London, quiet at night), both normalised to
  mean 1 so the long-run mean is unchanged. The total rate is scaled up so that the referrals
  which end up as type-05 clocks (UCR, subject to the standard, not cancelled) arrive at the
  published rate; reablement, excluded and cancelled referrals come on top. ``speed``
  multiplies that rate (speed 1 = England in real time, about 70,000 type-05 referrals a
  month, roughly 100 an hour).
* **Geography.** Each receipt picks an ICB in proportion to its published mean monthly
  referrals (``icbs.csv``), then one of the ICB's 2-6 synthetic providers. Provider codes
  ("R" + two alphanumerics) are derived from the ICB code alone, so they are the same in every
  run whatever the seed. About 3% of referrals omit ``icb`` and ``region`` (they count under
  region ``unknown``), most omit ``region`` (derived from ``icb`` downstream), some send it.
* **Pathway and triage.** ``reablement_share`` of referrals arrive on the 2-day reablement
  pathway, the rest on 2-hour UCR. About 75% get a ``referral.triaged`` event minutes after
  receipt; 3% of UCR referrals are triaged as not subject to the standard (type 07, with an
  exclusion reason), 2% are moved to the other pathway. 2.5% are cancelled, usually soon after
  receipt, and then get no contacts.
* **Response.** For a UCR referral the first *attended face-to-face* contact (the clock stop,
  STANDARDS R2) comes 10 minutes plus a lognormal delay after receipt. The lognormal's median
  is solved per provider so that the share within 2 hours equals the provider's target; the
  targets of an ICB's providers scatter around the ICB's published mean monthly % and average
  back to it, weighted by volume. Reablement visits fall on a local day 0-5 days after receipt
  (80% within two days, STANDARDS R5) between 08:00 and 18:00. Around the stop come
  telephone/video contacts (often before the visit), some did-not-attend visits and follow-ups,
  about 2.3 contacts per referral in all, like the published contacts/referrals ratio. About
  1% of referrals are never visited (their clocks stay open and breach).
* **Recording.** Each event has an *arrival* time (when the source system sends it) at or after
  its event ``time``. Receipts, triages and cancellations are sent within seconds to minutes;
  most contacts within minutes, but ``late_contact_share`` of them 30 minutes to several
  hours late, so live monitors see provisional breaches later withdrawn (STANDARDS R7).
* **Noise.** ``duplicate_rate`` of events are sent twice (same bytes, same id, a little
  later); ``bad_rate`` of all lines are deliberately invalid (not JSON, unknown type, missing
  field, bad time, wrong value types). ``nhs_number_rate`` of referrals carry a valid-looking
  NHS number as ``patient_ref`` (from the 999 range, which is never issued to patients) so that
  downstream scrubbing is exercised. Times are RFC 3339 UTC with ``Z`` in whole seconds, a few
  with the ``+01:00`` offset during British Summer Time.

Output is produced lazily in arrival order. Events of a referral are planned when it is
received and wait in a heap keyed by arrival time; anything that arrives no later than the
next receipt can be emitted, since every later event arrives after its own referral's receipt.
Memory is therefore bounded by rate x the span of one referral's events (a few days), not by
the duration. The same config gives byte-identical output.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Final, Generic, TypeVar
from zoneinfo import ZoneInfo

__all__ = [
    "IcbProfile",
    "ProviderProfile",
    "SimulatedLine",
    "SimulationConfig",
    "icb_profiles",
    "simulate",
    "valid_nhs_number",
    "write_ndjson",
]

LONDON: Final = ZoneInfo("Europe/London")
_T = TypeVar("_T")

_SECONDS_PER_DAY: Final = 86_400
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_JSON_SEPARATORS: Final = (",", ":")
# Same output as json.dumps(obj, separators=_JSON_SEPARATORS), without the per-call set-up.
_ENCODE: Final = json.JSONEncoder(separators=_JSON_SEPARATORS).encode

# Shares of referrals (fractions of all referrals unless said otherwise).
_CANCEL_SHARE: Final = 0.025
_EXCLUDED_SHARE: Final = 0.03  # of UCR referrals: triaged not subject to the standard (type 07)
_RETRIAGE_SHARE: Final = 0.02  # moved to the other pathway at triage
_TRIAGED_SHARE: Final = 0.75  # get any referral.triaged event
_NEVER_VISITED_SHARE: Final = 0.01  # no attended face-to-face contact at all
_NO_ICB_SHARE: Final = 0.03  # omit icb and region: region "unknown"
_EXPLICIT_REGION_SHARE: Final = 0.15  # of referrals with an icb: also send region
_NO_PATIENT_REF_SHARE: Final = 0.08
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
_FOLLOW_UP_ATTENDED: Final = 0.95
_CALL_ANSWERED: Final = 0.95

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
_EXCLUSION_REASONS: Final = (
    ("patient_requested_later", 0.45),
    ("clinically_appropriate_later", 0.45),
    ("other", 0.10),
)
_CANCEL_REASONS: Final = (
    ("duplicate", 0.35),
    ("rejected", 0.20),
    ("not_appropriate", 0.30),
    ("withdrawn", 0.15),
)

_UCR: Final = "ucr_2h"
_REABLEMENT: Final = "reablement_2d"
_F2F: Final = "face_to_face"

# Heap item kinds.
_RECEIVED: Final = 0
_TRIAGED: Final = 1
_CONTACT: Final = 2
_CANCELLED: Final = 3
_RAW: Final = 4
_TYPES: Final = ("referral.received", "referral.triaged", "referral.contact", "referral.cancelled")


@dataclass(frozen=True, slots=True)
class SimulatedLine:
    """One NDJSON line as a source system would send it."""

    arrival: datetime  # tz-aware UTC, when the source system sends it
    key: str | None  # referral id (None for bad lines that have none)
    line: str  # the exact NDJSON line, without newline
    valid: bool  # False for deliberately bad lines


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


def _nhs_check_digit(nine: str) -> int | None:
    """Modulus 11 check digit of nine digits, or None when the number cannot be valid."""
    total = sum(int(digit) * weight for digit, weight in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def valid_nhs_number(rng: random.Random) -> str:
    """A 10-digit number with a valid modulus 11 check digit, from the 999 test range.

    Numbers starting 999 pass every format check but are never issued to patients, so the
    simulator can exercise downstream scrubbing without ever producing a real person's number.
    """
    while True:
        nine = "999" + f"{rng.randrange(1_000_000):06d}"
        check = _nhs_check_digit(nine)
        if check is not None:
            return nine + str(check)


def _cumulative(pairs: Sequence[tuple[object, float]]) -> list[float]:
    total = 0.0
    out: list[float] = []
    for _, weight in pairs:
        total += weight
        out.append(total)
    return out


class _Picker(Generic[_T]):
    """Weighted choice from fixed (value, weight) pairs: one bisection per draw."""

    __slots__ = ("_cum", "_rng", "_values")

    def __init__(self, rng: random.Random, pairs: Sequence[tuple[_T, float]]) -> None:
        self._rng = rng
        self._values = [value for value, _ in pairs]
        self._cum = _cumulative(pairs)

    def __call__(self) -> _T:
        return self._rng.choices(self._values, cum_weights=self._cum)[0]


class _Clock:
    """Formats epoch seconds as RFC 3339 and answers local-time questions, with small caches."""

    __slots__ = ("_days", "_offsets")

    def __init__(self) -> None:
        self._days: dict[int, str] = {}
        self._offsets: dict[int, int] = {}

    def offset(self, t: int) -> int:
        """Europe/London UTC offset in seconds at epoch second t (changes fall on UTC hours)."""
        hour = t // 3600
        found = self._offsets.get(hour)
        if found is None:
            if len(self._offsets) > 10_000:
                self._offsets.clear()
            delta = datetime.fromtimestamp(hour * 3600, tz=LONDON).utcoffset()
            found = int(delta.total_seconds()) if delta is not None else 0
            self._offsets[hour] = found
        return found

    def _date(self, day: int) -> str:
        text = self._days.get(day)
        if text is None:
            if len(self._days) > 10_000:
                self._days.clear()
            text = date.fromordinal(_EPOCH_ORDINAL + day).isoformat()
            self._days[day] = text
        return text

    def format(self, t: int, local: bool) -> str:
        """RFC 3339 in whole seconds: UTC with Z, or local with its offset when asked (BST)."""
        suffix = "Z"
        if local:
            offset = self.offset(t)
            if offset:
                t += offset
                hours, minutes = divmod(abs(offset) // 60, 60)
                suffix = f"{'+' if offset > 0 else '-'}{hours:02d}:{minutes:02d}"
        day, secs = divmod(t, _SECONDS_PER_DAY)
        hour, rest = divmod(secs, 3600)
        minute, second = divmod(rest, 60)
        return f"{self._date(day)}T{hour:02d}:{minute:02d}:{second:02d}{suffix}"


# A pending event: (arrival epoch seconds, tie-break sequence, kind, event time, (referral id,
# source), payload). The payload is the data object (received, triaged), (contact_id, mode,
# attended) for a contact, the reason for a cancellation, or a finished line (_RAW).
_Payload = dict[str, object] | tuple[str, str, bool] | str | SimulatedLine
_Ref = tuple[str, str]  # referral id, CloudEvents source; one tuple shared by its events
_Item = tuple[float, int, int, int, _Ref, _Payload]


class _Simulator:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.seed = config.seed
        # Structure and noise draw from separate streams, so changing a noise rate leaves the
        # referrals themselves unchanged.
        self.rng = random.Random(config.seed)
        self.noise = random.Random(f"crisiswatch-noise:{config.seed}")
        self.clock = _Clock()
        self.heap: list[_Item] = []
        self.sequence = 0
        self.event_number = 0
        self.bad_number = 0
        self.referral_number = 0

        providers = [p for icb in icb_profiles() for p in icb.providers]
        weights = [
            icb.mean_referrals_per_month * p.share for icb in icb_profiles() for p in icb.providers
        ]
        self.providers = providers
        self.provider_cum = _cumulative([(p, w) for p, w in zip(providers, weights, strict=True)])

        r = config.reablement_share
        type05_fraction = (1 - _CANCEL_SHARE) * (
            (1 - r) * (1 - _EXCLUDED_SHARE - _RETRIAGE_SHARE) + r * _RETRIAGE_SHARE
        )
        self.rate_scale = config.speed / type05_fraction
        special = (1 - r) * (_EXCLUDED_SHARE + _RETRIAGE_SHARE) + r * _RETRIAGE_SHARE
        # Triage probability for a plain referral so that ~75% of all referrals are triaged.
        plain = (_TRIAGED_SHARE / (1 - _CANCEL_SHARE) - special) / (1 - special)
        self.plain_triage_share = min(1.0, max(0.0, plain))
        mean_weight = sum(_HOUR_WEIGHTS) / len(_HOUR_WEIGHTS)
        self.hour_factor = [w / mean_weight for w in _HOUR_WEIGHTS]
        weekday = 7 / (5 + 2 * _WEEKEND_RELATIVE)
        self.day_factor = [weekday] * 5 + [weekday * _WEEKEND_RELATIVE] * 2

        rng = self.rng
        self.ucr_source = _Picker(rng, _UCR_SOURCES)
        self.reablement_source = _Picker(rng, _REABLEMENT_SOURCES)
        self.ucr_condition = _Picker(rng, _UCR_CONDITIONS)
        self.reablement_condition = _Picker(rng, _REABLEMENT_CONDITIONS)
        self.exclusion_reason = _Picker(rng, _EXCLUSION_REASONS)
        self.cancel_reason = _Picker(rng, _CANCEL_REASONS)
        self.ucr_pre_calls = _Picker(rng, _UCR_PRE_CALLS)
        self.reablement_pre_calls = _Picker(rng, _REABLEMENT_PRE_CALLS)
        self.ucr_follow_ups = _Picker(rng, _UCR_FOLLOW_UPS)
        self.reablement_follow_ups = _Picker(rng, _REABLEMENT_FOLLOW_UPS)
        self.reablement_day = _Picker(rng, list(enumerate(_REABLEMENT_DAY_WEIGHTS)))

    # -- arrivals ---------------------------------------------------------------------------

    def _rate(self, hour: int) -> float:
        """Referral receipts a second during UTC hour ``hour`` (hours since the epoch)."""
        local = datetime.fromtimestamp(hour * 3600, tz=LONDON)
        base = _monthly_type05_per_second()[local.month - 1]
        return (
            base * self.rate_scale * self.hour_factor[local.hour] * self.day_factor[local.weekday()]
        )

    def _receipts(self) -> Iterator[float]:
        """Poisson receipt times (epoch seconds) over the window, inverting the hourly rate."""
        start = self.config.start.timestamp()
        end = start + self.config.duration.total_seconds()
        expovariate = self.rng.expovariate
        t = start
        need = expovariate(1.0)
        hour = -1
        rate = 0.0
        while t < end:
            if int(t // 3600) != hour:
                hour = int(t // 3600)
                rate = self._rate(hour)
            segment_end = min((hour + 1) * 3600.0, end)
            capacity = rate * (segment_end - t)
            if need <= capacity:
                t += need / rate
                yield t
                need = expovariate(1.0)
            else:
                need -= capacity
                t = segment_end

    # -- one referral -----------------------------------------------------------------------

    def _push(self, arrival: float, kind: int, t: int, ref: _Ref, p: _Payload) -> None:
        self.sequence += 1
        heapq.heappush(self.heap, (arrival, self.sequence, kind, t, ref, p))

    def _contact_arrival(self, t: int) -> float:
        rng = self.rng
        if rng.random() < self.config.late_contact_share:
            late = _LATE_CONTACT_MIN_S + rng.expovariate(1 / _LATE_CONTACT_MEAN_S)
            return t + min(late, _LATE_CONTACT_CAP_S)
        return t + min(rng.expovariate(1 / _PROMPT_CONTACT_MEAN_S), _PROMPT_CONTACT_CAP_S)

    def _reablement_visit(self, received: int) -> int:
        """A local-daytime visit on a local day 0-5 days after the receipt's local date."""
        rng = self.rng
        days = self.reablement_day()
        offset = self.clock.offset(received)
        local_day, local_secs = divmod(received + offset, _SECONDS_PER_DAY)
        earliest = _VISIT_DAY_START_S
        if days == 0:
            earliest = max(earliest, local_secs + 1800)
            if earliest > _VISIT_DAY_END_S - 600:
                days, earliest = 1, _VISIT_DAY_START_S
        secs = int(rng.uniform(earliest, _VISIT_DAY_END_S))
        visit_date = date.fromordinal(_EPOCH_ORDINAL + local_day + days)
        clock = time(secs // 3600, secs % 3600 // 60, secs % 60)
        return int(datetime.combine(visit_date, clock, tzinfo=LONDON).timestamp())

    def _referral(self, received_at: float) -> None:
        rng = self.rng
        random_ = rng.random
        received = int(received_at)
        self.referral_number += 1
        rid = f"SIM-{self.seed}-{self.referral_number:08d}"
        provider = self.providers[
            rng.choices(range(len(self.providers)), cum_weights=self.provider_cum)[0]
        ]
        ref = (rid, f"urn:nhs:ods:{provider.code}")
        pathway = _REABLEMENT if random_() < self.config.reablement_share else _UCR

        data: dict[str, object] = {"referral_id": rid, "pathway": pathway}
        data["provider"] = provider.code
        if random_() >= _NO_ICB_SHARE:
            data["icb"] = provider.icb
            if random_() < _EXPLICIT_REGION_SHARE:
                data["region"] = provider.region
        if random_() < 0.9:
            pick = self.ucr_source if pathway == _UCR else self.reablement_source
            data["referral_source"] = pick()
        if random_() < 0.85:
            pick = self.ucr_condition if pathway == _UCR else self.reablement_condition
            data["condition"] = pick()
        if random_() < self.config.nhs_number_rate:
            data["patient_ref"] = valid_nhs_number(rng)
        elif random_() >= _NO_PATIENT_REF_SHARE:
            data["patient_ref"] = f"p-{rng.getrandbits(64):016x}"
        arrival = received + min(rng.expovariate(1 / _RECEIPT_DELAY_MEAN_S), 600.0)
        self._push(arrival, _RECEIVED, received, ref, data)

        if random_() < _CANCEL_SHARE:
            if random_() < 0.8:
                at = received + 60 + int(rng.expovariate(1 / 1200))
            else:
                at = received + int(rng.uniform(3600, 12 * 3600))
            arrival = at + rng.expovariate(1 / _DECISION_DELAY_MEAN_S)
            self._push(arrival, _CANCELLED, at, ref, self.cancel_reason())
            return

        # Triage: exclusion (UCR only), a pathway change, or a plain acceptance.
        final = pathway
        triage: dict[str, object] | None = None
        excluded = False
        u = random_()
        if pathway == _UCR and u < _EXCLUDED_SHARE:
            excluded = True
            triage = {
                "referral_id": rid,
                "subject_to_standard": False,
                "exclusion_reason": self.exclusion_reason(),
            }
        elif (u - _EXCLUDED_SHARE if pathway == _UCR else u) < _RETRIAGE_SHARE:
            final = _REABLEMENT if pathway == _UCR else _UCR
            triage = {"referral_id": rid, "pathway": final}
            if random_() < 0.5:
                triage["subject_to_standard"] = True
        elif random_() < self.plain_triage_share:
            triage = {"referral_id": rid}
            if random_() < 0.7:
                triage["subject_to_standard"] = True
        if triage is not None:
            if pathway == _UCR:
                at = received + 60 + int(rng.expovariate(1 / 480))
            else:
                at = received + 600 + int(rng.expovariate(1 / 7200))
            arrival = at + rng.expovariate(1 / _DECISION_DELAY_MEAN_S)
            self._push(arrival, _TRIAGED, at, ref, triage)

        # The clock stop: first attended face-to-face contact (None: never visited).
        visit: int | None = None
        if random_() >= _NEVER_VISITED_SHARE:
            if final == _REABLEMENT:
                visit = self._reablement_visit(received)
            elif excluded:
                delay = _EXCLUDED_MIN_S + rng.lognormvariate(_EXCLUDED_MU, _EXCLUDED_SIGMA)
                visit = received + int(delay)
            else:
                delay = _UCR_MIN_RESPONSE_S + rng.lognormvariate(provider.mu, _UCR_SIGMA)
                visit = received + int(delay)

        contacts: list[tuple[int, str, bool]] = []
        horizon = visit if visit is not None else received + 4 * 3600
        calls = self.ucr_pre_calls() if final == _UCR else self.reablement_pre_calls()
        if horizon - received > 240:
            for _ in range(calls):
                at = int(rng.uniform(received + 60, horizon - 60))
                mode = "telephone" if random_() < 0.85 else "video"
                contacts.append((at, mode, random_() < _CALL_ANSWERED))
        if (visit is None or random_() < _DNA_BEFORE_VISIT_SHARE) and horizon - received > 1800:
            contacts.append((int(rng.uniform(received + 1200, horizon - 600)), _F2F, False))
        if visit is not None:
            contacts.append((visit, _F2F, True))
            at = visit
            if final == _UCR:
                for _ in range(self.ucr_follow_ups()):
                    at += int(rng.uniform(3600, 20 * 3600))
                    u = random_()
                    mode = _F2F if u < 0.70 else "telephone" if u < 0.95 else "video"
                    contacts.append((at, mode, random_() < _FOLLOW_UP_ATTENDED))
            else:
                for _ in range(self.reablement_follow_ups()):
                    at += int(rng.uniform(18 * 3600, 30 * 3600))
                    contacts.append((at, _F2F, random_() < _FOLLOW_UP_ATTENDED))
        contacts.sort()
        for number, (at, mode, attended) in enumerate(contacts, 1):
            payload = (f"{rid}-C{number}", mode, attended)
            self._push(self._contact_arrival(at), _CONTACT, at, ref, payload)

    # -- emission ---------------------------------------------------------------------------

    def _event(self, kind: int, t: int, ref: _Ref, p: _Payload) -> dict[str, object]:
        rid, source = ref
        if kind in (_RECEIVED, _TRIAGED):
            assert isinstance(p, dict)
            data = p
        elif kind == _CONTACT:
            assert isinstance(p, tuple)
            contact_id, mode, attended = p
            data = {"referral_id": rid, "contact_id": contact_id, "mode": mode}
            data["attended"] = attended
        else:
            data = {"referral_id": rid, "reason": p}
        self.event_number += 1
        local = self.noise.random() < _LOCAL_OFFSET_SHARE
        return {
            "specversion": "1.0",
            "id": f"sim-{self.seed}-{self.event_number}",
            "source": source,
            "type": _TYPES[kind],
            "time": self.clock.format(t, local),
            "datacontenttype": "application/json",
            "data": data,
        }

    def _emit(self, item: _Item) -> SimulatedLine:
        arrival, _, kind, t, ref, payload = item
        if kind == _RAW:
            assert isinstance(payload, SimulatedLine)
            return payload
        event = self._event(kind, t, ref, payload)
        line = _ENCODE(event)
        rid = ref[0]
        out = SimulatedLine(datetime.fromtimestamp(arrival, tz=UTC), rid, line, True)
        noise = self.noise
        config = self.config
        if noise.random() < config.duplicate_rate:
            again = arrival + noise.uniform(1.0, _DUPLICATE_DELAY_MAX_S)
            copy = SimulatedLine(datetime.fromtimestamp(again, tz=UTC), rid, line, True)
            self._push(again, _RAW, t, ref, copy)
        # Extra bad lines, so that bad_rate is their share of all lines.
        if noise.random() < config.bad_rate / (1.0 - config.bad_rate):
            later = arrival + noise.uniform(0.0, 60.0)
            text, key = self._bad(event, line)
            bad = SimulatedLine(datetime.fromtimestamp(later, tz=UTC), key, text, False)
            self._push(later, _RAW, t, ref, bad)
        return out

    def _bad(self, event: dict[str, object], line: str) -> tuple[str, str | None]:
        """A deliberately invalid line derived from ``event``, and its message key."""
        noise = self.noise
        self.bad_number += 1
        data = event["data"]
        assert isinstance(data, dict)
        rid = data["referral_id"]
        key = rid if isinstance(rid, str) else None
        bad: dict[str, object] = dict(event, id=f"sim-{self.seed}-bad-{self.bad_number}")
        bad_data: dict[str, object] = dict(data)
        bad["data"] = bad_data
        kind = noise.randrange(6)
        if kind == 0:  # not JSON: a truncated line (no prefix of an object is JSON)
            return line[: noise.randrange(1, len(line))], None
        if kind == 1:  # not JSON at all
            return noise.choice(_GARBAGE), None
        if kind == 2:
            bad["type"] = noise.choice(("referral.transferred", "referral.updated", "referral"))
        elif kind == 3:  # a required field missing
            options = ["specversion", "id", "source", "type", "time", "data", "referral_id"]
            options += _REQUIRED_DATA[str(event["type"])]
            missing = noise.choice(options)
            if missing == "referral_id":
                key = None
            if missing in bad:
                del bad[missing]
            else:
                del bad_data[missing]
        elif kind == 4:
            bad["time"] = noise.choice(_BAD_TIMES)
        else:
            field, value = noise.choice(_WRONG_VALUES[str(event["type"])])
            if field == "subject_to_standard" and value is False:
                bad_data.pop("exclusion_reason", None)
            if field in bad:
                bad[field] = value
            else:
                bad_data[field] = value
            if field == "referral_id":
                key = None
        return _ENCODE(bad), key

    def run(self) -> Iterator[SimulatedLine]:
        heap = self.heap
        pop = heapq.heappop
        emit = self._emit
        for received_at in self._receipts():
            threshold = int(received_at)
            while heap and heap[0][0] <= threshold:
                yield emit(pop(heap))
            self._referral(received_at)
        while heap:
            yield emit(pop(heap))


_GARBAGE: Final = (
    "<html><body>502 Bad Gateway</body></html>",
    "referral received SIM 12",
    "{'specversion': '1.0'}",
    "null]",
    "\ufeff{",
)
_BAD_TIMES: Final[tuple[object, ...]] = (
    "2024-13-01T10:00:00Z",
    "2024-06-31T10:00:00Z",
    "2024-06-01T25:00:00Z",
    "2024-06-01T10:00:00",  # no offset: not RFC 3339
    "yesterday",
    "",
    1717236000,
    None,
)
_REQUIRED_DATA: Final[dict[str, list[str]]] = {
    "referral.received": ["pathway", "provider"],
    "referral.triaged": [],
    "referral.contact": ["contact_id", "mode", "attended"],
    "referral.cancelled": ["reason"],
}
_WRONG_VALUES: Final[dict[str, list[tuple[str, object]]]] = {
    "referral.received": [
        ("pathway", "ucr_4h"),
        ("pathway", None),
        ("provider", 12345),
        ("referral_id", 42),
        ("specversion", 1.0),
        ("data", "referral"),
        ("datacontenttype", "text/plain"),
    ],
    "referral.triaged": [
        ("subject_to_standard", "no"),
        ("subject_to_standard", False),  # false without an exclusion_reason
        ("pathway", "ucr_48h"),
        ("specversion", "0.3"),
        ("data", ["referral_id"]),
    ],
    "referral.contact": [
        ("attended", "yes"),
        ("attended", 1),
        ("mode", "carrier_pigeon"),
        ("contact_id", 7),
        ("specversion", "0.3"),
        ("data", None),
    ],
    "referral.cancelled": [
        ("reason", "bored"),
        ("reason", 3),
        ("referral_id", None),
        ("specversion", "2.0"),
        ("data", []),
    ],
}


def simulate(config: SimulationConfig) -> Iterator[SimulatedLine]:
    """Synthetic England-shaped event lines, lazily, in arrival order, deterministic per config."""
    return _Simulator(config).run()


def write_ndjson(lines: Iterable[SimulatedLine], path: Path) -> int:
    """Write lines as NDJSON (UTF-8, ``\\n``-terminated); returns how many were written."""
    count = 0
    buffer: list[str] = []
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for item in lines:
            buffer.append(item.line)
            count += 1
            if len(buffer) >= 10_000:
                buffer.append("")
                out.write("\n".join(buffer))
                buffer.clear()
        if buffer:
            buffer.append("")
            out.write("\n".join(buffer))
    return count
