"""What the live worker writes to PostgreSQL, as values: a batch of audit rows, clock rows and
consumer positions (`Batch`), and the summary a console reads back (`Counts`).

NamedTuples for the per-event rows: one per event, built several times faster than frozen
dataclasses.
"""

from __future__ import annotations

from collections.abc import Container
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
    """What one worker transaction writes. `positions`: (topic, partition) -> next offset.

    `epochs`: the lease epoch the writer holds for each (topic, partition) it writes
    (`Store.acquire`); the store refuses the whole batch (`FencedError`) if any of them has
    been superseded. A batch with no epochs is not fenced (tools and benchmarks).
    """

    events: list[AuditRow] = field(default_factory=list)
    clocks: list[ClockRow] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    epochs: dict[tuple[str, int], int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.events or self.clocks or self.positions)

    def partitions(self) -> set[int]:
        """The partitions whose rows or positions this batch writes."""
        found = {p for _, p in self.positions}
        found.update(r.kafka_partition for r in self.events if r.kafka_partition is not None)
        found.update(r.kafka_partition for r in self.clocks if r.kafka_partition is not None)
        return found

    def without(self, partitions: Container[int]) -> Batch:
        """This batch less the rows, positions and epochs of `partitions`."""
        return Batch(
            [r for r in self.events if r.kafka_partition not in partitions],
            [r for r in self.clocks if r.kafka_partition not in partitions],
            {k: v for k, v in self.positions.items() if k[1] not in partitions},
            {k: v for k, v in self.epochs.items() if k[1] not in partitions},
        )


def clock_row(
    clock: Clock, outcome: Outcome | None, next_change_at: int | None, partition: int | None
) -> ClockRow:
    """The row for a clock judged by `clock.evaluate()` (its outcome and next change)."""
    return ClockRow(
        clock.referral_id, partition, outcome, clock.to_state(), clock.contacts, next_change_at
    )


@dataclass(frozen=True, slots=True)
class Counts:
    """A summary for consoles: open clocks now, and today's 2-hour performance so far.

    "Today" is the local day under the store's rules (CRISISWATCH_TIMEZONE).
    """

    open_clocks: dict[tuple[str, str], int]  # (region, state) -> open clocks
    pending: int  # referrals with events but no referral.received yet
    stopped_today: dict[str, int]  # region -> type-05 clocks stopped since local midnight
    met_today: dict[str, int]  # region -> of those, met
    events: int = 0  # events in the audit log
    breached_ucr: dict[str, int] = field(default_factory=dict)  # region -> open breached type 05

    def regions(self) -> list[str]:
        """Every region with an open or stopped clock, sorted (`unknown` included)."""
        return sorted({region for region, _ in self.open_clocks} | set(self.stopped_today))

    def open_in(self, region: str | None, state: str) -> int:
        """Open clocks in `state`, in `region` or (None) in all of England."""
        return sum(
            count
            for (where, what), count in self.open_clocks.items()
            if what == state and region in (None, where)
        )

    def stopped_in(self, region: str | None) -> tuple[int, int]:
        """(stopped, met) type-05 clocks today, in `region` or (None) in all of England."""
        if region is not None:
            return self.stopped_today.get(region, 0), self.met_today.get(region, 0)
        return sum(self.stopped_today.values()), sum(self.met_today.values())

    def breached_ucr_in(self, region: str | None) -> int:
        """Open breached type-05 clocks, in `region` or (None) in all of England."""
        if region is not None:
            return self.breached_ucr.get(region, 0)
        return sum(self.breached_ucr.values())

    @property
    def projected_pct_met_today(self) -> float | None:
        """% met today counting every open breached type-05 clock as not met (None: neither)."""
        stopped, met = self.stopped_in(None)
        judged = stopped + self.breached_ucr_in(None)
        return 100.0 * met / judged if judged else None

    @property
    def pct_met_today(self) -> float | None:
        """% of today's stopped type-05 clocks that were met; None when none stopped."""
        stopped, met = self.stopped_in(None)
        if not stopped:
            return None
        return 100.0 * met / stopped
