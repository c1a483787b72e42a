"""The event generator: referrals planned from the profile, emitted lazily with noise.

``simulate`` runs a ``_Simulator``: Poisson receipts (``_receipts``), each referral's events
planned at receipt (``_referral``) into a heap keyed by arrival time, and emission in arrival
order (``_emit``) with duplicates and deliberately bad lines mixed in. See the package
docstring for the model.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Final, Generic, TypeVar

from streams.engine.event import (
    CANCELLED,
    CONTACT,
    EVENT_TYPES,
    FACE_TO_FACE,
    REABLEMENT_2D,
    RECEIVED,
    TRIAGED,
    UCR_2H,
)
from streams.pseudonym import is_nhs_number
from streams.simulation.profile import (
    _CALL_ANSWERED,
    _CANCEL_REASONS,
    _CANCEL_SHARE,
    _DECISION_DELAY_MEAN_S,
    _DNA_BEFORE_VISIT_SHARE,
    _DUPLICATE_DELAY_MAX_S,
    _EPOCH_ORDINAL,
    _EXCLUDED_MIN_S,
    _EXCLUDED_MU,
    _EXCLUDED_SHARE,
    _EXCLUDED_SIGMA,
    _EXCLUSION_REASONS,
    _EXPLICIT_REGION_SHARE,
    _FOLLOW_UP_ATTENDED,
    _LATE_CONTACT_CAP_S,
    _LATE_CONTACT_MEAN_S,
    _LATE_CONTACT_MIN_S,
    _LOCAL_OFFSET_SHARE,
    _NEVER_VISITED_SHARE,
    _NO_ICB_SHARE,
    _NO_PATIENT_REF_SHARE,
    _PROMPT_CONTACT_CAP_S,
    _PROMPT_CONTACT_MEAN_S,
    _REABLEMENT_CONDITIONS,
    _REABLEMENT_DAY_WEIGHTS,
    _REABLEMENT_FOLLOW_UPS,
    _REABLEMENT_PRE_CALLS,
    _REABLEMENT_SOURCES,
    _RECEIPT_DELAY_MEAN_S,
    _RETRIAGE_SHARE,
    _SECONDS_PER_DAY,
    _UCR_CONDITIONS,
    _UCR_FOLLOW_UPS,
    _UCR_MIN_RESPONSE_S,
    _UCR_PRE_CALLS,
    _UCR_SIGMA,
    _UCR_SOURCES,
    _VISIT_DAY_END_S,
    _VISIT_DAY_START_S,
    LONDON,
    SimulationConfig,
    _day_factors,
    _hour_factors,
    _monthly_type05_per_second,
    _plain_triage_share,
    _rate_scale,
    icb_profiles,
)

_T = TypeVar("_T")

_JSON_SEPARATORS: Final = (",", ":")
# Same output as json.dumps(obj, separators=_JSON_SEPARATORS), without the per-call set-up.
_ENCODE: Final = json.JSONEncoder(separators=_JSON_SEPARATORS).encode

# Heap item kinds: the first four index the engine's EVENT_TYPES; _KIND_RAW is a finished line.
_KIND_RECEIVED: Final = EVENT_TYPES.index(RECEIVED)
_KIND_TRIAGED: Final = EVENT_TYPES.index(TRIAGED)
_KIND_CONTACT: Final = EVENT_TYPES.index(CONTACT)
_KIND_CANCELLED: Final = EVENT_TYPES.index(CANCELLED)
_KIND_RAW: Final = len(EVENT_TYPES)


@dataclass(frozen=True, slots=True)
class SimulatedLine:
    """One NDJSON line as a source system would send it."""

    arrival: datetime  # tz-aware UTC, when the source system sends it
    key: str | None  # referral id (None for bad lines that have none)
    line: str  # the exact NDJSON line, without newline
    valid: bool  # False for deliberately bad lines


def valid_nhs_number(rng: random.Random) -> str:
    """A 10-digit number with a valid modulus 11 check digit, from the 999 test range.

    Numbers starting 999 pass every format check but are never issued to patients, so the
    simulator can exercise downstream scrubbing without ever producing a real person's number.
    Nine digits are drawn until some check digit makes them valid (none does for about one in
    eleven draws); the validity rule is ``streams.pseudonym.is_nhs_number``.
    """
    while True:
        nine = "999" + f"{rng.randrange(1_000_000):06d}"
        for check in "0123456789":
            if is_nhs_number(nine + check):
                return nine + check


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
# attended) for a contact, the reason for a cancellation, or a finished line (_KIND_RAW).
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

        self.rate_scale = _rate_scale(config)
        self.plain_triage_share = _plain_triage_share(config)
        self.hour_factor = _hour_factors()
        self.day_factor = _day_factors()

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
        pathway = REABLEMENT_2D if random_() < self.config.reablement_share else UCR_2H

        data: dict[str, object] = {"referral_id": rid, "pathway": pathway}
        data["provider"] = provider.code
        if random_() >= _NO_ICB_SHARE:
            data["icb"] = provider.icb
            if random_() < _EXPLICIT_REGION_SHARE:
                data["region"] = provider.region
        if random_() < 0.9:
            pick = self.ucr_source if pathway == UCR_2H else self.reablement_source
            data["referral_source"] = pick()
        if random_() < 0.85:
            pick = self.ucr_condition if pathway == UCR_2H else self.reablement_condition
            data["condition"] = pick()
        if random_() < self.config.nhs_number_rate:
            data["patient_ref"] = valid_nhs_number(rng)
        elif random_() >= _NO_PATIENT_REF_SHARE:
            data["patient_ref"] = f"p-{rng.getrandbits(64):016x}"
        arrival = received + min(rng.expovariate(1 / _RECEIPT_DELAY_MEAN_S), 600.0)
        self._push(arrival, _KIND_RECEIVED, received, ref, data)

        if random_() < _CANCEL_SHARE:
            if random_() < 0.8:
                at = received + 60 + int(rng.expovariate(1 / 1200))
            else:
                at = received + int(rng.uniform(3600, 12 * 3600))
            arrival = at + rng.expovariate(1 / _DECISION_DELAY_MEAN_S)
            self._push(arrival, _KIND_CANCELLED, at, ref, self.cancel_reason())
            return

        # Triage: exclusion (UCR only), a pathway change, or a plain acceptance.
        final = pathway
        triage: dict[str, object] | None = None
        excluded = False
        u = random_()
        if pathway == UCR_2H and u < _EXCLUDED_SHARE:
            excluded = True
            triage = {
                "referral_id": rid,
                "subject_to_standard": False,
                "exclusion_reason": self.exclusion_reason(),
            }
        elif (u - _EXCLUDED_SHARE if pathway == UCR_2H else u) < _RETRIAGE_SHARE:
            final = REABLEMENT_2D if pathway == UCR_2H else UCR_2H
            triage = {"referral_id": rid, "pathway": final}
            if random_() < 0.5:
                triage["subject_to_standard"] = True
        elif random_() < self.plain_triage_share:
            triage = {"referral_id": rid}
            if random_() < 0.7:
                triage["subject_to_standard"] = True
        if triage is not None:
            if pathway == UCR_2H:
                at = received + 60 + int(rng.expovariate(1 / 480))
            else:
                at = received + 600 + int(rng.expovariate(1 / 7200))
            arrival = at + rng.expovariate(1 / _DECISION_DELAY_MEAN_S)
            self._push(arrival, _KIND_TRIAGED, at, ref, triage)

        # The clock stop: first attended face-to-face contact (None: never visited).
        visit: int | None = None
        if random_() >= _NEVER_VISITED_SHARE:
            if final == REABLEMENT_2D:
                visit = self._reablement_visit(received)
            elif excluded:
                delay = _EXCLUDED_MIN_S + rng.lognormvariate(_EXCLUDED_MU, _EXCLUDED_SIGMA)
                visit = received + int(delay)
            else:
                delay = _UCR_MIN_RESPONSE_S + rng.lognormvariate(provider.mu, _UCR_SIGMA)
                visit = received + int(delay)

        contacts: list[tuple[int, str, bool]] = []
        horizon = visit if visit is not None else received + 4 * 3600
        calls = self.ucr_pre_calls() if final == UCR_2H else self.reablement_pre_calls()
        if horizon - received > 240:
            for _ in range(calls):
                at = int(rng.uniform(received + 60, horizon - 60))
                mode = "telephone" if random_() < 0.85 else "video"
                contacts.append((at, mode, random_() < _CALL_ANSWERED))
        if (visit is None or random_() < _DNA_BEFORE_VISIT_SHARE) and horizon - received > 1800:
            contacts.append((int(rng.uniform(received + 1200, horizon - 600)), FACE_TO_FACE, False))
        if visit is not None:
            contacts.append((visit, FACE_TO_FACE, True))
            at = visit
            if final == UCR_2H:
                for _ in range(self.ucr_follow_ups()):
                    at += int(rng.uniform(3600, 20 * 3600))
                    u = random_()
                    mode = FACE_TO_FACE if u < 0.70 else "telephone" if u < 0.95 else "video"
                    contacts.append((at, mode, random_() < _FOLLOW_UP_ATTENDED))
            else:
                for _ in range(self.reablement_follow_ups()):
                    at += int(rng.uniform(18 * 3600, 30 * 3600))
                    contacts.append((at, FACE_TO_FACE, random_() < _FOLLOW_UP_ATTENDED))
        contacts.sort()
        for number, (at, mode, attended) in enumerate(contacts, 1):
            payload = (f"{rid}-C{number}", mode, attended)
            self._push(self._contact_arrival(at), _KIND_CONTACT, at, ref, payload)

    # -- emission ---------------------------------------------------------------------------

    def _event(self, kind: int, t: int, ref: _Ref, p: _Payload) -> dict[str, object]:
        rid, source = ref
        if kind in (_KIND_RECEIVED, _KIND_TRIAGED):
            assert isinstance(p, dict)
            data = p
        elif kind == _KIND_CONTACT:
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
            "type": EVENT_TYPES[kind],
            "time": self.clock.format(t, local),
            "datacontenttype": "application/json",
            "data": data,
        }

    def _emit(self, item: _Item) -> SimulatedLine:
        arrival, _, kind, t, ref, payload = item
        if kind == _KIND_RAW:
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
            self._push(again, _KIND_RAW, t, ref, copy)
        # Extra bad lines, so that bad_rate is their share of all lines.
        if noise.random() < config.bad_rate / (1.0 - config.bad_rate):
            later = arrival + noise.uniform(0.0, 60.0)
            text, key = self._bad(event, line)
            bad = SimulatedLine(datetime.fromtimestamp(later, tz=UTC), key, text, False)
            self._push(later, _KIND_RAW, t, ref, bad)
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


# -- noise: material for deliberately invalid lines ------------------------------------

# Whole lines that are not JSON objects at all.
_GARBAGE: Final = (
    "<html><body>502 Bad Gateway</body></html>",
    "referral received SIM 12",
    "{'specversion': '1.0'}",
    "null]",
    "\ufeff{",
)
# Values for ``time`` that are not RFC 3339 date-times.
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
# Required data fields per event type, beyond referral_id (candidates for a missing field).
_REQUIRED_DATA: Final[dict[str, list[str]]] = {
    RECEIVED: ["pathway", "provider"],
    TRIAGED: [],
    CONTACT: ["contact_id", "mode", "attended"],
    CANCELLED: ["reason"],
}
# (field, value) pairs of the wrong type or outside the vocabulary, per event type; a field
# found at the top level of the event is replaced there, else in ``data``.
_WRONG_VALUES: Final[dict[str, list[tuple[str, object]]]] = {
    RECEIVED: [
        ("pathway", "ucr_4h"),
        ("pathway", None),
        ("provider", 12345),
        ("referral_id", 42),
        ("specversion", 1.0),
        ("data", "referral"),
        ("datacontenttype", "text/plain"),
    ],
    TRIAGED: [
        ("subject_to_standard", "no"),
        ("subject_to_standard", False),  # false without an exclusion_reason
        ("pathway", "ucr_48h"),
        ("specversion", "0.3"),
        ("data", ["referral_id"]),
    ],
    CONTACT: [
        ("attended", "yes"),
        ("attended", 1),
        ("mode", "carrier_pigeon"),
        ("contact_id", 7),
        ("specversion", "0.3"),
        ("data", None),
    ],
    CANCELLED: [
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
