"""Invariants of the engine (Hypothesis): order, batching, duplication, snapshots, live vs replay."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import Engine, Event, Outcome, Rules, StartMode
from tests.factory import apply_many, at, cancelled, contact, received, triaged

# Windows that straddle both clock changes of 2026, and an ordinary week.
BASES = [at("2026-03-28T20:00:00Z"), at("2026-10-24T20:00:00Z"), at("2026-02-02T08:00:00Z")]
SPAN = 4 * 86400  # events fall within four days of the base: 2-day clocks can finish or breach


@st.composite
def referral_events(draw: st.DrawFn, ref: str, base: int) -> list[Event]:
    """The events of one referral, in no particular order, with unique ids."""
    n = 0

    def next_id() -> str:
        nonlocal n
        n += 1
        return f"{ref}-e{n}"

    def moment() -> int:
        # Mostly minutes around the 2-hour limit, sometimes days away.
        return base + draw(
            st.one_of(
                st.integers(0, 4 * 3600),
                st.sampled_from([0, 5399, 5400, 7199, 7200, 7201]),
                st.integers(0, SPAN),
            )
        )

    start = moment()
    events: list[Event] = []
    if draw(st.integers(0, 9)):  # occasionally the receipt never arrives
        pathway = draw(st.sampled_from(["ucr_2h", "ucr_2h", "reablement_2d"]))
        icb, region = draw(
            st.sampled_from([("QYG", "Y62"), ("QF7", "Y63"), ("unknown", "unknown")])
        )
        events.append(received(ref, start, pathway, icb=icb, region=region, id=next_id()))
        if draw(st.integers(0, 12)) == 0:  # a second receipt of the same referral
            events.append(received(ref, start + draw(st.integers(-600, 600)), id=next_id()))
    for _ in range(draw(st.integers(0, 2))):
        subject = draw(st.sampled_from([True, False, None]))
        events.append(
            triaged(
                ref,
                start + draw(st.integers(0, 3600)),
                subject=subject,
                reason=None
                if subject is not False
                else draw(st.sampled_from(["other", "patient_requested_later"])),
                pathway=draw(st.sampled_from([None, None, "ucr_2h", "reablement_2d"])),
                id=next_id(),
            )
        )
    for i in range(draw(st.integers(0, 4))):
        offset = draw(
            st.one_of(
                st.integers(-900, 3 * 3600), st.sampled_from([7200, 7201]), st.integers(0, SPAN)
            )
        )
        events.append(
            contact(
                ref,
                start + offset,
                draw(st.sampled_from(["face_to_face", "face_to_face", "telephone", "video"])),
                attended=draw(st.booleans()),
                contact_id=f"c{i}",
                id=next_id(),
            )
        )
    if draw(st.integers(0, 10)) == 0:
        events.append(cancelled(ref, start + draw(st.integers(0, 7200)), id=next_id()))
    return events


@st.composite
def scenarios(draw: st.DrawFn) -> list[Event]:
    base = draw(st.sampled_from(BASES))
    events: list[Event] = []
    for r in range(draw(st.integers(1, 5))):
        events += draw(referral_events(f"R{r}", base))
    return events


@st.composite
def deliveries(draw: st.DrawFn, events: list[Event]) -> list[list[Event]]:
    """The same events as a live feed might deliver them: shuffled, duplicated, batched."""
    shuffled = draw(st.permutations(events))
    repeats = draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    feed = list(shuffled)
    for event in repeats:
        feed.insert(draw(st.integers(0, len(feed))), event)
    cuts = sorted(draw(st.lists(st.integers(0, len(feed)), max_size=6)))
    batches, last = [], 0
    for cut in [*cuts, len(feed)]:
        batches.append(feed[last:cut])
        last = cut
    return batches


def final_instant(events: list[Event]) -> int:
    return max((e.time for e in events), default=BASES[0]) + 3600


def reference(events: list[Event], now: int, rules: Rules | None = None) -> list[Outcome]:
    engine = Engine(rules)
    for event in sorted(events, key=lambda e: (e.time, e.id)):  # clean, ordered input
        engine.ingest(event)
    return list(engine.outcomes(now))


def live(batches: list[list[Event]], now: int, rules: Rules | None = None) -> Engine:
    """Apply batches as a live worker would, with a clock that moves forward, then catch up."""
    engine = Engine(rules)
    first = min((e.time for batch in batches for e in batch), default=now)
    for i, batch in enumerate(batches):
        tick = first + (now - first) * i // max(len(batches), 1)
        engine.advance(tick)
        apply_many(engine, batch, tick)
    engine.advance(now)
    return engine


def published(engine: Engine) -> list[Outcome]:
    return sorted(engine.published(), key=lambda o: o.referral_id)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_order_batching_and_duplication_give_the_same_outcomes(data: st.DataObject) -> None:
    events = data.draw(scenarios())
    now = final_instant(events)
    expected = reference(events, now)
    batches = data.draw(deliveries(events))
    engine = live(batches, now)
    assert list(engine.outcomes(now)) == expected
    # What the live engine last *reported* is also what replay says: nothing missed or stale.
    assert published(engine) == expected


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_rules_settings_keep_order_independence(data: st.DataObject) -> None:
    rules = Rules(start_mode=StartMode.TRIAGED, ucr_at_risk_seconds=3600, reablement_days=1)
    events = data.draw(scenarios())
    now = final_instant(events)
    engine = live(data.draw(deliveries(events)), now, rules)
    assert published(engine) == reference(events, now, rules)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_snapshot_restore_continue_equals_uninterrupted(data: st.DataObject) -> None:
    events = data.draw(scenarios())
    now = final_instant(events)
    batches = data.draw(deliveries(events))
    uninterrupted = live(batches, now)

    cut = data.draw(st.integers(0, len(batches)))
    first = live(batches[:cut], now=min((e.time for e in events), default=now))
    # Through JSON, as it would be stored.
    restored = Engine.restore(json.loads(json.dumps(first.snapshot())))
    for batch in batches[cut:]:
        apply_many(restored, batch, now)
    restored.advance(now)

    assert restored.snapshot() == uninterrupted.snapshot()
    assert published(restored) == published(uninterrupted)
    assert restored.open_counts() == uninterrupted.open_counts()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_open_counts_match_a_full_scan(data: st.DataObject) -> None:
    events = data.draw(scenarios())
    now = final_instant(events)
    engine = live(data.draw(deliveries(events)), now)
    scan: dict[tuple[str, str, str, str], int] = {}
    for outcome in engine.outcomes(now):
        if outcome.is_open:
            key = (outcome.pathway, outcome.region, outcome.icb, outcome.state)
            scan[key] = scan.get(key, 0) + 1
    assert dict(engine.open_counts()) == scan


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_next_deadline_is_when_something_changes(data: st.DataObject) -> None:
    """Between deadlines no open clock changes; at a deadline, at least one can."""
    events = data.draw(scenarios())
    engine = Engine()
    start = min((e.time for e in events), default=BASES[0])
    apply_many(engine, events, start)
    deadline = engine.next_deadline()
    if deadline is None:
        assert all(not o.is_open or o.state == "breached" for o in engine.published())
        return
    before = {o.referral_id: o for o in engine.outcomes(deadline - 1)}
    assert before == {o.referral_id: o for o in engine.published()}
    after = {o.referral_id: o for o in engine.outcomes(deadline)}
    assert after != before
