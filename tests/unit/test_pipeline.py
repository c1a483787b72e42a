"""The live pipeline on its in-memory store and sink (`consumers.live.testing`): no services.

The integration tests run the same pipeline against PostgreSQL and Kafka; these pin down its
own decisions (outcomes equal replay's, rewind on a gap, eviction, retry, restart, drain).
"""

from __future__ import annotations

import asyncio
import csv
import json
import zlib
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from consumers.live.pipeline import Message, Pipeline, RetryPolicy
from consumers.live.testing import ListSink, MemoryStore
from streams.codec import Codec
from streams.engine import Engine, Rules
from streams.errors import ServiceError, ServiceUnavailableError

T = TypeVar("T")
TOPIC = "referral-events"
PARTITIONS = 4
FAST = RetryPolicy(first_delay=0.001, max_delay=0.002)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def golden_lines(shared: Path) -> list[bytes]:
    return (shared / "golden" / "events.ndjson").read_bytes().splitlines()


def watermark(lines: list[bytes]) -> int:
    latest = 0
    for line in lines:
        try:
            stamp = json.loads(line)["time"]
        except (ValueError, KeyError, TypeError):
            continue
        latest = max(latest, int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()))
    return latest


def messages(lines: list[bytes]) -> list[Message]:
    """Kafka-like records: keyed by referral id, partitioned by key, offsets per partition."""
    offsets = [0] * PARTITIONS
    out = []
    for line in lines:
        try:
            key = json.loads(line)["data"]["referral_id"].encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            key = None
        partition = zlib.crc32(key or b"") % PARTITIONS
        out.append(Message(partition, offsets[partition], key, line))
        offsets[partition] += 1
    return out


def pipeline(store: MemoryStore, sink: ListSink, now: int) -> Pipeline:
    return Pipeline(
        engine=Engine(Rules()), codec=Codec(), store=store, sink=sink, topic=TOPIC,
        clock=lambda: now, retry=FAST,
    )  # fmt: skip


def stored_rows(store: MemoryStore) -> list[list[str]]:
    rows = [row.outcome.to_row() for row in store.clocks.values() if row.outcome is not None]
    return sorted(rows, key=lambda row: row[0])


@pytest.mark.parametrize("batch", [1, 7, 500])
def test_golden_outcomes_through_the_pipeline_equal_the_expected_file(
    shared: Path, batch: int
) -> None:
    lines = golden_lines(shared)
    now = watermark(lines)
    store, sink = MemoryStore(), ListSink()

    async def scenario() -> None:
        live = pipeline(store, sink, now)
        await live.assign(range(PARTITIONS))
        records = messages(lines)
        for first in range(0, len(records), batch):
            assert await live.process(records[first : first + batch]) == {}
        await live.flush()

    run(scenario())
    with (shared / "golden" / "expected_outcomes.csv").open(newline="") as handle:
        expected = list(csv.reader(handle))[1:]
    assert stored_rows(store) == expected
    assert {o.referral_id: o.to_row() for o in sink.latest().values()} == {
        row[0]: row for row in expected
    }
    assert [d.reason for d in sink.dead] == ["invalid_json"]
    # Every record's offset is committed: the next owner starts after the file.
    counts = [sum(1 for m in messages(lines) if m.partition == p) for p in range(PARTITIONS)]
    assert store.offsets == {(TOPIC, p): counts[p] for p in range(PARTITIONS) if counts[p]}


def test_a_restarted_pipeline_resumes_from_the_store_alone(shared: Path) -> None:
    lines = golden_lines(shared)
    now = watermark(lines)
    records = messages(lines)
    half = len(records) // 2
    store = MemoryStore()
    uninterrupted = MemoryStore()

    async def scenario() -> None:
        first = pipeline(store, ListSink(), now)
        await first.assign(range(PARTITIONS))
        await first.process(records[:half])
        await first.flush()
        second = pipeline(store, ListSink(), now)  # a new process: nothing in memory
        positions = await second.assign(range(PARTITIONS))
        # Data freshness survives the restart (the newest stored event of its partitions).
        assert second.stats.last_event_time == first.stats.last_event_time is not None
        # The consumer seeks to the stored positions; redelivering the first half is harmless.
        assert positions == {p: store.offsets.get((TOPIC, p), 0) for p in range(PARTITIONS)}
        await second.process(records)
        await second.flush()
        whole = pipeline(uninterrupted, ListSink(), now)
        await whole.assign(range(PARTITIONS))
        await whole.process(records)
        await whole.flush()

    run(scenario())
    assert stored_rows(store) == stored_rows(uninterrupted)
    assert store.events.keys() == uninterrupted.events.keys()
    assert store.offsets == uninterrupted.offsets


