"""Scale-out, measured: 3 workers on 12 partitions, one SIGKILLed, one added back, must end with
the same clocks, audit rows and latest outcomes as one worker alone over the same events.

The events are ~32,000 simulated England-shaped lines (6 hours of referrals at 8x England's
rate, with every visit and late record that follows, plus the simulator's duplicates and bad
lines), published as fast as the broker takes them (in two halves, the second once the added
worker owns partitions). They lie in the past, so every open clock is already past its
deadlines and both runs judge them alike whatever the wall clock says.

Completion is exact: a run is done when the positions stored in PostgreSQL add up to the number
of messages sent (every message, accepted or dead-lettered, advances its partition by one).
Runs in CI (bounded to a few minutes; about 90 s on the 2-core machine this was written on).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers.kafka.admin import create_topics
from consumers.kafka.publisher import EventPublisher, publish_lines
from consumers.local.embedded import EmbeddedBroker, reap
from consumers.store import migrate
from streams.codec import Codec
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from streams.pseudonym import Pseudonymiser
from streams.simulation import SimulationConfig, simulate
from tests.integration.test_worker import audit_ids, clock_rows, latest_outcomes, read_topic
from tests.support import crisiswatch, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 12
KEY = "test-key-0123456789abcdef"
SIMULATION = SimulationConfig(
    start=datetime(2026, 3, 2, 6, 0, tzinfo=UTC),
    duration=timedelta(hours=6),
    speed=8.0,
    seed=20260302,
)


class Worker:
    def __init__(self, kafka: str, url: str, log: Path) -> None:
        self.log = log
        env = {**os.environ, "CRISISWATCH_PSEUDONYM_KEY": KEY, "CRISISWATCH_METRICS_PORT": "0"}
        with log.open("ab") as handle:
            self.process = subprocess.Popen(
                [crisiswatch(), "worker", "--kafka", kafka, "--database-url", url],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def owns_partitions(self) -> bool:
        return "assigned partitions" in self.log.read_text(errors="replace")

    def stop(self) -> None:
        reap(self.process, 30.0)


def _lines() -> list[bytes]:
    return [item.line.encode() for item in simulate(SIMULATION)]


def _setup(kafka: str, url: str) -> None:
    migrate(url)
    create_topics(kafka, {EVENTS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1})


def _publish(kafka: str, lines: list[bytes]) -> int:
    with EventPublisher(kafka, EVENTS_TOPIC) as publisher:
        report = publish_lines(
            lines, publisher, Codec(Pseudonymiser(KEY.encode())), send_rejected=True
        )
    return report.sent


def _consumed(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _result(kafka: str, url: str) -> dict[str, Any]:
    outcomes = latest_outcomes(read_topic(kafka, OUTCOMES_TOPIC, idle=3.0, deadline=120))
    return {"clocks": clock_rows(url), "audit": audit_ids(url), "outcomes": outcomes}


def test_three_workers_one_killed_one_added_equal_one_worker(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    began = time.monotonic()
    lines = _lines()
    assert len(lines) > 25_000

    # Reference: one worker alone.
    single_url = new_database()
    with EmbeddedBroker() as broker:
        _setup(broker.bootstrap, single_url)
        sent = _publish(broker.bootstrap, lines)
        worker = Worker(broker.bootstrap, single_url, tmp_path / "single.log")
        try:
            start = time.monotonic()
            wait_for(lambda: _consumed(single_url) == sent, 240, "the single worker to finish")
            single_seconds = time.monotonic() - start
            reference = _result(broker.bootstrap, single_url)
        finally:
            worker.stop()

    # Scale-out: three workers, kill one mid-stream, add one back.
    url = new_database()
    with EmbeddedBroker() as broker:
        kafka = broker.bootstrap
        _setup(kafka, url)
        workers = [Worker(kafka, url, tmp_path / f"worker{i}.log") for i in range(3)]
        try:
            wait_for(lambda: all(w.owns_partitions() for w in workers), 90, "3 workers to own")
            start = time.monotonic()
            # In two halves: the workers are fast enough to finish everything before a new
            # member has even joined, so the second half waits for the added worker.
            half = len(lines) // 2
            published = _publish(kafka, lines[:half])
            wait_for(lambda: _consumed(url) > sent // 3, 120, "a third to be consumed")
            workers[0].process.send_signal(signal.SIGKILL)
            workers[0].process.wait(10)
            killed_at = _consumed(url)
            workers.append(Worker(kafka, url, tmp_path / "worker3.log"))
            wait_for(workers[3].owns_partitions, 90, "the added worker to own partitions")
            published += _publish(kafka, lines[half:])
            assert published == sent
            wait_for(lambda: _consumed(url) == sent, 240, "the survivors to finish")
            scale_seconds = time.monotonic() - start
            assert killed_at < sent, "everything was consumed before the kill"
            assert workers[3].owns_partitions(), "the added worker never got partitions"
            assert all(w.process.poll() is None for w in workers[1:])
            result = _result(kafka, url)
        finally:
            for w in workers:
                w.stop()

    assert result["audit"] == reference["audit"]
    assert result["clocks"] == reference["clocks"]
    assert result["outcomes"] == reference["outcomes"]
    assert len(reference["clocks"]) > 5_000
    print(
        f"\nscale-out: {len(lines)} events; single worker {single_seconds:.1f}s; "
        f"3 workers with kill + add {scale_seconds:.1f}s; test {time.monotonic() - began:.1f}s"
    )
