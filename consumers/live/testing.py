"""In-memory fakes of the pipeline's two outsides, shipped beside what they fake (bytewax's
`testing.py`): a clock store with the semantics of `consumers.store.Store`, and a sink that
keeps what it is given. With them the pipeline's rewind, eviction, drain and retry paths run
in unit tests, in milliseconds, without PostgreSQL or Kafka.

`MemoryStore` keeps what `Store.write` keeps, as `Store` keeps it: the first copy of an event
id, the latest row per referral, the next offset per (topic, partition), all in one step. It
fences as `Store` does: `acquire` increments a partition's lease epoch, and a write carrying a
superseded epoch raises `FencedError` and changes nothing; a write that would move a position
backwards raises `ServiceError`. Two pipelines on one `MemoryStore` are two workers on one
database. A write can be made to fail (`fail_next`) with the errors `Store` raises, transient
or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.live.pipeline import DeadLetter
from consumers.store import AuditRow, Batch, ClockRow
from streams.engine import Outcome
from streams.engine.outcome import OPEN_STATES
from streams.errors import FencedError, ServiceError

__all__ = ["ListSink", "MemoryStore"]


@dataclass(slots=True)
class MemoryStore:
    """The pipeline's `ClockStore`, in memory."""

    events: dict[str, AuditRow] = field(default_factory=dict)  # event id -> first copy
    clocks: dict[str, ClockRow] = field(default_factory=dict)  # referral id -> latest row
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (topic, partition) -> (epoch, owner) of its lease.
    leases_held: dict[tuple[str, int], tuple[int, str]] = field(default_factory=dict)
    writes: int = 0  # committed transactions
    fenced: int = 0  # writes refused by the fence
    #: Errors to raise from the next writes, in order (the write then commits nothing).
    fail_next: list[BaseException] = field(default_factory=list)

    async def acquire(self, topic: str, partitions: Iterable[int], owner: str) -> dict[int, int]:
        epochs = {}
        for partition in sorted(set(partitions)):
            epoch = self.leases_held.get((topic, partition), (0, ""))[0] + 1
            self.leases_held[(topic, partition)] = (epoch, owner)
            epochs[partition] = epoch
        return epochs

    async def leases(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        return {
            p: self.leases_held[(topic, p)][0] for p in partitions if (topic, p) in self.leases_held
        }

    async def positions(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        return {
            partition: self.offsets[(topic, partition)]
            for partition in partitions
            if (topic, partition) in self.offsets
        }

    async def open_clock_states(
        self, partitions: Iterable[int]
    ) -> list[tuple[int, dict[str, Any]]]:
        wanted = set(partitions)
        return [
            (row.kafka_partition, row.state)
            for referral_id, row in sorted(self.clocks.items())
            if row.kafka_partition in wanted and _is_open(row)
        ]

    async def clock_states(self, referral_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {rid: self.clocks[rid].state for rid in referral_ids if rid in self.clocks}

    async def newest_event_time(self, partitions: Iterable[int]) -> int | None:
        wanted = set(partitions)
        times = [r.event_time for r in self.events.values() if r.kafka_partition in wanted]
        return max(times, default=None)

    async def write(self, batch: Batch) -> None:
        if not batch:
            return
        if self.fail_next:
            raise self.fail_next.pop(0)
        lost = frozenset(
            key
            for key, epoch in batch.epochs.items()
            if self.leases_held.get(key, (None, ""))[0] != epoch
        )
        if lost:
            self.fenced += 1
            raise FencedError(f"batch refused: partitions taken over: {sorted(lost)}", lost)
        backwards = {
            key: offset
            for key, offset in batch.positions.items()
            if offset < self.offsets.get(key, offset)
        }
        if backwards:
            raise ServiceError(f"refusing to move consumer positions backwards: {backwards}")
        for row in batch.events:
            self.events.setdefault(row.event_id, row)
        for clock in batch.clocks:
            self.clocks[clock.referral_id] = clock
        self.offsets.update(batch.positions)
        self.writes += 1

    def outcome(self, referral_id: str) -> Outcome | None:
        """The outcome last written for a referral (None: pending or never written)."""
        row = self.clocks.get(referral_id)
        return row.outcome if row is not None else None


def _is_open(row: ClockRow) -> bool:
    """Open as `Store` stores it: pending (no outcome yet) or in an open state."""
    return row.outcome is None or row.outcome.state in OPEN_STATES


@dataclass(slots=True)
class ListSink:
    """The pipeline's `Sink`: keeps every published outcome and dead letter, in order."""

    outcomes: list[Outcome] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)

    async def publish(self, outcomes: Sequence[Outcome], dead: Sequence[DeadLetter]) -> None:
        self.outcomes.extend(outcomes)
        self.dead.extend(dead)

    def latest(self) -> dict[str, Outcome]:
        """The last outcome published per referral."""
        return {outcome.referral_id: outcome for outcome in self.outcomes}
