"""The live pipeline without Faust: Kafka messages in; engine; Kafka and PostgreSQL out.

Faust (`consumers.live.worker`) only feeds this class batches of messages and ticks; everything
that decides correctness is here, testable with the in-memory store and sink of
`consumers.live.testing` and with a real PostgreSQL.

Exactly-once effects from at-least-once parts
---------------------------------------------
PostgreSQL is the system of record. For each batch, in this order:

1. decode; merge the events into the engine (clocks of referrals not in memory are first
   loaded from PostgreSQL); the engine reports the referrals whose outcome changed;
2. publish those outcomes (and the batch's dead letters) to Kafka and wait for the acks;
3. write, in ONE transaction, the audit rows, the touched clocks (facts *and* the outcome last
   published) and the next offset of every partition in the batch.

A crash before 3 commits nothing: the restarted worker restores the clocks from PostgreSQL,
seeks every partition to its stored offset and redoes the batch, which yields the same changes
(the merge is deterministic and idempotent), so outcomes are published at least once and
identical each time; clocks, audit rows and positions are written exactly once. Kafka's own
committed offsets and Faust's changelogs play no part (the broker here cannot be trusted with
them, and Apache Kafka does not need them for this to be correct).

Pipelining
----------
The worker calls `process(..., wait=False)`: step 3 of batch N runs on the store's writer
thread while batch N+1 goes through steps 1 and 2; batch N+1's own transaction starts only
once N's has committed. Clocks written by a transaction still running stay in memory, so a
read-back from PostgreSQL never sees an older clock than the worker holds (see `process`).
Outcomes of N+1 may reach Kafka before N commits; a crash redoes both from the stored
positions and publishes the same outcomes again.

Fencing: one writer per partition
---------------------------------
Kafka's group protocol says who *should* own a partition; it cannot stop a worker that stalled
(a long GC pause, SIGSTOP, a VM migration) past its session timeout from committing a batch it
processed before the stall, over the work of the partition's new owner. PostgreSQL does: on
assignment the pipeline takes a lease on each new partition (`ClockStore.acquire`, which
increments the partition's epoch), and every batch carries the epochs it was processed under.
The store refuses a batch with a superseded epoch (`FencedError`), nothing of it written.
Before publishing a batch's outcomes (or a tick's), the pipeline also reads its partitions'
epochs back (one query): a worker that stalled past a rebalance learns it there, before it
publishes outcomes the new owner may already have superseded (outcomes on Kafka are not
fenced by PostgreSQL; this check leaves only a stall between it and the send). Either way the
pipeline logs one warning, forgets those partitions as a revoke would (their clocks leave
memory; later records of theirs are ignored until they are assigned again, which takes a new
lease) and writes the rest of the batch, the rows of the partitions it still holds. Positions
therefore never move backwards: the only way back is the rewind on a gap (`process`), which
seeks the consumer to the stored position and writes nothing.

Partitions and memory
---------------------
A worker owns the clocks of the partitions assigned to it. On assignment it loads the open
(and pending) clocks of those partitions and their stored offsets; on revocation it drops them.
A clock that closes is written and evicted; a late event for it reloads it by referral id.
Memory therefore holds the open clocks only.

Wall-clock changes
------------------
`tick()` (called a few times a second) advances the engine's deadline index to the wall clock:
only due clocks are touched, their changes are published and their rows rewritten.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, ParamSpec, Protocol, TypeAlias, TypeVar

from consumers.observe.stats import Stats
from consumers.store import AuditRow, Batch, ClockRow, clock_row, is_transient
from streams.codec import INTERNAL, Codec, Rejection
from streams.engine import Change, Engine, Event, Outcome
from streams.engine.event import RECEIVED, UNKNOWN
from streams.engine.outcome import MET, NOT_MET
from streams.errors import FencedError, ServiceError

log = logging.getLogger("crisiswatch.pipeline")
P = ParamSpec("P")
#: What `Codec.decode_record` gives for one message.
Decoded: TypeAlias = tuple[Event, dict[str, Any], str | None] | Rejection
T = TypeVar("T")


class Message(NamedTuple):
    """One consumed Kafka record."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone


