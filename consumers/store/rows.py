"""What the live worker writes to PostgreSQL, as values: a batch of audit rows, clock rows and
consumer positions (`Batch`), and the summary a console reads back (`Counts`).

NamedTuples for the per-event rows: one per event, built several times faster than frozen
dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from streams.engine import Clock, Outcome

__all__ = ["PENDING", "AuditRow", "Batch", "ClockRow", "Counts", "clock_row"]

#: The `clocks.state` of a referral whose `referral.received` has not arrived yet.
PENDING: Final = "pending"


class AuditRow(NamedTuple):
    """One accepted event for the audit log (`events`). (A NamedTuple: one per event, built
    several times faster than a frozen dataclass.)"""

    event_id: str
    referral_id: str
    type: str
    event_time: int  # epoch seconds
    source: str
    kafka_partition: int | None
    kafka_offset: int | None
    # The scrubbed CloudEvent, unknown fields included; or its JSON text, as received
    # (`Codec.decode_record` gives the text when nothing in it was replaced).
    document: dict[str, Any] | str


class ClockRow(NamedTuple):
    """One referral's clock as the worker last judged it.

    `outcome` None: no `referral.received` yet (stored as state `pending`). The CSDS columns
    are derived from `outcome` and `state` by the store, under the store's `Rules`.
    """

    referral_id: str
    kafka_partition: int | None
    outcome: Outcome | None
    state: dict[str, Any]  # Clock.to_state()
    contacts: int
    next_change_at: int | None  # epoch seconds; Clock.evaluate()'s next-change instant


@dataclass(frozen=True, slots=True)
class Batch:
    """What one worker transaction writes. `positions`: (topic, partition) -> next offset."""

    events: list[AuditRow] = field(default_factory=list)
    clocks: list[ClockRow] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.events or self.clocks or self.positions)


def clock_row(
    clock: Clock, outcome: Outcome | None, next_change_at: int | None, partition: int | None
) -> ClockRow:
    """The row for a clock judged by `clock.evaluate()` (its outcome and next change)."""
    return ClockRow(
        clock.referral_id, partition, outcome, clock.to_state(), clock.contacts, next_change_at
    )


@dataclass(frozen=True, slots=True)
class Counts:
    """A summary for consoles: open clocks now, and today's 2-hour performance so far."""

    open_clocks: dict[tuple[str, str], int]  # (region, live state) -> open clocks
    pending: int  # referrals with events but no referral.received yet
    stopped_today: int  # type-05 clocks stopped since local midnight
    met_today: int

    @property
    def pct_met_today(self) -> float | None:
        """% of today's stopped type-05 clocks that were met; None when none stopped."""
        if not self.stopped_today:
            return None
        return 100.0 * self.met_today / self.stopped_today
