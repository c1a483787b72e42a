"""Every rule of STANDARDS.md, as tables (one comment per row)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.engine import Engine, Event, Outcome, Rules, StartMode, format_instant
from tests.factory import at, cancelled, contact, outcome_of, received, triaged

R = "REF-1"


def judge(events: list[Event], now: str | int | None = None, rules: Rules | None = None) -> Outcome:
    engine = Engine(rules)
    for event in events:
        engine.ingest(event)
    instant = at(now) if isinstance(now, str) else now
    if instant is None:
        assert engine.watermark is not None
        instant = engine.watermark
    outcome = outcome_of(engine, R, instant)
    assert outcome is not None
    return outcome


# -- R3/R4: 2-hour waits in real elapsed seconds, met iff <= 120:00 ------------------------------

UCR_STOPS = [
    # (received, first face-to-face contact, wait seconds, state)
    ("2026-02-03T14:00:00Z", "2026-02-03T16:00:00Z", 7200, "met"),  # exactly 120:00 is met
    ("2026-02-03T14:00:00Z", "2026-02-03T16:00:01Z", 7201, "not_met"),  # 120:01 is not
    ("2026-02-03T14:00:00Z", "2026-02-03T15:59:59Z", 7199, "met"),  # 119:59
    ("2026-02-03T14:00:00Z", "2026-02-03T14:00:00Z", 0, "met"),  # seen at once
    ("2026-02-03T14:00:00Z", "2026-02-04T14:00:00Z", 86400, "not_met"),  # a day late
    # BST starts 2026-03-29 01:00 UTC: local 00:45 GMT -> 03:25 BST is 100 real minutes
    ("2026-03-29T00:45:00+00:00", "2026-03-29T03:25:00+01:00", 6000, "met"),
    # ... and 00:30 GMT -> 03:31 BST is 121 real minutes (181 on the wall clock)
    ("2026-03-29T00:30:00+00:00", "2026-03-29T03:31:00+01:00", 7260, "not_met"),
    # BST ends 2026-10-25 01:00 UTC: 00:30 BST -> 01:30 GMT is 120 real minutes (60 on the wall)
    ("2026-10-25T00:30:00+01:00", "2026-10-25T01:30:00+00:00", 7200, "met"),
    # ... and 00:30 BST -> 01:31 GMT is 121 real minutes: not met though the wall says 61
    ("2026-10-25T00:30:00+01:00", "2026-10-25T01:31:00+00:00", 7260, "not_met"),
    # the repeated 01:xx hour: 01:10 BST -> 01:50 GMT is 100 minutes
    ("2026-10-25T01:10:00+01:00", "2026-10-25T01:50:00+00:00", 6000, "met"),
]


@pytest.mark.parametrize(("start", "stop", "wait", "state"), UCR_STOPS)
def test_ucr_wait_and_verdict(start: str, stop: str, wait: int, state: str) -> None:
    outcome = judge([received(R, start), contact(R, stop)])
    assert (outcome.clock_type, outcome.wait_seconds, outcome.state) == ("05", wait, state)
    assert (outcome.clock_start, outcome.clock_stop) == (at(start), at(stop))


# -- R2: only an attended face-to-face contact stops the clock -----------------------------------

CONTACTS = [
    # (contacts as (minutes after receipt, mode, attended), stop minute or None)
    ([(10, "telephone", True)], None),  # a call does not stop it
    ([(10, "video", True)], None),  # nor a video consultation
    ([(30, "face_to_face", False)], None),  # nor a visit the patient did not attend
    ([(10, "telephone", True), (90, "face_to_face", True)], 90),  # call, then the visit
    ([(30, "face_to_face", False), (95, "face_to_face", True)], 95),  # DNA, then seen
    ([(100, "face_to_face", True), (40, "face_to_face", True)], 40),  # the first visit counts
    ([(40, "face_to_face", True), (40, "face_to_face", True)], 40),  # two at the same time
    ([(130, "video", True), (125, "face_to_face", True)], 125),  # seen late: not met
]


@pytest.mark.parametrize(("contacts", "stop_minute"), CONTACTS)
def test_which_contact_stops_the_clock(
    contacts: list[tuple[int, str, bool]], stop_minute: int | None
) -> None:
    start = at("2026-02-03T14:00:00Z")
    events = [received(R, start)] + [
        contact(R, start + m * 60, mode, attended=attended, contact_id=f"c{i}")
        for i, (m, mode, attended) in enumerate(contacts)
    ]
    outcome = judge(events, now=start + 10 * 3600)
    if stop_minute is None:
        assert outcome.clock_stop is None
        assert outcome.state == "breached"  # 10 hours on, never seen face to face
    else:
        assert outcome.clock_stop == start + stop_minute * 60
        assert outcome.state == ("met" if stop_minute <= 120 else "not_met")


# -- R5: 2-day reablement, midnights in Europe/London ---------------------------------------------

REABLEMENT_STOPS = [
    # (received, first visit, state)
    ("2026-02-04T09:00:00Z", "2026-02-06T16:00:00Z", "met"),  # day + 2
    ("2026-01-05T00:00:00Z", "2026-01-07T23:59:59Z", "met"),  # last second of day + 2
    ("2026-01-05T00:00:00Z", "2026-01-08T00:00:00Z", "not_met"),  # third midnight crossed
    ("2026-01-05T23:59:59Z", "2026-01-07T23:59:59Z", "met"),  # late start, same calendar rule
    # BST: 23:30 local on 1 June is 22:30 UTC; 23:59 local on 3 June is met...
    ("2026-06-01T22:30:00Z", "2026-06-03T22:59:00Z", "met"),
    # ... but 23:00 UTC on 3 June is 00:00 local on 4 June: not met, though the UTC date says 3rd
    ("2026-06-01T22:30:00Z", "2026-06-03T23:00:00Z", "not_met"),
    # 00:30 BST on 2 June is 23:30 UTC on 1 June: local day is the 2nd, so 4 June local is met
    ("2026-06-01T23:30:00Z", "2026-06-04T22:00:00Z", "met"),
    # across the end of BST (25 Oct): 23 Oct 10:00 BST -> 25 Oct 23:30 GMT is day + 2
    ("2026-10-23T10:00:00+01:00", "2026-10-25T23:30:00+00:00", "met"),
    # across the start of BST (29 Mar): 27 Mar 23:30 GMT -> 30 Mar 00:10 BST is day + 3
    ("2026-03-27T23:30:00+00:00", "2026-03-30T00:10:00+01:00", "not_met"),
    ("2026-02-04T09:00:00Z", "2026-02-04T09:00:00Z", "met"),  # same minute
]


@pytest.mark.parametrize(("start", "stop", "state"), REABLEMENT_STOPS)
def test_reablement_midnights(start: str, stop: str, state: str) -> None:
    outcome = judge([received(R, start, "reablement_2d"), contact(R, stop)])
    assert (outcome.clock_type, outcome.state) == ("06", state)
    assert outcome.wait_seconds == at(stop) - at(start)


def test_reablement_days_is_a_setting() -> None:
    events = [
        received(R, "2026-01-05T10:00:00Z", "reablement_2d"),
        contact(R, "2026-01-08T10:00:00Z"),
    ]
    assert judge(events).state == "not_met"
    assert judge(events, rules=Rules(reablement_days=3)).state == "met"


# -- Live states of open clocks ---------------------------------------------------------------------

UCR_LIVE = [
    # (elapsed seconds since receipt, live state)
    (0, "waiting"),
    (89 * 60 + 59, "waiting"),  # 89:59
    (90 * 60, "at_risk"),  # 90:00 exactly
    (120 * 60, "at_risk"),  # 120:00: a visit now would still be met
    (120 * 60 + 1, "breached"),  # 120:01
    (36 * 3600, "breached"),
    (-60, "waiting"),  # judged before it started (an --as-of in the past)
]


@pytest.mark.parametrize(("elapsed", "state"), UCR_LIVE)
def test_ucr_live_states(elapsed: int, state: str) -> None:
    start = at("2026-02-03T14:00:00Z")
    outcome = judge([received(R, start)], now=start + elapsed)
    assert outcome.state == state
    assert (outcome.clock_stop, outcome.wait_seconds) == (None, None)


REABLEMENT_LIVE = [
    # (received, judged at, live state)
    ("2026-01-05T09:00:00Z", "2026-01-07T11:59:59Z", "waiting"),
    ("2026-01-05T09:00:00Z", "2026-01-07T12:00:00Z", "at_risk"),  # noon on the last day
    ("2026-01-05T09:00:00Z", "2026-01-07T23:59:59Z", "at_risk"),
    ("2026-01-05T09:00:00Z", "2026-01-08T00:00:00Z", "breached"),  # the midnight ending it
    # BST: noon local on 3 June is 11:00 UTC; the midnight ending it is 23:00 UTC
    ("2026-06-01T09:00:00+01:00", "2026-06-03T10:59:59Z", "waiting"),
    ("2026-06-01T09:00:00+01:00", "2026-06-03T11:00:00Z", "at_risk"),
    ("2026-06-01T09:00:00+01:00", "2026-06-03T22:59:59Z", "at_risk"),
    ("2026-06-01T09:00:00+01:00", "2026-06-03T23:00:00Z", "breached"),
    # last day is 25 Oct (BST ends): noon GMT, midnight 26 Oct 00:00 GMT
    ("2026-10-23T20:00:00+01:00", "2026-10-25T11:59:59Z", "waiting"),
    ("2026-10-23T20:00:00+01:00", "2026-10-25T12:00:00Z", "at_risk"),
    ("2026-10-23T20:00:00+01:00", "2026-10-26T00:00:00Z", "breached"),
]


@pytest.mark.parametrize(("start", "now", "state"), REABLEMENT_LIVE)
def test_reablement_live_states(start: str, now: str, state: str) -> None:
    assert judge([received(R, start, "reablement_2d")], now=now).state == state


def test_live_thresholds_are_settings() -> None:
    start = at("2026-02-03T14:00:00Z")
    rules = Rules(ucr_at_risk_seconds=60 * 60, ucr_limit_seconds=4 * 3600)
    assert judge([received(R, start)], now=start + 3600, rules=rules).state == "at_risk"
    assert judge([received(R, start)], now=start + 4 * 3600, rules=rules).state == "at_risk"
    assert judge([received(R, start)], now=start + 4 * 3600 + 1, rules=rules).state == "breached"
    late = Rules(reablement_at_risk_time=time(18, 0))
    events = [received(R, "2026-01-05T09:00:00Z", "reablement_2d")]
    assert judge(events, now="2026-01-07T17:59:59Z", rules=late).state == "waiting"
    assert judge(events, now="2026-01-07T18:00:00Z", rules=late).state == "at_risk"


def test_time_zone_is_a_setting() -> None:
    # In New York, 2026-01-07 local ends at 05:00 UTC on the 8th.
    events = [
        received(R, "2026-01-05T15:00:00Z", "reablement_2d"),
        contact(R, "2026-01-08T04:59:00Z"),
    ]
    assert judge(events).state == "not_met"
    assert judge(events, rules=Rules(timezone="America/New_York")).state == "met"


# -- R6: exclusions and re-triage ---------------------------------------------------------------------

T0 = "2026-02-03T14:00:00Z"
T_TRIAGE = "2026-02-03T14:05:00Z"
T_LATER = "2026-02-03T14:20:00Z"
T_SEEN = "2026-02-03T15:00:00Z"  # 60 minutes

TRIAGES = [
    # (events after receipt, clock type, state, exclusion reason, pathway)
    ([triaged(R, T_TRIAGE)], "05", "met", None, "ucr_2h"),  # accepted, subject
    (
        [triaged(R, T_TRIAGE, subject=False, reason="patient_requested_later")],
        "07",
        "excluded",
        "patient_requested_later",
        "ucr_2h",
    ),
    (
        [triaged(R, T_TRIAGE, subject=False, reason="other"), triaged(R, T_LATER, subject=True)],
        "05",
        "met",
        None,
        "ucr_2h",
    ),  # a later decision reinstates the standard
    (
        [triaged(R, T_LATER, subject=False, reason="other"), triaged(R, T_TRIAGE, subject=True)],
        "07",
        "excluded",
        "other",
        "ucr_2h",
    ),  # ... but not when it came earlier in event time (arrival order does not matter)
    (
        [
            triaged(R, T_TRIAGE, subject=False, reason="other"),
            triaged(R, T_LATER, subject=None, pathway="ucr_2h"),
        ],
        "07",
        "excluded",
        "other",
        "ucr_2h",
    ),  # a pathway-only triage says nothing about the standard
    ([triaged(R, T_TRIAGE, pathway="reablement_2d")], "06", "met", None, "reablement_2d"),
    (
        [
            triaged(R, T_TRIAGE, pathway="reablement_2d"),
            triaged(R, T_LATER, subject=None, pathway="ucr_2h"),
        ],
        "05",
        "met",
        None,
        "ucr_2h",
    ),  # back to the 2-hour pathway: the latest pathway decision wins
    (
        [triaged(R, T_TRIAGE, pathway="reablement_2d", subject=False, reason="other")],
        "06",
        "met",
        None,
        "reablement_2d",
    ),  # "not subject" has no 2-day counterpart: the 06 clock stands
]


@pytest.mark.parametrize(("after", "clock_type", "state", "reason", "pathway"), TRIAGES)
def test_triage_decisions(
    after: list[Event], clock_type: str, state: str, reason: str | None, pathway: str
) -> None:
    outcome = judge([received(R, T0), *after, contact(R, T_SEEN)])
    assert (outcome.clock_type, outcome.state, outcome.exclusion_reason, outcome.pathway) == (
        clock_type,
        state,
        reason,
        pathway,
    )
    assert outcome.clock_start == at(T0)  # R6: the clock start does not move


def test_retriage_to_two_day_changes_the_measure_not_the_start() -> None:
    # Seen after 3 hours: not met on the 2-hour pathway, met on the 2-day one.
    events = [received(R, T0), contact(R, "2026-02-03T17:00:00Z")]
    assert judge(events).state == "not_met"
    retriaged = [*events, triaged(R, T_TRIAGE, pathway="reablement_2d")]
    outcome = judge(retriaged)
    assert (outcome.clock_type, outcome.state, outcome.clock_start) == ("06", "met", at(T0))


def test_excluded_open_clock_has_no_live_state() -> None:
    events = [received(R, T0), triaged(R, T_TRIAGE, subject=False, reason="other")]
    outcome = judge(events, now="2026-02-05T00:00:00Z")
    assert (outcome.clock_type, outcome.state, outcome.clock_stop) == ("07", "excluded", None)


# -- Cancellation, invalid stops, start mode -----------------------------------------------------------


def test_cancelled_referral_has_no_clock() -> None:
    outcome = judge([received(R, T0), cancelled(R, T_TRIAGE), contact(R, T_SEEN)])
    assert outcome.state == "cancelled"
    assert (outcome.clock_type, outcome.clock_start, outcome.clock_stop, outcome.wait_seconds) == (
        None,
        None,
        None,
        None,
    )
    assert outcome.to_row()[2:4] == ["", "Y62"]


def test_stop_before_start_is_invalid() -> None:
    outcome = judge([received(R, T0), contact(R, "2026-02-03T13:55:00Z")])
    assert (outcome.state, outcome.wait_seconds, outcome.clock_type) == ("invalid", -300, "05")


def test_triage_start_mode() -> None:
    rules = Rules(start_mode=StartMode.TRIAGED)
    events = [received(R, T0), triaged(R, T_LATER), triaged(R, T_TRIAGE), contact(R, T_SEEN)]
    outcome = judge(events, rules=rules)
    assert (outcome.clock_start, outcome.wait_seconds) == (at(T_TRIAGE), 55 * 60)
    not_triaged = judge([received(R, T0)], now="2026-02-04T00:00:00Z", rules=rules)
    assert (not_triaged.state, not_triaged.clock_start) == ("waiting", None)


def test_referral_without_receipt_has_no_outcome_yet() -> None:
    engine = Engine()
    engine.ingest(contact(R, T_SEEN))
    assert outcome_of(engine, R, at(T_SEEN)) is None
    assert list(engine.outcomes(at(T_SEEN))) == []
    assert engine.pending() == 1
    engine.ingest(received(R, T0))
    outcome = outcome_of(engine, R, at(T_SEEN))
    assert outcome is not None
    assert outcome.state == "met"
    assert engine.pending() == 0


def test_earliest_receipt_wins() -> None:
    events = [
        received(R, "2026-02-03T14:30:00Z", provider="RX1", id="b"),
        received(R, T0, provider="RY7", id="a"),
        contact(R, "2026-02-03T16:15:00Z"),
    ]
    outcome = judge(events)
    assert (outcome.provider, outcome.clock_start, outcome.state) == ("RY7", at(T0), "not_met")


# -- R7/R8: late data and duplicates -------------------------------------------------------------------


def test_late_contact_withdraws_a_provisional_breach() -> None:
    engine = Engine()
    start = at(T0)
    first = engine.apply(received(R, start), now=start + 30)
    assert first is not None
    assert first.outcome.state == "waiting"
    assert first.previous is None
    assert [c.outcome.state for c in engine.advance(start + 7201)] == ["breached"]
    # The visit happened at 110 minutes; the clinician records it 3 hours later.
    change = engine.apply(contact(R, start + 110 * 60), now=start + 5 * 3600)
    assert change is not None
    assert (change.previous and change.previous.state, change.outcome.state) == ("breached", "met")
    assert change.breach_withdrawn
    assert engine.next_deadline() is None


def test_late_contact_after_the_limit_confirms_the_breach() -> None:
    engine = Engine()
    start = at(T0)
    engine.apply(received(R, start), now=start)
    engine.advance(start + 8000)
    change = engine.apply(contact(R, start + 125 * 60), now=start + 4 * 3600)
    assert change is not None
    assert (change.outcome.state, change.breach_withdrawn) == ("not_met", False)


def test_duplicate_event_is_ignored() -> None:
    engine = Engine()
    start = at(T0)
    event = contact(R, start + 600, "telephone", id="same")
    engine.apply(received(R, start), now=start)
    assert engine.apply(event, now=start + 700) is None
    assert engine.ingest(event) is None  # same id again
    clock = engine.clock(R)
    assert clock is not None
    assert clock.contacts == 1


@pytest.mark.parametrize("contacts", [1, 7, 8, 9, 40])
def test_duplicates_are_ignored_however_many_events_a_referral_has(contacts: int) -> None:
    # Event ids are kept in a tuple while few and in a set beyond (memory per open clock):
    # both sides of the switch, and a snapshot taken on either side, behave alike.
    engine = Engine()
    start = at(T0)
    engine.apply(received(R, start, id="r"), now=start)
    events = [
        contact(R, start + 60 * (i + 1), "telephone", id=f"c{i}", contact_id=f"c{i}")
        for i in range(contacts)
    ]
    for event in events:
        engine.ingest(event)
    for event in events:  # every one again
        assert engine.ingest(event) is None
    clock = engine.clock(R)
    assert clock is not None
    assert clock.contacts == contacts
    assert len(clock.event_ids) == contacts + 1
    restored = Engine.restore(engine.snapshot())
    assert restored.snapshot() == engine.snapshot()
    for event in events:
        assert restored.ingest(event) is None
    assert restored.ingest(contact(R, start + 1, "telephone", id="new")) is not None


# -- The deadline index ------------------------------------------------------------------------------


def test_deadlines_fire_exactly_on_time_and_only_once() -> None:
    engine = Engine()
    start = at(T0)
    engine.apply(received(R, start), now=start)
    engine.apply(received("REF-2", start + 60), now=start + 60)
    assert engine.next_deadline() == start + 5400
    assert engine.advance(start + 5399) == []
    assert [(c.outcome.referral_id, c.outcome.state) for c in engine.advance(start + 5400)] == [
        (R, "at_risk")
    ]
    assert engine.next_deadline() == start + 60 + 5400
    changes = engine.advance(start + 7201 + 60)
    assert sorted((c.outcome.referral_id, c.outcome.state) for c in changes) == [
        (R, "breached"),
        ("REF-2", "breached"),
    ]  # REF-2 goes straight to breached: one change per referral per advance
    assert engine.advance(start + 99999) == []
    assert engine.next_deadline() is None


def test_a_stopped_clock_leaves_the_index() -> None:
    engine = Engine()
    start = at(T0)
    engine.apply(received(R, start), now=start)
    engine.apply(contact(R, start + 600), now=start + 600)
    assert engine.next_deadline() is None
    assert engine.advance(start + 10**6) == []


def test_retriage_moves_the_deadline() -> None:
    engine = Engine()
    start = at("2026-01-05T09:00:00Z")
    engine.apply(received(R, start), now=start)
    assert engine.next_deadline() == start + 5400
    engine.apply(triaged(R, start + 60, pathway="reablement_2d"), now=start + 60)
    assert engine.next_deadline() == at("2026-01-07T12:00:00Z")
    assert engine.advance(start + 3 * 3600) == []  # the stale 2-hour entry is dropped


def test_open_counts_follow_published_states() -> None:
    engine = Engine()
    start = at(T0)
    engine.apply(received(R, start), now=start)
    engine.apply(received("REF-2", start, "reablement_2d", icb="QF7", region="Y63"), now=start)
    assert engine.open_counts() == {
        ("ucr_2h", "Y62", "QYG", "waiting"): 1,
        ("reablement_2d", "Y63", "QF7", "waiting"): 1,
    }
    engine.advance(start + 5400)
    assert engine.open_counts() == {
        ("ucr_2h", "Y62", "QYG", "at_risk"): 1,
        ("reablement_2d", "Y63", "QF7", "waiting"): 1,
    }
    engine.apply(contact(R, start + 5500), now=start + 5500)
    assert engine.open_counts() == {("reablement_2d", "Y63", "QF7", "waiting"): 1}
    engine.evict("REF-2")
    assert engine.open_counts() == {}


def test_snapshot_round_trip() -> None:
    engine = Engine()
    start = at(T0)
    engine.apply(received(R, start), now=start)
    engine.apply(triaged(R, start + 60, subject=False, reason="other"), now=start + 60)
    engine.apply(received("REF-2", start), now=start)
    engine.advance(start + 5400)
    snapshot = engine.snapshot()
    restored = Engine.restore(snapshot)
    assert restored.snapshot() == snapshot
    assert restored.open_counts() == engine.open_counts()
    assert restored.advance(start + 5400) == []  # nothing new to report after a restore
    assert [c.outcome.state for c in restored.advance(start + 7201)] == ["breached"]
    with pytest.raises(ValueError, match="format"):
        Engine.restore({"format": 99, "clocks": [], "watermark": None})


def test_rules_validate_their_values() -> None:
    with pytest.raises(ValueError, match="positive"):
        Rules(ucr_limit_seconds=0)
    with pytest.raises(ValueError, match="at_risk"):
        Rules(ucr_at_risk_seconds=9000)


@given(st.integers(min_value=946_684_800, max_value=4_102_444_799))  # 2000-2099, the codec's
def test_format_instant_is_utc_iso_seconds(instant: int) -> None:
    expected = datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert format_instant(instant) == expected
    assert format_instant(None) == ""