class Record(Protocol):
    """What `Pipeline.process` reads of a consumed record: a `Message`, or the Kafka client's
    own record (aiokafka's `ConsumerRecord`), passed as it is to save a copy per record."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused message for the DLQ: the original bytes (NHS numbers replaced) and why;
    `notes` are extra headers (how a value or key was rewritten: `Codec.scrub_bytes`)."""

    key: bytes | None
    value: bytes
    reason: str
    field: str | None
    detail: str
    partition: int
    offset: int
    notes: tuple[tuple[str, str], ...] = ()


class ClockStore(Protocol):
    """What the pipeline needs of its system of record (`consumers.store.Store` live;
    `consumers.live.testing.MemoryStore` in unit tests)."""

    async def acquire(self, topic: str, partitions: Iterable[int], owner: str) -> dict[int, int]:
        """Take the partitions' leases (each epoch + 1); {partition: epoch}."""
        ...

    async def leases(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """The current lease epoch of these partitions (a plain read, no lock)."""
        ...

    async def positions(self, topic: str, partitions: Iterable[int]) -> dict[int, int]: ...

    async def open_clock_states(
        self, partitions: Iterable[int]
    ) -> list[tuple[int, dict[str, Any]]]: ...

    async def clock_states(self, referral_ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...

    async def newest_event_time(self, partitions: Iterable[int]) -> int | None:
        """Event time (epoch seconds) of the newest stored event of these partitions."""
        ...

    async def write(self, batch: Batch) -> None:
        """One transaction; `FencedError` (nothing written) if an epoch was superseded."""
        ...


def default_owner() -> str:
    """How this process names itself in a lease: host, process id and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Sink(Protocol):
    """Where outcome changes and dead letters go (Kafka live; a list in tests)."""

    async def publish(self, outcomes: Sequence[Outcome], dead: Sequence[DeadLetter]) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for transient failures of PostgreSQL or Kafka (never gives up)."""

    first_delay: float = 0.1  # seconds
    max_delay: float = 5.0
    factor: float = 2.0


#: States of a clock stopped and judged against its standard (types 05 and 06).
STOPPED_STATES: Final = frozenset({MET, NOT_MET})

Listener = Callable[[Sequence[Change], int], Awaitable[None] | None]


class Pipeline:
    """One worker's clocks, and the steps of the module docstring."""

    def __init__(
        self,
        *,
        engine: Engine,
        codec: Codec,
        store: ClockStore,
        sink: Sink,
        topic: str,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
        owner: str | None = None,
    ) -> None:
        self.engine = engine
        self.owner = owner if owner is not None else default_owner()
        self.codec = codec
        self.store = store
        self.sink = sink
        self.topic = topic
        self.clock = clock
        self.retry = retry if retry is not None else RetryPolicy()
        self.stats = Stats()
        self.listeners: list[Listener] = []
        # Called after partitions are loaded or revoked (e.g. to take over their alerts).
        self.ownership_listeners: list[Callable[[], None]] = []
        self._lock = asyncio.Lock()
        self._positions: dict[int, int] = {}  # owned partition -> next offset, committed
        self._next: dict[int, int] = {}  # owned partition -> next offset, processed
        self._partition_of: dict[str, int] = {}  # referral id -> partition, for clocks in memory
        self._rewound: dict[int, int] = {}  # partition -> position we last rewound it to
        self._epochs: dict[int, int] = {}  # owned partition -> lease epoch (`acquire`)
        # Partitions taken over by another worker (a write was fenced): their records are
        # ignored until they are assigned again.
        self._fenced: set[int] = set()
        self._draining = False  # set by drain(): no new batch or tick starts
        # Set by the first assignment, even of no partitions (a standby): the worker has
        # joined its group and restored what it was given.
        self.joined = False
        # The last batch's write, when `process(..., wait=False)` left it running, and the
        # referrals it wrote (their clocks stay in memory until it commits).
        self._writing: asyncio.Task[None] | None = None
        self._writing_touched: Iterable[str] = ()

    # -- partitions ----------------------------------------------------------------------------

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._positions)

    async def assign(self, partitions: Iterable[int]) -> dict[int, int]:
        """Own these partitions: load their clocks (once) and return their next offsets.

        Called after every rebalance, with no partitions for a standby worker."""
        partitions = list(partitions)
        async with self._lock:
            await self._settle()
            await self._load([p for p in partitions if p not in self._positions])
            if not self.joined:
                self.joined = True
                if not partitions:
                    log.info("joined the group with no partitions: a standby")
            return {p: self._positions[p] for p in partitions}

    @property
    def epochs(self) -> dict[int, int]:
        """The lease epoch of every partition owned."""
        return dict(self._epochs)

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Give partitions up: their clocks leave memory (they are all in PostgreSQL)."""
        async with self._lock:
            await self._settle()
            gone = set(partitions)
            self._drop(gone)
            self._fenced -= gone
            if gone:
                log.info("revoked partitions %s", sorted(gone))
                self._ownership_changed()

    def _drop(self, partitions: set[int]) -> None:
        """Forget partitions: their clocks leave memory, their positions and leases go."""
        if not partitions:
            return
        for referral_id, partition in list(self._partition_of.items()):
            if partition in partitions:
                self.engine.evict(referral_id)
                del self._partition_of[referral_id]
        for partition in partitions:
            self._positions.pop(partition, None)
            self._next.pop(partition, None)
            self._epochs.pop(partition, None)
            self._rewound.pop(partition, None)

    def _fence(self, lost: set[int], dropped: int) -> None:
        """Another worker owns these partitions now: forget them (one line per loss: a write
        already in flight for them, refused later, says nothing more)."""
        news = lost - self._fenced
        self._fenced |= lost
        self._drop(lost)
        if not news:
            return
        log.warning(
            "partitions %s were taken over by another worker (a newer lease in PostgreSQL):"
            " %d events of this batch dropped for them, and they are no longer written here",
            sorted(news),
            dropped,
        )
        self.stats.fenced += 1
        self._ownership_changed()

    def _owned(self, batch: Batch) -> Batch:
        """`batch` less what this worker no longer holds, with the epochs it holds."""
        partitions = batch.partitions()
        gone = {p for p in partitions if p not in self._epochs}
        if gone:
            batch = batch.without(gone)
        return Batch(
            batch.events,
            batch.clocks,
            batch.positions,
            {(self.topic, p): self._epochs[p] for p in partitions - gone},
        )

    async def _load(self, partitions: list[int]) -> None:
        if not partitions:
            return
        # The lease first: from here on a stalled previous owner cannot commit, so what is
        # read next is what it committed last.
        epochs = await self._retrying(
            "take partition leases", self.store.acquire, self.topic, partitions, self.owner
        )
        positions = await self._retrying(
            "load positions", self.store.positions, self.topic, partitions
        )
        states = await self._retrying("load clocks", self.store.open_clock_states, partitions)
        # Data freshness survives a restart: the newest event this worker's partitions hold.
        newest = await self._retrying(
            "load newest event time", self.store.newest_event_time, partitions
        )
        last = self.stats.last_event_time
        if newest is not None and (last is None or newest > last):
            self.stats.last_event_time = newest
        for partition, state in states:
            self.engine.load(state)
            self._partition_of[state["referral_id"]] = partition
        for partition in partitions:
            self._positions[partition] = self._next[partition] = positions.get(partition, 0)
            self._epochs[partition] = epochs[partition]
            self._fenced.discard(partition)
        self.joined = True
        log.info(
            "assigned partitions %s: %d open clocks restored, positions %s, lease epochs %s",
            sorted(partitions),
            len(states),
            {p: self._positions[p] for p in sorted(partitions)},
            {p: self._epochs[p] for p in sorted(partitions)},
        )
        self._ownership_changed()

    def _ownership_changed(self) -> None:
        for listener in self.ownership_listeners:
            try:
                listener()
            except Exception:  # a side channel must not stop the stream
                log.exception("ownership listener failed")

    async def drain(self) -> None:
        """Stop taking work: wait for the batch in flight to be written, then refuse new ones.

        Called on SIGTERM before the consumer leaves its group. Batches handed over after this
        are ignored (not written, positions unchanged): the partitions' next owner reads them
        again from the positions in PostgreSQL, so nothing is lost.
        """
        async with self._lock:
            await self._settle()
            self._draining = True
        log.info("drained: the last batch is written; no new batches are taken")

    @property
    def draining(self) -> bool:
        return self._draining

    # -- batches -------------------------------------------------------------------------------

    async def process(self, messages: Sequence[Record], *, wait: bool = True) -> dict[int, int]:
        """Process a batch; returns partitions to rewind {partition: offset} (a gap was seen).

        Messages below a partition's stored position were already committed and are skipped.
        A partition whose first message lies beyond its stored position has lost messages in
        between (the consumer was positioned by something other than our store): its messages
        are dropped and the caller must seek it back to the returned offset.

        With `wait=False` the batch's PostgreSQL transaction is left running when this
        returns (on the store's writer thread), and the next call works on its own batch
        while it commits. Two rules keep that equivalent to `wait=True`:

        * the next batch's transaction starts only after this one has committed (the next
          call waits for it just before starting its own), and so do `tick`, `assign`,
          `revoke`, `drain` and `flush`; a write that fails beyond retry is raised by
          whichever of them waits for it;
        * a clock written by a transaction still running stays in memory until it commits
          (closed clocks are evicted only then, and not if the next batch touched them), so
          a clock read back from PostgreSQL (`Store.clock_states`, on the store's other
          connection) is never older than one still being written.

        Outcomes of the next batch may be published before this one commits; after a crash
        both batches are redone from the stored positions and publish the same outcomes again
        (at least once, as always).
        """
        decode = self.codec.decode_record  # needs no state: done before waiting for the lock
        decoded = [decode(message.value) for message in messages]
        async with self._lock:
            if self._draining:
                return {}
            self.stats.in_flight = len(messages)
            try:
                rewind = await self._process(messages, decoded)
                if wait:
                    await self._settle()
                return rewind
            finally:
                self.stats.in_flight = 0

    async def flush(self) -> None:
        """Wait for the write `process(..., wait=False)` left running (raises its failure)."""
        async with self._lock:
            await self._settle()

    async def _settle(self, keep: Container[str] = frozenset()) -> None:
        """Wait for the write in flight to commit; then evict the closed clocks it wrote,
        except those in `keep` (touched by the batch about to be written)."""
        writing, touched = self._writing, self._writing_touched
        self._writing, self._writing_touched = None, ()
        if writing is not None:
            await writing
            self._evict_closed(r for r in touched if r not in keep)

    async def _process(
        self, messages: Sequence[Record], decoded: Sequence[Decoded]
    ) -> dict[int, int]:
        fenced = self._fenced
        new = sorted({m.partition for m in messages} - self._next.keys() - fenced)
        if new:
            await self._settle()
            await self._load(new)
        rewind: dict[int, int] = {}
        expected = dict(self._next)
        started: set[int] = set()
        todo: list[tuple[Record, Decoded]] = []
        for message, result in zip(messages, decoded, strict=True):
            partition = message.partition
            if partition in fenced:
                continue  # another worker's now, until it is assigned here again
            position = expected[partition]
            if partition in rewind or message.offset < position:
                continue  # rewinding; or committed before a restart or rebalance
            if partition not in started and message.offset > position:
                # The consumer was not positioned by our store (it resumed from somewhere
                # else): rewind once. If the same gap comes back, the records are gone
                # (retention) and waiting would never end: go on, loudly.
                if self._rewound.get(partition) != position:
                    self._rewound[partition] = position
                    rewind[partition] = position
                    continue
                log.error(
                    "partition %d: offsets %d..%d are no longer on the broker; continuing",
                    partition,
                    position,
                    message.offset - 1,
                )
            started.add(partition)
            expected[partition] = message.offset + 1
            todo.append((message, result))
        if rewind:
            log.warning("consumer ahead of stored positions; rewinding %s", rewind)
        if not todo:
            return rewind

        accepted: list[tuple[Record, Event, dict[str, Any], str | None]] = []
        dead: list[DeadLetter] = []
        for message, result in todo:
            if isinstance(result, Rejection):
                dead.append(self._dead_letter(message, result))
                self.stats.rejected[result.reason] += 1
            else:
                accepted.append((message, *result))

        # Referrals not in memory may exist in PostgreSQL (closed clocks, another owner's past).
        missing = {e.referral_id for _, e, _, _ in accepted if e.referral_id not in self.engine}
        if missing:
            states = await self._retrying("load referrals", self.store.clock_states, missing)
            for state in states.values():
                self.engine.load(state)

        engine = self.engine
        now = int(self.clock())
        touched: dict[str, None] = {}  # insertion-ordered set
        merged: list[tuple[Record, Event, dict[str, Any], str | None]] = []
        for item in accepted:
            message, event = item[0], item[1]
            touched[event.referral_id] = None
            self._partition_of[event.referral_id] = message.partition
            try:
                clock = engine.ingest(event)
            except Exception as exc:  # one message must never stop the stream
                dead.append(self._internal(message, exc, "merging"))
                continue
            merged.append(item)
            if clock is None:
                self.stats.duplicates += 1
            else:
                self.stats.events[event.type] += 1
                if event.type == RECEIVED:
                    key = (event.pathway or "", event.region or UNKNOWN, event.icb or UNKNOWN)
                    self.stats.received[key] += 1
                if self.stats.last_event_time is None or event.time > self.stats.last_event_time:
                    self.stats.last_event_time = event.time
        changes = []
        for referral_id in touched:
            try:
                change = engine.refresh(referral_id, now)
            except Exception as exc:  # nor one referral
                # Its clock is dropped from memory (PostgreSQL keeps the last good one) and
                # this batch's events for it are dead-lettered rather than half applied.
                engine.evict(referral_id)
                failed = [m for m in merged if m[1].referral_id == referral_id]
                dead += [self._internal(m[0], exc, "judging") for m in failed]
                merged = [m for m in merged if m[1].referral_id != referral_id]
                continue
            if change is not None:
                changes.append(change)

        audit = [
            AuditRow(
                event.id,
                event.referral_id,
                event.type,
                event.time,
                str(document.get("source", "")),
                message.partition,
                message.offset,
                document if text is None else text,
            )
            for message, event, document, text in merged
        ]
        if changes or dead:
            # Still the owner? A worker that stalled past a rebalance learns it here, before
            # it publishes outcomes the partitions' new owner may have superseded.
            lost = await self._taken_over(started)
            if lost:
                self._fence(lost, sum(1 for m, *_ in accepted if m.partition in lost))
                changes = [c for c in changes if c.outcome.referral_id in self._partition_of]
                dead = [d for d in dead if d.partition not in lost]
                audit = [row for row in audit if row.kafka_partition not in lost]
                touched = {r: None for r in touched if r in self._partition_of}
                expected = {p: o for p, o in expected.items() if p not in lost}
        positions = {(self.topic, p): offset for p, offset in expected.items() if p not in rewind}
        await self._emit(changes, dead, now)
        batch = Batch(audit, self._clock_rows(touched), positions)
        self._next.update({p: o for (_, p), o in positions.items()})
        await self._settle(keep=touched)
        # The write just settled may have been fenced, after this batch was built: partitions
        # lost meanwhile are forgotten again (this batch put their clocks back in memory).
        lost = batch.partitions() & self._fenced
        if lost:
            self._drop(lost)
        self._writing = asyncio.create_task(self._commit(batch))
        self._writing_touched = touched
        return rewind

    async def _commit(self, batch: Batch) -> None:
        """Write a batch; then (committed) advance the stored positions."""
        written = await self._write_owned(batch)
        self._positions.update({p: o for (_, p), o in written.positions.items()})
        self.stats.batches += 1

    async def _write_owned(self, batch: Batch) -> Batch:
        """Write what this worker still holds of `batch`, under its leases; a fenced write
        forgets the partitions lost and writes the rest. Returns what was written."""
        while True:
            owned = self._owned(batch)
            if not owned:
                return owned
            try:
                await self._write(owned)
            except FencedError as refused:
                lost = {p for topic, p in refused.partitions if topic == self.topic}
                self._fence(lost, sum(1 for r in owned.events if r.kafka_partition in lost))
                continue
            return owned

    async def tick(self) -> int:
        """Publish the live-state changes due by the wall clock; returns how many.

        Also the prompt witness of a write `process(..., wait=False)` left running: one that
        failed beyond retry is raised here within a tick, even if no batch follows.
        """
        if self._writing is not None and self._writing.done():
            await self.flush()
        deadline = self.engine.next_deadline()
        now = int(self.clock())
        if deadline is None or deadline > now:
            return 0
        async with self._lock:
            await self._settle()
            if self._draining:
                return 0
            changes = self.engine.advance(now)
            if not changes:
                return 0
            partitions = {self._partition_of.get(c.outcome.referral_id) for c in changes}
            lost = await self._taken_over(p for p in partitions if p is not None)
            if lost:
                self._fence(lost, 0)
                changes = [c for c in changes if c.outcome.referral_id in self._partition_of]
            await self._emit(changes, [], now)
            touched = [c.outcome.referral_id for c in changes]
            await self._write_owned(Batch([], self._clock_rows(touched), {}))
            self._evict_closed(touched)
            return len(changes)

    # -- internals -------------------------------------------------------------------------------

    async def _taken_over(self, partitions: Iterable[int]) -> set[int]:
        """Which of these partitions' leases have moved on to another worker (one read)."""
        held = {p: self._epochs[p] for p in partitions if p in self._epochs}
        if not held:
            return set()
        current = await self._retrying(
            "check partition leases", self.store.leases, self.topic, list(held)
        )
        return {p for p, epoch in held.items() if current.get(p) != epoch}

    def _clock_rows(self, referral_ids: Iterable[str]) -> list[ClockRow]:
        rows = []
        for referral_id in referral_ids:
            clock = self.engine.clock(referral_id)
            if clock is not None:
                partition = self._partition_of.get(referral_id)
                rows.append(clock_row(clock, clock.published, clock.scheduled, partition))
        return rows

    def _evict_closed(self, touched: Iterable[str]) -> None:
        for referral_id in touched:
            clock = self.engine.clock(referral_id)
            if clock is not None and clock.published is not None and not clock.published.is_open:
                self.engine.evict(referral_id)
                self._partition_of.pop(referral_id, None)

    async def _emit(self, changes: Sequence[Change], dead: Sequence[DeadLetter], now: int) -> None:
        stats = self.stats
        for change in changes:
            outcome = change.outcome
            if change.breach_withdrawn:
                stats.withdrawn[(outcome.pathway, outcome.region)] += 1
            previous = change.previous
            if outcome.state in STOPPED_STATES and (
                previous is None or previous.state not in STOPPED_STATES
            ):
                stats.stopped[(outcome.pathway, outcome.region, outcome.icb, outcome.state)] += 1
                if outcome.wait_seconds is not None:
                    stats.waits.append((outcome.pathway, outcome.region, outcome.wait_seconds))
        stats.changes += len(changes)
        if changes or dead:
            await self._retrying(
                "publish", self.sink.publish, [c.outcome for c in changes], list(dead)
            )
        for listener in self.listeners:
            result = listener(changes, now)
            if result is not None:
                await result

    async def _write(self, batch: Batch) -> None:
        began = time.perf_counter()
        await self._retrying("write", self.store.write, batch)
        self.stats.write_seconds.append(time.perf_counter() - began)
        self.stats.last_write = self.clock()

    def _dead_letter(self, message: Record, rejection: Rejection) -> DeadLetter:
        # Key and value as sent, except NHS numbers in any reading of them (publishers key by
        # referral id, which a source could fill with one): `Codec.scrub_bytes`.
        notes: list[tuple[str, str]] = []
        value = message.value if message.value is not None else b""
        value, how = self.codec.scrub_bytes(value)
        if how is not None:
            notes.append(("value-rewritten", how))
        key = message.key
        if key is not None:
            key, how = self.codec.scrub_bytes(key)
            if how is not None:
                notes.append(("key-rewritten", how))
        return DeadLetter(
            key,
            value,
            rejection.reason,
            rejection.field,
            rejection.detail,
            message.partition,
            message.offset,
            tuple(notes),
        )

    def _internal(self, message: Record, exc: Exception, doing: str) -> DeadLetter:
        """A dead letter for a message whose handling raised (the type only: the text of an
        exception may quote the message)."""
        log.error(
            "partition %d offset %d: %s while %s; dead-lettered",
            message.partition,
            message.offset,
            type(exc).__name__,
            doing,
        )
        self.stats.rejected[INTERNAL] += 1
        return self._dead_letter(message, Rejection(INTERNAL, None, type(exc).__name__))

    async def _retrying(
        self, what: str, call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        delay = self.retry.first_delay
        attempt = 0
        while True:
            try:
                return await call(*args, **kwargs)
            except (ServiceError, OSError) as exc:
                if isinstance(exc, ServiceError) and not is_transient(exc):
                    raise
                attempt += 1
                log.warning(
                    "%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * self.retry.factor, self.retry.max_delay)
