"""More workers than partitions: the workers beyond the partition count are healthy standbys.

`/ready` answers 200 from a worker's first assignment, partitions or none, until it drains
(docs/operations.md, "Health"): so a rolling update of 13 replicas on 12 partitions, one pod
unavailable at a time, never waits on a pod that cannot own anything. Here: 3 workers on 2
partitions; every `/ready` is 200, one worker owns nothing and says it is a standby; when an
owner drains and leaves, the standby takes its partition and the events published after are
all consumed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from consumers.kafka.admin import create_topics
from consumers.local.embedded import EmbeddedBroker
from consumers.store import migrate
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from tests.integration.test_metrics import http, sample_values
from tests.integration.test_worker import Worker
from tests.support import produce, ready, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 2
WORKERS = 3
METRICS_AT = re.compile(r"metrics on (http://[0-9.:]+)/metrics")


@pytest.fixture
def kafka() -> Iterator[str]:
    with EmbeddedBroker() as running:
        create_topics(
            running.bootstrap, {EVENTS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1}
        )
        yield running.bootstrap


def metrics_url(worker: Worker) -> str | None:
    found = METRICS_AT.search(worker.log.read_text(errors="replace"))
    return found.group(1) if found else None


def owned(base: str) -> int:
    status, text = http(f"{base}/metrics")
    assert status == 200
    return int(sample_values(text)[("crisiswatch_partitions_owned", ())])


def consumed(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM consumer_positions")
        value = row.fetchone()
    return int(value[0]) if value else 0


def test_every_worker_beyond_the_partition_count_is_a_ready_standby(
    kafka: str, new_database: Callable[[], str], tmp_path: Path, shared: Path
) -> None:
    url = new_database()
    migrate(url)
    workers = [
        Worker(kafka, url, tmp_path / f"w{n}.log", "--data-dir", str(tmp_path / f"w{n}.faust"))
        for n in range(WORKERS)
    ]
    try:
        wait_for(lambda: all(metrics_url(w) for w in workers), 60, "every metrics server")
        bases = [metrics_url(w) or "" for w in workers]
        began = time.monotonic()
        wait_for(lambda: all(ready(f"{b}/ready") for b in bases), 120, "every /ready = 200")
        ready_s = time.monotonic() - began
        wait_for(lambda: sum(owned(b) for b in bases) == PARTITIONS, 60, "partitions owned")
        counts = [owned(b) for b in bases]
        assert sorted(counts) == [0, 1, 1], counts
        standby = counts.index(0)
        assert "a standby" in workers[standby].log.read_text(errors="replace")

        # An owner drains and leaves: the standby takes a partition over; all stay ready.
        leaving = counts.index(1)
        workers[leaving].process.terminate()
        assert workers[leaving].process.wait(30) == 0
        rest = [b for n, b in enumerate(bases) if n != leaving]
        wait_for(lambda: [owned(b) for b in rest] == [1, 1], 90, "the standby to take over")
        assert all(ready(f"{b}/ready") for b in rest)

        lines = (shared / "golden" / "events.ndjson").read_bytes().splitlines()
        sent = len(lines)
        produce(kafka, lines)
        wait_for(lambda: consumed(url) == sent, 90, "every event consumed")
        print(f"\nall {WORKERS} workers ready within {ready_s:.1f}s of their metrics servers")
    finally:
        for worker in workers:
            worker.stop()
