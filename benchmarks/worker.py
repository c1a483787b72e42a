"""Worker throughput against raw aiokafka consumption of the same topic, in one run.

    .venv/bin/python -m benchmarks.worker [--events 200000] [--database-url URL]

Publishes N simulated events to an embedded broker (4 partitions), then measures:

* raw: an aiokafka consumer reading every record of the topic and `json.loads`-ing it;
* worker: one `crisiswatch worker` process, end to end (broker -> codec -> engine ->
  PostgreSQL transaction -> outcomes published), timed from its first committed batch to the
  last event stored (worker start-up and the consumer-group join are excluded).

The ratio worker/raw is the headline figure. Needs PostgreSQL (default: the local server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.report import report
from consumers.embedded import EmbeddedBroker
from consumers.postgres import migrate
from consumers.publisher import EventPublisher
from consumers.topic import create_topics
from streams.options import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from streams.simulation import SimulationConfig, simulate

PARTITIONS = 4


def publish(kafka: str, events: int) -> int:
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
                seen += sum(len(r) for r in batches.values())
        return time.perf_counter() - began
    finally:
        await consumer.stop()


def worker_run(kafka: str, url: str, expected: int, batch_size: int) -> float:
    log = Path(tempfile.gettempdir()) / "crisiswatch-bench-worker.log"
    with log.open("wb") as handle:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--kafka", kafka,
             "--database-url", url, "--batch-size", str(batch_size), "--log-level", "WARNING"],
            stdout=handle, stderr=subprocess.STDOUT,
            env={**os.environ, "CRISISWATCH_PSEUDONYM_KEY": "benchmark-key-0123456789"},
        )  # fmt: skip
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            first = None
            while True:
                row = conn.execute("SELECT count(*) FROM events").fetchone()
                count = row[0] if row else 0
                now = time.perf_counter()
                if count and first is None:
                    first = (now, count)
                if count >= expected:
                    assert first is not None
                    return (now - first[0]) * expected / max(expected - first[1], 1)
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited {worker.returncode}; see {log}")
                time.sleep(0.05)
    finally:
        worker.terminate()
        worker.wait(30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a server where a scratch database may be created",
    )  # fmt: skip
    args = parser.parse_args(argv)
    name = f"cw_bench_{os.getpid()}"
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}".encode())
    url = psycopg.conninfo.make_conninfo(args.database_url, dbname=name)
    try:
        migrate(url)
        with EmbeddedBroker() as broker:
            create_topics(
                broker.bootstrap,
                {EVENTS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1},
            )
            sent = publish(broker.bootstrap, args.events)
            raw_s = asyncio.run(raw_consume(broker.bootstrap, sent))
            worker_s = worker_run(broker.bootstrap, url, sent, args.batch_size)
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM events").fetchone()
            stored = row[0] if row else 0
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
    result = {
        "events": sent,
        "events_stored": stored,
        "raw_aiokafka_events_per_second": round(sent / raw_s),
        "worker_events_per_second": round(sent / worker_s),
        "throughput_ratio": round(raw_s / worker_s, 3),
    }
    report(result)


if __name__ == "__main__":
    main()
