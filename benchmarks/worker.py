"""Worker throughput against raw aiokafka consumption of the same topic, in one run.

    .venv/bin/python -m benchmarks.worker [--events 200000] [--database-url URL] [--json FILE]

Publishes N simulated events to an embedded broker (4 partitions), then measures:

* raw: an aiokafka consumer reading every record of the topic and `json.loads`-ing it (the
  fastest of `RAW_PASSES` passes);
* worker: one `crisiswatch worker` process, end to end (broker -> codec -> engine ->
  outcomes published -> PostgreSQL transaction), timed from its first committed batch to the
  last event committed (worker start-up and the consumer-group join are excluded); the rate
  is extrapolated over the events of the first batch.

The ratio worker/raw is the headline figure. Needs PostgreSQL (default: the local server,
where a scratch database is created and dropped). `crisiswatch bench` runs the same
measurement (`measure`) among the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks import DEFAULT_SERVER
from benchmarks.report import report
from benchmarks.services import (
    Worker,
    poll_committed,
    scratch_database,
    stored_events,
    worker_process,
)
from consumers.kafka.admin import create_topics
from consumers.kafka.publisher import EventPublisher
from consumers.local.embedded import EmbeddedBroker
from streams.errors import ServiceError
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from streams.simulation import SimulationConfig, simulate

PARTITIONS: Final = 4
#: Raw consumption passes over the topic (the fastest is the raw rate).
RAW_PASSES: Final = 3
#: Batch size of the worker (its default: events per PostgreSQL transaction).
BATCH_SIZE: Final = 5000


def create_bench_topics(kafka: str) -> None:
    create_topics(kafka, {EVENTS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1})


def publish(kafka: str, events: int) -> int:
    """N simulated England-shaped events (no bad lines, no duplicates) to `referral-events`."""
    config = SimulationConfig(
        start=datetime(2026, 1, 5, tzinfo=UTC),
        duration=timedelta(days=400),
        seed=99,
        bad_rate=0,
        duplicate_rate=0,
    )
    sent = 0
    with EventPublisher(kafka, EVENTS_TOPIC) as publisher:
        for line in simulate(config):
            publisher.send(line.key, line.line.encode())
            sent += 1
            if sent >= events:
                break
        publisher.flush()
    return sent


async def raw_consume(kafka: str, expected: int) -> float:
    """Seconds for a bare aiokafka consumer to read and `json.loads` `expected` records."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(EVENTS_TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        began = time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    json.loads(record.value)
                seen += len(records)
        return time.perf_counter() - began
    finally:
        await consumer.stop()


def time_worker(url: str, expected: int, worker: Worker, timeout_s: float) -> float:
    """Seconds the worker takes for `expected` events, from its first committed batch.

    The time from the first commit to the last is scaled up by the events of the first batch
    (processed before the clock started), so start-up and the group join are left out.
    """
    first: tuple[float, int] | None = None
    for count in poll_committed(url, expected, worker, timeout_s, interval_s=0.02):
        now = time.perf_counter()
        if count and first is None:
            first = (now, count)
    assert first is not None  # the last count is `expected`
    if first[1] >= expected:
        raise ServiceError(
            f"the worker committed all {expected} events in its first batch: nothing to "
            "time (use more events than the batch size)"
        )
    return (now - first[0]) * expected / (expected - first[1])


def measure(server: str, events: int, batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Raw consumption and one worker over the same `events` simulated events."""
    with scratch_database(server, "throughput") as url, EmbeddedBroker() as broker:
        create_bench_topics(broker.bootstrap)
        sent = publish(broker.bootstrap, events)
        # The limit is the fastest of a few passes: one pass of 200,000 records takes about a
        # second, where the scheduling of a shared machine moves it by a third.
        raw_s = min(asyncio.run(raw_consume(broker.bootstrap, sent)) for _ in range(RAW_PASSES))
        with worker_process(
            broker.bootstrap, url, batch_size=batch_size, label="throughput"
        ) as worker:
            # Generous: start-up, plus the run at a tenth of the rate measured here.
            worker_s = time_worker(url, sent, worker, timeout_s=120 + sent / 100)
        stored = stored_events(url)
    if stored != sent:
        raise ServiceError(f"the worker stored {stored} events of {sent}")
    raw_rate = sent / raw_s
    worker_rate = sent / worker_s
    return {
        "throughput_events": sent,
        "raw_events_per_second": round(raw_rate),
        "worker_events_per_second": round(worker_rate),
        "throughput_ratio": round(worker_rate / raw_rate, 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument(
        "--database-url", default=DEFAULT_SERVER,
        help="a server where a scratch database may be created",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args(argv)
    report(measure(args.database_url, args.events, args.batch_size), args.json)


if __name__ == "__main__":
    main()
