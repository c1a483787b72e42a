"""The simulator: contract-shaped events, England-shaped figures, deterministic and lazy.

One simulated week at speed 1 (about 19,000 referrals, 77,000 lines) is generated once per
module and checked against the published 2024-25 figures; tolerances are several standard
errors wide so the tests are stable for the fixed seed and meaningful for any seed.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from streams.simulation import (
    SimulatedLine,
    SimulationConfig,
    icb_profiles,
    simulate,
    valid_nhs_number,
    write_ndjson,
)

LONDON = ZoneInfo("Europe/London")
TYPES = {"referral.received", "referral.triaged", "referral.contact", "referral.cancelled"}
PATHWAYS = {"ucr_2h", "reablement_2d"}
MODES = {"face_to_face", "telephone", "video"}
EXCLUSION_REASONS = {"patient_requested_later", "clinically_appropriate_later", "other"}
CANCEL_REASONS = {"duplicate", "rejected", "not_appropriate", "withdrawn"}
RFC3339_SECONDS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})")
JUNE_WEEK = datetime(2024, 6, 3, tzinfo=UTC)  # a Monday in British Summer Time


def contract_error(line: str) -> str | None:
    """Why ``line`` breaks CONTRACT section 1, or None when it is a valid event."""
    try:
        event = json.loads(line)
    except ValueError:
        return "not json"
    if not isinstance(event, dict):
        return "not an object"
    for name in ("specversion", "id", "source", "type", "time", "data"):
        if name not in event:
            return f"missing {name}"
    if event["specversion"] != "1.0":
        return "specversion"
    for name in ("id", "source", "type", "time"):
        if not isinstance(event[name], str) or not event[name]:
            return f"bad {name}"
    if event.get("datacontenttype", "application/json") != "application/json":
        return "datacontenttype"
    if event["type"] not in TYPES:
        return "unknown type"
    if not RFC3339_SECONDS.fullmatch(event["time"]):
        return "time format"
    try:
        datetime.fromisoformat(event["time"])
    except ValueError:
        return "time value"
    data = event["data"]
    if not isinstance(data, dict):
        return "data not an object"
    if not isinstance(data.get("referral_id"), str):
        return "referral_id"
    kind = event["type"]
    if kind == "referral.received":
        if data.get("pathway") not in PATHWAYS:
            return "pathway"
        if not isinstance(data.get("provider"), str):
            return "provider"
    elif kind == "referral.triaged":
        if "pathway" in data and data["pathway"] not in PATHWAYS:
            return "pathway"
        subject = data.get("subject_to_standard", True)
        if not isinstance(subject, bool):
            return "subject_to_standard"
        if not subject and data.get("exclusion_reason") not in EXCLUSION_REASONS:
            return "exclusion_reason"
    elif kind == "referral.contact":
        if not isinstance(data.get("contact_id"), str):
            return "contact_id"
        if data.get("mode") not in MODES:
            return "mode"
        if not isinstance(data.get("attended"), bool):
            return "attended"
    elif data.get("reason") not in CANCEL_REASONS:
        return "reason"
    return None


def nhs_number_is_valid(text: str) -> bool:
    """Modulus 11, written independently of the module under test."""
    if not re.fullmatch(r"\d{10}", text):
        return False
    total = sum(int(text[i]) * (10 - i) for i in range(9))
    check = (11 - total % 11) % 11
    return check != 10 and check == int(text[9])


@dataclass
class Referral:
    received: datetime | None = None
    data: dict[str, object] = field(default_factory=dict)
    triage: dict[str, object] | None = None
    cancelled: bool = False
    contacts: list[tuple[datetime, str, bool, float]] = field(default_factory=list)

    @property
    def final_pathway(self) -> object:
        if self.triage and "pathway" in self.triage:
            return self.triage["pathway"]
        return self.data["pathway"]

    @property
    def excluded(self) -> bool:
        return bool(self.triage) and self.triage.get("subject_to_standard") is False  # type: ignore[union-attr]

    @property
    def stop(self) -> datetime | None:
        stops = [t for t, mode, attended, _ in self.contacts if mode == "face_to_face" and attended]
        return min(stops, default=None)


@dataclass
class Run:
    lines: list[SimulatedLine]
    events: list[dict[str, object]]  # valid lines, first copy of each id
    referrals: dict[str, Referral]
    duplicates: int
    bad: int


def digest(lines: list[SimulatedLine]) -> Run:
    events: list[dict[str, object]] = []
    seen: set[str] = set()
    duplicates = bad = 0
    referrals: dict[str, Referral] = {}
    for item in lines:
        if not item.valid:
            bad += 1
            continue
        event = json.loads(item.line)
        if event["id"] in seen:
            duplicates += 1
            continue
        seen.add(event["id"])
        events.append(event)
        data = event["data"]
        when = datetime.fromisoformat(event["time"])
        referral = referrals.setdefault(data["referral_id"], Referral())
        if event["type"] == "referral.received":
            referral.received = when
            referral.data = data
        elif event["type"] == "referral.triaged":
            referral.triage = data
        elif event["type"] == "referral.cancelled":
            referral.cancelled = True
        else:
            delay = (item.arrival - when).total_seconds()
            referral.contacts.append((when, data["mode"], data["attended"], delay))
    return Run(lines, events, referrals, duplicates, bad)


@pytest.fixture(scope="module")
def week() -> Run:
    config = SimulationConfig(start=JUNE_WEEK, duration=timedelta(days=7), seed=11)
    return digest(list(simulate(config)))


def reference_icbs() -> list[dict[str, str]]:
    text = (files("streams") / "data" / "icbs.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


# -- determinism, order, laziness -------------------------------------------------------------


def test_same_config_gives_identical_lines() -> None:
    config = SimulationConfig(start=JUNE_WEEK, duration=timedelta(hours=6), speed=3.0, seed=5)
    first = list(simulate(config))
    assert first == list(simulate(config))
    assert len(first) > 1000
    other = list(simulate(SimulationConfig(start=JUNE_WEEK, duration=timedelta(hours=6), seed=6)))
    assert [x.line for x in other[:50]] != [x.line for x in first[:50]]


def test_arrivals_are_in_order_utc_and_not_before_the_event(week: Run) -> None:
    arrivals = [item.arrival for item in week.lines]
    assert all(a.tzinfo is UTC for a in arrivals)
    assert all(a <= b for a, b in itertools.pairwise(arrivals))
    for item in week.lines:
        if item.valid:
            assert item.arrival >= datetime.fromisoformat(json.loads(item.line)["time"])


def test_simulation_is_lazy() -> None:
    # A year at speed 100 would be ~400 million lines; the first few must come at once.
    config = SimulationConfig(start=JUNE_WEEK, duration=timedelta(days=365), speed=100.0)
    first = list(itertools.islice(simulate(config), 20))
    assert len(first) == 20


# -- the contract -----------------------------------------------------------------------------


def test_valid_lines_follow_the_contract(week: Run) -> None:
    errors = Counter(contract_error(item.line) for item in week.lines if item.valid)
    assert errors == Counter({None: sum(item.valid for item in week.lines)})
    for event in week.events:
        assert event["datacontenttype"] == "application/json"
        assert re.fullmatch(r"urn:nhs:ods:R[0-9A-Z]{2}", str(event["source"]))


def test_bad_lines_break_the_contract_in_several_ways(week: Run) -> None:
    config = SimulationConfig(start=JUNE_WEEK, duration=timedelta(hours=12), bad_rate=0.05)
    bad = [item for item in simulate(config) if not item.valid]
    reasons = Counter(contract_error(item.line) for item in bad)
    assert None not in reasons
    assert {"not json", "unknown type", "time format"} <= set(reasons)
    assert any(reason.startswith("missing") for reason in reasons if reason)
    assert all(isinstance(item.line, str) and "\n" not in item.line for item in bad)
    for item in bad:  # the key is the referral id whenever the line carries one
        assert item.key is None or item.key.startswith("SIM-0-")
    assert all(contract_error(item.line) for item in week.lines if not item.valid)


def test_ids_are_unique_and_keys_are_referral_ids(week: Run) -> None:
    ids = Counter(str(event["id"]) for event in week.events)
    assert max(ids.values()) == 1
    assert all(re.fullmatch(r"sim-11-\d+", i) for i in ids)
    received = [e for e in week.events if e["type"] == "referral.received"]
    referral_ids = [e["data"]["referral_id"] for e in received]  # type: ignore[index]
    assert len(set(referral_ids)) == len(referral_ids) == len(week.referrals)
    contact_ids = [
        e["data"]["contact_id"]  # type: ignore[index]
        for e in week.events
        if e["type"] == "referral.contact"
    ]
    assert len(set(contact_ids)) == len(contact_ids)
    for item in week.lines:
        if item.valid:
            assert item.key == json.loads(item.line)["data"]["referral_id"]


def test_times_are_utc_or_bst_offsets(week: Run) -> None:
    offsets = Counter(str(event["time"])[19:] for event in week.events)
    assert set(offsets) == {"Z", "+01:00"}
    assert 0.02 < offsets["+01:00"] / len(week.events) < 0.1
    winter = SimulationConfig(start=datetime(2025, 1, 6, tzinfo=UTC), duration=timedelta(hours=6))
    assert all('Z","datacontenttype"' in item.line for item in simulate(winter) if item.valid)


def test_every_event_follows_its_receipt(week: Run) -> None:
    for referral in week.referrals.values():
        assert referral.received is not None
        if referral.cancelled:
            assert not referral.contacts
        assert all(t >= referral.received for t, *_ in referral.contacts)


# -- England's shape --------------------------------------------------------------------------


def test_icb_shares_match_the_reference(week: Run) -> None:
    rows = reference_icbs()
    total = sum(float(row["mean_referrals_per_month"]) for row in rows)
    provider_icb = {p.code: p.icb for icb in icb_profiles() for p in icb.providers}
    observed = Counter(provider_icb[str(r.data["provider"])] for r in week.referrals.values())
    n = len(week.referrals)
    for row in rows:
        expected = float(row["mean_referrals_per_month"]) / total
        sigma = math.sqrt(expected * (1 - expected) / n)
        assert abs(observed[row["icb_code"]] / n - expected) < 5 * sigma, row["icb_code"]


def test_volume_matches_england_at_speed_one(week: Run) -> None:
    # June 2024: 67,925 type-05 referrals in 30 days.
    type05 = [
        r
        for r in week.referrals.values()
        if not r.cancelled and r.final_pathway == "ucr_2h" and not r.excluded
    ]
    per_day = len(type05) / 7
    assert 67_925 / 30 * 0.95 < per_day < 67_925 / 30 * 1.05


def test_speed_multiplies_the_rate() -> None:
    def received(speed: float) -> int:
        config = SimulationConfig(start=JUNE_WEEK, duration=timedelta(days=1), speed=speed)
        return sum('"referral.received"' in item.line for item in simulate(config) if item.valid)

    ratio = received(4.0) / received(1.0)
    assert 3.6 < ratio < 4.4


def test_daytime_is_busier_than_night(week: Run) -> None:
    hours = Counter(
        r.received.astimezone(LONDON).hour for r in week.referrals.values() if r.received
    )
    day = sum(hours[h] for h in range(8, 20)) / 12
    night = sum(hours[h] for h in range(0, 6)) / 6
    assert day > 4 * night


def test_ucr_first_visit_within_two_hours_near_england(week: Run) -> None:
    rows = reference_icbs()
    weights = [float(row["mean_referrals_per_month"]) for row in rows]
    expected = sum(
        w * float(row["mean_pct_within_2h"]) for w, row in zip(weights, rows, strict=True)
    ) / sum(weights)
    stopped = met = 0
    for r in week.referrals.values():
        if r.cancelled or r.final_pathway != "ucr_2h" or r.excluded or r.stop is None:
            continue
        assert r.received is not None
        stopped += 1
        met += (r.stop - r.received) <= timedelta(hours=2)
    pct = 100 * met / stopped
    assert abs(pct - expected) < 1.5
    assert 82 < pct < 88


def test_icb_performance_spread_follows_the_reference(week: Run) -> None:
    provider_icb = {p.code: p.icb for icb in icb_profiles() for p in icb.providers}
    met: Counter[str] = Counter()
    stopped: Counter[str] = Counter()
    for r in week.referrals.values():
        if r.cancelled or r.final_pathway != "ucr_2h" or r.excluded or r.stop is None:
            continue
        assert r.received is not None
        icb = provider_icb[str(r.data["provider"])]
        stopped[icb] += 1
        met[icb] += (r.stop - r.received) <= timedelta(hours=2)
    published = {row["icb_code"]: float(row["mean_pct_within_2h"]) for row in reference_icbs()}
    codes = sorted(published)
    simulated = [100 * met[code] / stopped[code] for code in codes]
    assert statistics.correlation(simulated, [published[code] for code in codes]) > 0.8
    # The largest ICB (North East and North Cumbria, ~2,000 stops a week) is close to its own.
    assert abs(100 * met["QHM"] / stopped["QHM"] - published["QHM"]) < 3
    assert 100 * met["QT1"] / stopped["QT1"] > 93  # Nottingham, the best at 97.8%


def test_reablement_mostly_within_two_days(week: Run) -> None:
    within = total = 0
    for r in week.referrals.values():
        if r.cancelled or r.final_pathway != "reablement_2d" or r.stop is None:
            continue
        assert r.received is not None
        total += 1
        nights = (r.stop.astimezone(LONDON).date() - r.received.astimezone(LONDON).date()).days
        assert 0 <= nights <= 5
        within += nights <= 2
    assert 0.75 < within / total < 0.85


def test_contacts_per_referral_near_published(week: Run) -> None:
    contacts = sum(len(r.contacts) for r in week.referrals.values())
    assert 2.2 < contacts / len(week.referrals) < 2.4
    modes = Counter(mode for r in week.referrals.values() for _, mode, _, _ in r.contacts)
    assert modes["telephone"] > 0
    assert modes["video"] > 0
    attended = Counter(
        a for r in week.referrals.values() for _, m, a, _ in r.contacts if m == "face_to_face"
    )
    assert 0 < attended[False] / attended[True] < 0.1


def test_pathway_triage_exclusion_and_cancellation_shares(week: Run) -> None:
    referrals = list(week.referrals.values())
    n = len(referrals)
    reablement = sum(r.data["pathway"] == "reablement_2d" for r in referrals)
    assert 0.09 < reablement / n < 0.11
    assert 0.73 < sum(r.triage is not None for r in referrals) / n < 0.77
    assert 0.02 < sum(r.cancelled for r in referrals) / n < 0.03
    ucr = [r for r in referrals if r.data["pathway"] == "ucr_2h" and not r.cancelled]
    assert 0.02 < sum(r.excluded for r in ucr) / len(ucr) < 0.04
    retriaged = sum(bool(r.triage and "pathway" in r.triage) for r in referrals)
    assert 0.015 < retriaged / n < 0.025
    reasons = {r.triage["exclusion_reason"] for r in referrals if r.excluded and r.triage}
    assert reasons == EXCLUSION_REASONS
    never = [r for r in ucr if r.stop is None]
    assert 0.005 < len(never) / len(ucr) < 0.02


def test_region_mostly_omitted_and_unknown_have_no_icb(week: Run) -> None:
    regions = {p.icb: p.region for icb in icb_profiles() for p in icb.providers}
    data = [r.data for r in week.referrals.values()]
    no_icb = [d for d in data if "icb" not in d]
    assert 0.02 < len(no_icb) / len(data) < 0.04
    assert all("region" not in d for d in no_icb)
    with_icb = [d for d in data if "icb" in d]
    explicit = [d for d in with_icb if "region" in d]
    assert 0.1 < len(explicit) / len(with_icb) < 0.2
    assert all(d["region"] == regions[str(d["icb"])] for d in explicit)


def test_late_contacts_share(week: Run) -> None:
    delays = [delay for r in week.referrals.values() for *_, delay in r.contacts]
    late = sum(delay >= 1800 for delay in delays) / len(delays)
    assert 0.13 < late < 0.17
    assert max(delays) > 3 * 3600


def test_duplicates_and_bad_lines_at_configured_rates(week: Run) -> None:
    total = len(week.lines)
    assert 0.0013 < week.duplicates / total < 0.0027
    assert 0.0005 < week.bad / total < 0.0015
    config = SimulationConfig(
        start=JUNE_WEEK, duration=timedelta(hours=12), duplicate_rate=0.05, bad_rate=0.02
    )
    run = digest(list(simulate(config)))
    assert 0.045 < run.duplicates / (len(run.lines) - run.bad) < 0.055
    assert 0.017 < run.bad / len(run.lines) < 0.023
    by_line = Counter(item.line for item in run.lines if item.valid)
    assert set(by_line.values()) == {1, 2}  # a duplicate is the identical line, sent once more


def test_patient_refs_are_pseudonyms_or_sometimes_nhs_numbers(week: Run) -> None:
    refs = [str(r.data["patient_ref"]) for r in week.referrals.values() if "patient_ref" in r.data]
    numbers = [ref for ref in refs if not ref.startswith("p-")]
    assert all(re.fullmatch(r"p-[0-9a-f]{16}", ref) for ref in refs if ref.startswith("p-"))
    assert all(nhs_number_is_valid(ref) for ref in numbers)
    assert 0.002 < len(numbers) / len(week.referrals) < 0.009


def test_valid_nhs_number() -> None:
    rng = random.Random(3)
    numbers = [valid_nhs_number(rng) for _ in range(500)]
    assert all(nhs_number_is_valid(n) for n in numbers)
    assert len(set(numbers)) > 490
    assert not nhs_number_is_valid(numbers[0][:9] + str((int(numbers[0][9]) + 1) % 10))


# -- providers --------------------------------------------------------------------------------


def test_providers_are_fixed_per_icb(week: Run) -> None:
    profiles = icb_profiles()
    assert [icb.code for icb in profiles] == sorted(row["icb_code"] for row in reference_icbs())
    codes = [p.code for icb in profiles for p in icb.providers]
    assert len(codes) == len(set(codes))
    for icb in profiles:
        assert 2 <= len(icb.providers) <= 6
        assert all(re.fullmatch(r"R[0-9A-Z]{2}", p.code) for p in icb.providers)
        assert math.isclose(sum(p.share for p in icb.providers), 1.0)
        weighted = sum(p.share * p.pct_within_2h for p in icb.providers)
        assert math.isclose(weighted, icb.pct_within_2h)
    provider_icb = {p.code: p.icb for icb in profiles for p in icb.providers}
    for r in week.referrals.values():
        if "icb" in r.data:
            assert provider_icb[str(r.data["provider"])] == r.data["icb"]


# -- files and settings -----------------------------------------------------------------------


def test_write_ndjson_round_trips(tmp_path: Path) -> None:
    config = SimulationConfig(start=JUNE_WEEK, duration=timedelta(hours=3), seed=2)
    lines = list(simulate(config))
    path = tmp_path / "events.ndjson"
    assert write_ndjson(iter(lines), path) == len(lines)
    assert path.read_text(encoding="utf-8").split("\n") == [item.line for item in lines] + [""]


@pytest.mark.parametrize(
    "changes",
    [
        {"start": datetime(2024, 6, 3)},  # naive start
        {"duration": timedelta(0)},  # nothing to simulate
        {"speed": 0.0},  # no referrals at all
        {"speed": math.inf},  # not a rate
        {"reablement_share": 1.0},  # no type-05 clocks to calibrate on
        {"duplicate_rate": 1.0},  # every line repeated forever is not a rate
        {"bad_rate": -0.1},  # negative share
    ],
)
def test_config_rejects_nonsense(changes: dict[str, object]) -> None:
    settings: dict[str, object] = {"start": JUNE_WEEK, "duration": timedelta(hours=1)}
    settings.update(changes)
    with pytest.raises(ValueError, match=r"\w"):
        SimulationConfig(**settings)  # type: ignore[arg-type]