def test_a_gap_in_offsets_rewinds_once_then_is_accepted(shared: Path) -> None:
    records = [m for m in messages(golden_lines(shared)) if m.partition == 0]
    now = watermark(golden_lines(shared))
    store, sink = MemoryStore(), ListSink()

    async def scenario() -> None:
        live = pipeline(store, sink, now)
        await live.assign([0])
        assert await live.process(records[:3]) == {}
        # Offsets 3 and 4 never arrive: the consumer jumped ahead of the stored position.
        assert await live.process(records[5:8]) == {0: 3}
        assert store.offsets[(TOPIC, 0)] == 3  # nothing of the gapped batch committed
        # The same gap again: the records are gone from the topic; carry on from there.
        assert await live.process(records[5:8]) == {}
        await live.flush()

    run(scenario())
    assert store.offsets[(TOPIC, 0)] == 8


def test_closed_clocks_leave_memory_and_come_back_for_a_late_event(shared: Path) -> None:
    lines = golden_lines(shared)
    now = watermark(lines)
    store, sink = MemoryStore(), ListSink()
    engine = Engine(Rules())

    async def scenario() -> None:
        live = Pipeline(
            engine=engine, codec=Codec(), store=store, sink=sink, topic=TOPIC,
            clock=lambda: now, retry=FAST,
        )  # fmt: skip
        await live.assign(range(PARTITIONS))
        await live.process(messages(lines))
        await live.flush()

    run(scenario())
    closed = [
        rid for rid, row in store.clocks.items() if row.outcome and row.outcome.state == "met"
    ]
    assert closed
    assert not any(rid in engine for rid in closed)
    still_open = [
        rid
        for rid, row in store.clocks.items()
        if row.outcome is None or row.outcome.state in ("waiting", "at_risk", "breached")
    ]
    assert all(rid in engine for rid in still_open)


def test_a_transient_write_failure_is_retried_and_commits_once(shared: Path) -> None:
    lines = golden_lines(shared)[:40]
    now = watermark(lines)
    store, sink = MemoryStore(), ListSink()
    store.fail_next = [ServiceUnavailableError("PostgreSQL went away")] * 3

    async def scenario() -> None:
        live = pipeline(store, sink, now)
        await live.assign(range(PARTITIONS))
        await live.process(messages(lines))
        await live.flush()

    run(scenario())
    assert store.fail_next == []
    assert store.writes == 1
    assert sum(store.offsets.values()) == len(lines)


def test_a_permanent_write_failure_is_raised_and_commits_nothing(shared: Path) -> None:
    lines = golden_lines(shared)[:40]
    store, sink = MemoryStore(), ListSink()
    store.fail_next = [ServiceError("permission denied for table clocks")]

    async def scenario() -> None:
        live = pipeline(store, sink, watermark(lines))
        await live.assign(range(PARTITIONS))
        await live.process(messages(lines))

    with pytest.raises(ServiceError, match="permission denied"):
        run(scenario())
    assert store.offsets == {}
    assert store.clocks == {}


def test_after_drain_batches_are_ignored_and_positions_stay(shared: Path) -> None:
    lines = golden_lines(shared)
    records = messages(lines)
    store, sink = MemoryStore(), ListSink()

    async def scenario() -> None:
        live = pipeline(store, sink, watermark(lines))
        await live.assign(range(PARTITIONS))
        await live.process(records[:20], wait=False)
        await live.drain()  # waits for the write in flight
        committed = dict(store.offsets)
        assert sum(committed.values()) == 20
        await live.process(records[20:])
        await live.tick()
        assert store.offsets == committed

    run(scenario())


# -- the fence: two pipelines on one store are two workers on one database --------------------


