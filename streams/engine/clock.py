"""One referral's clock: a join-semilattice of its events, and the rules that judge it.

Design: order independence by construction
------------------------------------------
R7/R8 require the same outcome whatever order (and however many times) events arrive. Rather
than replaying an event log on every arrival, each referral keeps only the facts the rules
need, each merged with an operation that is commutative, associative and idempotent:

* the referral as received: the earliest `referral.received` by (time, event id);
* the first triage instant (for the "clock starts at triage" setting);
* the latest explicit decision on the standard (R6) and the latest pathway change, by
  (time, event id): a decision made later in event time supersedes an earlier one, whatever
  order they arrive in;
* the stop: the earliest attended face-to-face contact (R2);
* the cancellation: the earliest `referral.cancelled`;
* the distinct contact count and the set of event ids seen (R8; ids also make the count exact).

The outcome is then a pure function of these facts and an evaluation instant `now` (the
wall clock live, the event-time watermark in replay). Merging is O(1) and the state is small
(memory per open clock is a budgeted figure: see docs/benchmarks.md).
"""

from __future__ import annotations

from datetime import time
from typing import Any, Final

from streams.engine.event import (
    CANCELLED,
    CONTACT,
    REABLEMENT_2D,
    RECEIVED,
    TRIAGED,
    UNKNOWN,
    Event,
)
from streams.engine.outcome import (
    AT_RISK,
    BREACHED,
    CANCELLED_STATE,
    CLOCK_REABLEMENT,
    CLOCK_UCR,
    CLOCK_UCR_EXCLUDED,
    EXCLUDED,
    INVALID,
    MET,
    NOT_MET,
    WAITING,
    Outcome,
)
from streams.engine.rules import Rules, StartMode, day_after

# Facts kept per referral (see module docstring). Tuples compare by their leading
# (time, event id), which makes min/max deterministic even for equal times.
Received = tuple[int, str, str, str, str, str]  # time, id, pathway, provider, icb, region
Instant = tuple[int, str]  # time, id
Decision = tuple[int, str, bool, str | None]  # time, id, subject_to_standard, reason
Retriage = tuple[int, str, str]  # time, id, pathway
Cancel = tuple[int, str, str]  # time, id, reason


#: Event ids a clock keeps in a tuple; more go in a set (membership stays cheap).
SMALL_IDS: Final = 8


