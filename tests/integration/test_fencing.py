"""A zombie writer, made to happen on purpose, against a real PostgreSQL.

Worker A processes a batch and is held between processing and commit (its store's write
waits on a gate: the pause of a long GC, a SIGSTOP or a VM migration, at a point the test
controls). Worker B is assigned A's partitions, restores from PostgreSQL, processes further
events and commits. A then resumes and commits its old batch. PostgreSQL must refuse it: B
goes on, every worker is dropped, one restarts from PostgreSQL alone, and its database equals
an undisturbed run's (clocks, audit rows, positions, latest outcomes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from consumers.live.pipeline import Message, Pipeline, RetryPolicy
from consumers.live.testing import ListSink
from consumers.store import Batch, Store, migrate
from streams.codec import Codec, Rejection
from streams.engine import Engine, Rules
from tests.integration.test_faults import table_rows

pytestmark = pytest.mark.integration

T = TypeVar("T")
TOPIC = "referral-events"
PARTITIONS = 4
FAST = RetryPolicy(first_delay=0.01, max_delay=0.05)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class HeldStore(Store):
    """A `Store` whose writes wait while `held` is set: the worker stalls between processing
    a batch and committing it, for as long as the test says."""

    held: asyncio.Event | None = None
    released: asyncio.Event | None = None

    def hold(self) -> None:
        self.held, self.released = asyncio.Event(), asyncio.Event()

    def release(self) -> None:
        assert self.released is not None
        self.released.set()

    async def write(self, batch: Batch) -> None:
        if self.released is not None and not self.released.is_set():
            assert self.held is not None
            self.held.set()
            await self.released.wait()
        await super().write(batch)


def messages(lines: list[bytes]) -> list[Message]:
    """Kafka-like records: keyed by referral id, partitioned by key, offsets per partition."""
    offsets = [0] * PARTITIONS
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            key = json.loads(line)["data"]["referral_id"].encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            key = None
        partition = zlib.crc32(key or b"") % PARTITIONS
        out.append(Message(partition, offsets[partition], key, line))
        offsets[partition] += 1
    return out


def new_pipeline(store: Store, now: int) -> Pipeline:
    return Pipeline(
        engine=Engine(Rules()), codec=Codec(), store=store, sink=ListSink(), topic=TOPIC,
        clock=lambda: now, retry=FAST,
    )  # fmt: skip


def the_watermark(records: list[Message]) -> int:
    codec = Codec()
    engine = Engine(Rules())
    for record in records:
        decoded = codec.decode(record.value)
        if not isinstance(decoded, Rejection):
            engine.ingest(decoded)
    assert engine.watermark is not None
    return engine.watermark


@pytest.fixture
def golden(shared: Path) -> list[Message]:
    return messages((shared / "golden" / "events.ndjson").read_bytes().splitlines())


def undisturbed(url: str, records: list[Message], now: int) -> None:
    async def scenario() -> None:
        async with await Store.connect(url) as store:
            worker = new_pipeline(store, now)
            await worker.assign(range(PARTITIONS))
            await worker.process(records)

    run(scenario())


def restart_from_postgres(url: str, records: list[Message], now: int) -> None:
    """A fresh worker: clocks and positions from PostgreSQL alone; then every record again
    (those below the stored positions are skipped)."""

    async def scenario() -> None:
        async with await Store.connect(url) as store:
            worker = new_pipeline(store, now)
            await worker.assign(range(PARTITIONS))
            await worker.process(records)

    run(scenario())


def outcomes(url: str) -> list[list[str]]:
    async def scenario() -> list[list[str]]:
        async with await Store.connect(url) as store:
            return await store.outcome_rows()

    return run(scenario())


def test_a_stalled_owner_cannot_commit_over_its_successor(
    new_database: Callable[[], str], golden: list[Message], caplog: pytest.LogCaptureFixture
) -> None:
    disturbed_url, reference_url = new_database(), new_database()
    migrate(disturbed_url)
    migrate(reference_url)
    now = the_watermark(golden) + 60
    quarter = len(golden) // 4
    first, held, third, fourth = (
        golden[:quarter],
        golden[quarter : 2 * quarter],
        golden[2 * quarter : 3 * quarter],
        golden[3 * quarter :],
    )

    async def zombie() -> None:
        async with (
            await HeldStore.connect(disturbed_url) as store_a,
            await Store.connect(disturbed_url) as store_b,
        ):
            a = new_pipeline(store_a, now)
            await a.assign(range(PARTITIONS))
            await a.process(first)
            # A processes (and publishes) its next batch, then stalls before the commit.
            store_a.hold()
            await a.process(held, wait=False)
            assert store_a.held is not None
            await asyncio.wait_for(store_a.held.wait(), 10)
            # Past the session timeout, B owns the partitions: it restores from PostgreSQL,
            # redoes the held batch and goes further.
            b = new_pipeline(store_b, now)
            await b.assign(range(PARTITIONS))
            await b.process(held + third)
            # A wakes and commits its old batch.
            store_a.release()
            await a.flush()
            # B carries on: its memory is right, and it has no reason to rewrite what A wrote.
            await b.process(fourth)

    with caplog.at_level(logging.INFO, logger="crisiswatch.pipeline"):
        run(zombie())
    restart_from_postgres(disturbed_url, golden, now)
    undisturbed(reference_url, golden, now)

    disturbed, reference = table_rows(disturbed_url), table_rows(reference_url)
    for table, want in reference.items():
        got = disturbed[table]
        differ = sorted({str(row[:2]) for row in set(got) ^ set(want)})
        assert got == want, f"{table}: rows differ, keys {differ[:4]} of {len(differ)}"
    assert outcomes(disturbed_url) == outcomes(reference_url)

    fenced = [r for r in caplog.records if "taken over" in r.getMessage()]
    assert len(fenced) == 1, [r.getMessage() for r in caplog.records]
    assert fenced[0].levelno == logging.WARNING
