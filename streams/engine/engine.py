"""The clock engine: every referral's clock, a deadline index, and state changes as data.

Pure and synchronous, stdlib only: no I/O and no wall-clock reads. Time is an argument
(`now`, epoch seconds): the live worker passes its wall clock, replay passes the event-time
watermark or `--as-of`. Like psycopg's generators, the engine says *what* changed; adapters
decide what to do about it (publish, store, page).

Deadline index
--------------
An open clock changes state with no event arriving (waiting -> at risk -> breached). Each open
clock is indexed in a min-heap under the instant of its next change; `advance(now)` pops only
the due entries, so the cost per tick is proportional to the clocks that actually change, not
to the clocks that are open. Entries are invalidated lazily: a clock records the instant it is
indexed under (`Clock.scheduled`), and a popped entry that no longer matches is dropped.

Published outcomes
------------------
The engine remembers, per referral, the outcome it last reported (`Change`). A change is
reported only when the outcome differs, so a duplicate or an irrelevant event (a telephone
contact) produces none, and a restart restored from a snapshot does not re-report.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from streams.engine.clock import Clock
from streams.engine.event import Event
from streams.engine.outcome import BREACHED, MET, OPEN_STATES, Outcome
from streams.engine.rules import Rules

SNAPSHOT_FORMAT = 1

OpenKey = tuple[str, str, str, str]  # pathway, region, icb, state


@dataclass(frozen=True, slots=True)
class Change:
    """A referral's reported outcome changed (or was reported for the first time)."""

    outcome: Outcome
    previous: Outcome | None

    @property
    def breach_withdrawn(self) -> bool:
        """R7: a provisional breach turned into met by a late-recorded contact."""
        previous = self.previous
        return previous is not None and previous.state == BREACHED and self.outcome.state == MET


class Engine:
    """All clocks of one stream partition set (or of a whole replay)."""

    def __init__(self, rules: Rules | None = None) -> None:
        self.rules = rules if rules is not None else Rules()
        self._clocks: dict[str, Clock] = {}
        self._deadlines: list[tuple[int, str]] = []
        self._open: Counter[OpenKey] = Counter()
        # The latest event time ingested (epoch seconds), or None before any event.
        self.watermark: int | None = None

    # -- input -------------------------------------------------------------------------------

    def ingest(self, event: Event) -> Clock | None:
        """Merge an event into its clock without judging it; the clock if it was new (R8)."""
        clock = self._clocks.get(event.referral_id)
        if clock is None:
            clock = self._clocks[event.referral_id] = Clock(event.referral_id)
        if not clock.merge(event):
            return None
        if self.watermark is None or event.time > self.watermark:
            self.watermark = event.time
        return clock

    def apply(self, event: Event, now: int) -> Change | None:
        """Ingest one event and report its referral's change at `now`, if any."""
        clock = self.ingest(event)
        return self._refresh(clock, now) if clock is not None else None

    def refresh(self, referral_id: str, now: int) -> Change | None:
        """Judge one referral at `now` after `ingest`s; its change, if its outcome moved."""
        clock = self._clocks.get(referral_id)
        return self._refresh(clock, now) if clock is not None else None

    def advance(self, now: int) -> list[Change]:
        """Report every clock whose live state changed by `now` with no event arriving."""
        heap = self._deadlines
        changes = []
        while heap and heap[0][0] <= now:
            instant, referral_id = heapq.heappop(heap)
            clock = self._clocks.get(referral_id)
            if clock is None or clock.scheduled != instant:
                continue  # stale entry: evicted, or re-indexed since
            clock.scheduled = None
            change = self._refresh(clock, now)
            if change is not None:
                changes.append(change)
        return changes

    def next_deadline(self) -> int | None:
        """The earliest instant at which some open clock changes state, if any."""
        heap = self._deadlines
        while heap:
            instant, referral_id = heap[0]
            clock = self._clocks.get(referral_id)
            if clock is not None and clock.scheduled == instant:
                return instant
            heapq.heappop(heap)
        return None

    # -- queries -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._clocks)

    def __contains__(self, referral_id: object) -> bool:
        return referral_id in self._clocks

    def clock(self, referral_id: str) -> Clock | None:
        return self._clocks.get(referral_id)

    def outcomes(self, now: int) -> Iterator[Outcome]:
        """Every referral's outcome judged at `now`, sorted by referral id."""
        rules = self.rules
        for referral_id in sorted(self._clocks):
            outcome = self._clocks[referral_id].evaluate(rules, now)[0]
            if outcome is not None:
                yield outcome

    def published(self) -> Iterator[Outcome]:
        """The outcomes last reported, in no particular order."""
        for clock in self._clocks.values():
            if clock.published is not None:
                yield clock.published

    def open_counts(self) -> Counter[OpenKey]:
        """Open clocks by (pathway, region, icb, live state), as last reported.

        Kept incrementally, so it is exact as long as `advance` is called on time; a scrape
        costs O(series), not O(clocks).
        """
        return +self._open

    def pending(self) -> int:
        """Referrals with events but no `referral.received` yet (data quality)."""
        return sum(1 for clock in self._clocks.values() if clock.received is None)

    # -- memory management and snapshots --------------------------------------------------------

    def evict(self, referral_id: str) -> Clock | None:
        """Drop a referral from memory (its state lives on elsewhere); its index entries lapse."""
        clock = self._clocks.pop(referral_id, None)
        if clock is not None:
            self._count(clock.published, -1)
        return clock

    def load(self, state: dict[str, Any]) -> Clock:
        """Add (or replace) one referral from `Clock.to_state()`, e.g. restored from a database.

        The clock is indexed as due at once, so the next `advance` re-judges it and reports it
        only if its outcome differs from the one it had published.
        """
        self.evict(state["referral_id"])
        clock = Clock.from_state(state)
        self._clocks[clock.referral_id] = clock
        self._count(clock.published, +1)
        if clock.published is None or clock.published.is_open:
            clock.scheduled = 0
            heapq.heappush(self._deadlines, (0, clock.referral_id))
        return clock

    def snapshot(self) -> dict[str, Any]:
        """The whole engine state as a JSON-serialisable value (deterministic)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "watermark": self.watermark,
            "clocks": [self._clocks[k].to_state() for k in sorted(self._clocks)],
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any], rules: Rules | None = None) -> Engine:
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported snapshot format {snapshot.get('format')!r}")
        engine = cls(rules)
        for state in snapshot["clocks"]:
            engine.load(state)
        engine.watermark = snapshot["watermark"]
        return engine

    # -- internals ---------------------------------------------------------------------------

    def _refresh(self, clock: Clock, now: int) -> Change | None:
        outcome, next_change = clock.evaluate(self.rules, now)
        if next_change != clock.scheduled:
            clock.scheduled = next_change
            if next_change is not None:
                heapq.heappush(self._deadlines, (next_change, clock.referral_id))
        previous = clock.published
        if outcome is None or outcome == previous:
            return None
        self._count(previous, -1)
        self._count(outcome, +1)
        clock.published = outcome
        return Change(outcome, previous)

    def _count(self, outcome: Outcome | None, delta: int) -> None:
        if outcome is not None and outcome.state in OPEN_STATES:
            key = (outcome.pathway, outcome.region, outcome.icb, outcome.state)
            self._open[key] += delta
            if not self._open[key]:
                del self._open[key]