class Clock:
    """The merged facts of one referral, plus what the engine last published about it."""

    __slots__ = (
        "cancel",
        "contacts",
        "decision",
        "event_ids",
        "first_triage",
        "published",
        "received",
        "referral_id",
        "retriage",
        "scheduled",
        "stop",
    )

    def __init__(self, referral_id: str) -> None:
        self.referral_id = referral_id
        # The ids merged so far (R8): a tuple while there are few (64 bytes for three ids,
        # against 216 for a set: memory per open clock is the engine's budget), a set beyond.
        self.event_ids: tuple[str, ...] | set[str] = ()
        self.received: Received | None = None
        self.first_triage: Instant | None = None
        self.decision: Decision | None = None
        self.retriage: Retriage | None = None
        self.stop: Instant | None = None
        self.cancel: Cancel | None = None
        self.contacts = 0
        # Engine bookkeeping, not facts: the outcome last published, and the deadline
        # (epoch seconds) this clock is indexed under, if any.
        self.published: Outcome | None = None
        self.scheduled: int | None = None

    # -- merging ---------------------------------------------------------------------------

    def merge(self, event: Event) -> bool:
        """Fold one event in. False if its id was seen before (R8: ignored)."""
        ids = self.event_ids
        if event.id in ids:
            return False
        if isinstance(ids, tuple):
            ids += (event.id,)
            self.event_ids = ids if len(ids) <= SMALL_IDS else set(ids)
        else:
            ids.add(event.id)
        key = (event.time, event.id)
        kind = event.type
        if kind == CONTACT:
            self.contacts += 1
            if event.stops_clock and (self.stop is None or key < self.stop):
                self.stop = key
        elif kind == RECEIVED:
            if self.received is None or key < self.received[:2]:
                self.received = (
                    event.time,
                    event.id,
                    event.pathway or "",
                    event.provider or UNKNOWN,
                    event.icb or UNKNOWN,
                    event.region or UNKNOWN,
                )
        elif kind == TRIAGED:
            if self.first_triage is None or key < self.first_triage:
                self.first_triage = key
            if event.subject_to_standard is not None and (
                self.decision is None or key > self.decision[:2]
            ):
                self.decision = (
                    event.time,
                    event.id,
                    event.subject_to_standard,
                    event.exclusion_reason,
                )
            if event.pathway is not None and (self.retriage is None or key > self.retriage[:2]):
                self.retriage = (event.time, event.id, event.pathway)
        elif kind == CANCELLED:
            if self.cancel is None or key < self.cancel[:2]:
                self.cancel = (event.time, event.id, event.reason or "")
        else:  # pragma: no cover - the codec admits only the four types
            raise ValueError(f"unknown event type {kind!r}")
        return True

    # -- judging ---------------------------------------------------------------------------

    def evaluate(self, rules: Rules, now: int) -> tuple[Outcome | None, int | None]:
        """The outcome at `now` (epoch seconds) and when it next changes with no new event.

        None for a referral whose `referral.received` has not arrived yet: without it there
        is no pathway, provider or start. The next-change instant is None for a closed clock.
        """
        received = self.received
        if received is None:
            return None, None
        r_time, _, pathway, provider, icb, region = received
        if self.retriage is not None:
            pathway = self.retriage[2]
        if self.cancel is not None:
            # A cancelled referral has no clock and is counted nowhere (STANDARDS section 2).
            return Outcome(
                self.referral_id, pathway, None, region, icb, provider,
                None, None, None, CANCELLED_STATE, None,
            ), None  # fmt: skip
        decision = self.decision
        subject = decision is None or decision[2]
        if pathway == REABLEMENT_2D:
            clock_type = CLOCK_REABLEMENT
        else:
            clock_type = CLOCK_UCR if subject else CLOCK_UCR_EXCLUDED
        reason = (
            decision[3] if (decision is not None and clock_type == CLOCK_UCR_EXCLUDED) else None
        )

        if rules.start_mode is StartMode.RECEIVED:
            start: int | None = r_time
        else:
            start = self.first_triage[0] if self.first_triage is not None else None
        stop = self.stop[0] if self.stop is not None else None

        if start is None:
            # Triage-start mode, not triaged yet: the clock has not started.
            state = EXCLUDED if clock_type == CLOCK_UCR_EXCLUDED else WAITING
            return Outcome(
                self.referral_id, pathway, clock_type, region, icb, provider,
                None, None, None, state, reason,
            ), None  # fmt: skip

        if stop is not None:
            wait = stop - start
            if wait < 0:
                state = INVALID  # a stop before its start is a data error (CONTRACT 1)
                reason = None
            elif clock_type == CLOCK_UCR_EXCLUDED:
                state = EXCLUDED
            elif clock_type == CLOCK_UCR:
                state = MET if wait <= rules.ucr_limit_seconds else NOT_MET  # R4
            else:
                last_day = day_after(rules.local_date(start), rules.reablement_days)
                state = MET if rules.local_date(stop) <= last_day else NOT_MET  # R5
            return Outcome(
                self.referral_id, pathway, clock_type, region, icb, provider,
                start, stop, wait, state, reason,
            ), None  # fmt: skip

        # Open clock: a live state against `now`, and the instant it next changes.
        next_change: int | None
        if clock_type == CLOCK_UCR_EXCLUDED:
            state, next_change = EXCLUDED, None
        else:
            at_risk_at, breach_at = self.thresholds(rules, clock_type, start)
            if now >= breach_at:
                state, next_change = BREACHED, None
            elif now >= at_risk_at:
                state, next_change = AT_RISK, breach_at
            else:
                state, next_change = WAITING, at_risk_at
        return Outcome(
            self.referral_id, pathway, clock_type, region, icb, provider,
            start, None, None, state, reason,
        ), next_change  # fmt: skip

    @staticmethod
    def thresholds(rules: Rules, clock_type: str, start: int) -> tuple[int, int]:
        """(at risk from, breached from), epoch seconds, for an open clock of this type.

        2-hour: at risk at 90:00 elapsed; breached once elapsed exceeds 120:00 in whole
        seconds, i.e. from 120:01 (a stop at exactly 120:00 is met, R4).
        2-day: at risk from 12:00 local on the last allowed day; breached from the local
        midnight that ends it (a stop on the next local date is not met, R5).
        """
        if clock_type == CLOCK_REABLEMENT:
            last_day = day_after(rules.local_date(start), rules.reablement_days)
            return (
                rules.local_instant(last_day, rules.reablement_at_risk_time),
                rules.local_instant(day_after(last_day), _MIDNIGHT),
            )
        return start + rules.ucr_at_risk_seconds, start + rules.ucr_limit_seconds + 1

    # -- snapshots -------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable, deterministic form of the facts and the published outcome."""
        published = self.published
        return {
            "referral_id": self.referral_id,
            "event_ids": sorted(self.event_ids),
            "received": list(self.received) if self.received else None,
            "first_triage": list(self.first_triage) if self.first_triage else None,
            "decision": list(self.decision) if self.decision else None,
            "retriage": list(self.retriage) if self.retriage else None,
            "stop": list(self.stop) if self.stop else None,
            "cancel": list(self.cancel) if self.cancel else None,
            "contacts": self.contacts,
            "published": list(published) if published else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Clock:
        clock = cls(state["referral_id"])
        ids = state["event_ids"]
        clock.event_ids = tuple(ids) if len(ids) <= SMALL_IDS else set(ids)
        clock.received = _tuple(state["received"])
        clock.first_triage = _tuple(state["first_triage"])
        clock.decision = _tuple(state["decision"])
        clock.retriage = _tuple(state["retriage"])
        clock.stop = _tuple(state["stop"])
        clock.cancel = _tuple(state["cancel"])
        clock.contacts = int(state["contacts"])
        published = state.get("published")
        clock.published = Outcome(*published) if published else None
        return clock


_MIDNIGHT = time(0, 0)


def _tuple(value: list[Any] | None) -> Any:
    return tuple(value) if value is not None else None