def test_a_stalled_owner_is_fenced_and_its_successor_wins(
    shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = golden_lines(shared)
    now = watermark(lines)
    records = messages(lines)
    quarter = len(records) // 4
    store, uninterrupted = MemoryStore(), MemoryStore()

    async def scenario() -> None:
        a = pipeline(store, ListSink(), now)
        await a.assign(range(PARTITIONS))
        await a.process(records[:quarter])
        # A processes its next batch; its commit is still to run when B takes over.
        await a.process(records[quarter : 2 * quarter], wait=False)
        b = pipeline(store, ListSink(), now)
        await b.assign(range(PARTITIONS))
        assert b.epochs == dict.fromkeys(range(PARTITIONS), 2)
        # B's first wait for a write lets A's commit run first: refused.
        await b.process(records[quarter : 3 * quarter])
        await a.flush()
        assert a.partitions == frozenset()
        assert store.fenced == 1
        # A's consumer still delivers records until its group tells it otherwise: ignored.
        assert await a.process(records[3 * quarter :]) == {}
        await b.process(records[3 * quarter :])
        whole = pipeline(uninterrupted, ListSink(), now)
        await whole.assign(range(PARTITIONS))
        await whole.process(records)

    with caplog.at_level("INFO", logger="crisiswatch.pipeline"):
        run(scenario())
    assert stored_rows(store) == stored_rows(uninterrupted)
    assert store.events.keys() == uninterrupted.events.keys()
    assert store.offsets == uninterrupted.offsets
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "taken over by another worker" in warnings[0]


def test_a_stale_owner_publishes_nothing_for_a_lost_partition_and_keeps_the_rest(
    shared: Path,
) -> None:
    """Before publishing, a batch's leases are read back: a worker that stalled past a
    rebalance publishes no outcome its partitions' new owner may have superseded."""
    lines = golden_lines(shared)
    now = watermark(lines)
    records = messages(lines)
    half = len(records) // 2
    store, uninterrupted = MemoryStore(), MemoryStore()
    stale = ListSink()

    async def scenario() -> None:
        a = pipeline(store, stale, now)
        await a.assign(range(PARTITIONS))
        await a.process(records[:half])
        published = len(stale.outcomes)
        b = pipeline(store, ListSink(), now)
        await b.assign([1])  # one partition moves; A has not been told yet
        await a.process(records)  # partition 1 dropped before publishing: the rest goes on
        assert a.partitions == frozenset({0, 2, 3})
        assert a.stats.fenced == 1
        lost = {m.key for m in records if m.partition == 1}
        assert not [o for o in stale.outcomes[published:] if o.referral_id.encode() in lost]
        assert store.fenced == 0  # nothing reached the store's fence
        assert store.offsets[(TOPIC, 1)] == sum(1 for m in records[:half] if m.partition == 1)
        await b.process([m for m in records if m.partition == 1])
        # Given back later, A takes a new lease (and B's next write would be refused).
        await a.assign([1])
        assert a.epochs[1] == 3
        whole = pipeline(uninterrupted, ListSink(), now)
        await whole.assign(range(PARTITIONS))
        await whole.process(records)

    run(scenario())
    assert stored_rows(store) == stored_rows(uninterrupted)
    assert store.events.keys() == uninterrupted.events.keys()
    assert store.offsets == uninterrupted.offsets


def test_a_deadline_write_of_a_lost_partition_is_fenced() -> None:
    """`tick` writes clocks only, under the same leases: a stalled owner's tick cannot
    overwrite the clock its successor restored and owns."""
    line = json.dumps(
        {
            "specversion": "1.0", "id": "tick-1", "source": "urn:nhs:ods:RY7",
            "type": "referral.received", "time": "2026-02-03T14:00:00+00:00",
            "data": {"referral_id": "R-TICK", "pathway": "ucr_2h", "provider": "RY7",
                     "icb": "QYG"},
        }
    ).encode()  # fmt: skip
    (record,) = messages([line])
    start = watermark([line]) + 60
    store, sink = MemoryStore(), ListSink()
    now = [start]

    async def scenario() -> None:
        a = Pipeline(
            engine=Engine(Rules()), codec=Codec(), store=store, sink=sink, topic=TOPIC,
            clock=lambda: now[0], retry=FAST,
        )  # fmt: skip
        await a.assign(range(PARTITIONS))
        await a.process([record])
        before = dict(store.clocks)
        b = pipeline(store, ListSink(), start)
        await b.assign([record.partition])
        now[0] = start + 86400  # the clock breaches: A's tick would publish and write it
        assert await a.tick() == 0
        assert a.partitions == frozenset(range(PARTITIONS)) - {record.partition}
        assert a.stats.fenced == 1
        assert store.clocks == before
        assert [o.state for o in sink.outcomes] == ["waiting"]  # no breach from A

    run(scenario())


def test_a_loss_seen_twice_is_logged_once(shared: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The check before publishing and the write still pending both meet the same loss: one
    warning, and nothing of either batch written."""
    lines = golden_lines(shared)
    now = watermark(lines)
    records = messages(lines)
    third = len(records) // 3
    store = MemoryStore()

    async def scenario() -> None:
        a = pipeline(store, ListSink(), now)
        await a.assign(range(PARTITIONS))
        await a.process(records[:third], wait=False)  # its write still to run
        b = pipeline(store, ListSink(), now)
        await b.assign(range(PARTITIONS))
        await a.process(records[third : 2 * third], wait=False)
        await a.flush()
        assert a.partitions == frozenset()
        assert store.writes == 0
        assert a.stats.fenced == 1

    with caplog.at_level("INFO", logger="crisiswatch.pipeline"):
        run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
