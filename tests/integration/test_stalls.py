"""Stalled workers under load (`--slow`): SIGSTOP and SIGCONT of random workers, past the
session timeout, while events arrive, must end exactly where an undisturbed worker ends.

Three workers share 12 partitions. Again and again a random worker is frozen (SIGSTOP) for
longer than the 6 s session timeout, so the group gives its partitions to the others, and is
then thawed (SIGCONT) to finish whatever it was doing: a batch processed before the stall is
committed after its partitions moved (the zombie write the fence refuses), or a transaction
frozen half-way is ended by PostgreSQL. Then every worker is SIGKILLed, one restarts from
PostgreSQL alone and consumes the rest of the events, and the results are compared with an
undisturbed worker over the same topic, as `test_faults` does: every row of `clocks`,
`events` and `consumer_positions`, the latest outcome of every referral, the exported figures,
and every published outcome one a correct run could publish.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.integration import test_faults as faults
from tests.integration.test_worker import Worker
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The fixtures of `test_faults`: a fresh broker with the topics, workers, publishing load.
kafka = faults.kafka
workers = faults.workers
loads = faults.loads

WORKERS = 3
CYCLES = 20
STALL_S = (7.0, 11.0)  # frozen for longer than the 6 s session timeout
BETWEEN_S = (0.5, 4.0)  # running between two stalls
RATE = 120.0  # events a second, all along
FENCED = "taken over by another worker"


def fenced_lines(logs: Sequence[Path]) -> int:
    return sum(
        1
        for log in logs
        for entry in faults.log_entries(log)
        if FENCED in str(entry.get("message", ""))
    )


def test_workers_stopped_and_continued_at_random_end_like_an_undisturbed_one(
    kafka: str,
    workers: Callable[..., Worker],
    loads: Callable[[str, Sequence[bytes], float], faults.Load],
    new_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    lines = faults.simulated(30)
    url = new_database()
    faults.migrate(url)
    load = loads(kafka, lines, RATE)
    crew = [workers(kafka, url, f"worker-{n}", *faults.BATCH) for n in range(WORKERS)]
    faults.first_commit(url, 0, 120)
    stalls = []
    for _ in range(CYCLES):
        time.sleep(rng.uniform(*BETWEEN_S))
        victim = rng.randrange(WORKERS)
        frozen = rng.uniform(*STALL_S)
        pid = crew[victim].process.pid
        os.kill(pid, signal.SIGSTOP)
        time.sleep(frozen)
        os.kill(pid, signal.SIGCONT)
        stalls.append((victim, round(frozen, 1)))
        assert all(w.process.poll() is None for w in crew), "a worker exited"
    faults_s = time.monotonic() - began

    # Every worker killed; one restarts from PostgreSQL alone and consumes the rest.
    for worker in crew:
        worker.kill()
    survivor = workers(kafka, url, "restarted", *faults.BATCH)
    time.sleep(5.0)
    load.stop()
    sent = load.sent
    wait_for(lambda: faults.consumed(url) == sent, 300, f"all {sent} messages consumed")
    survivor.process.terminate()
    assert survivor.process.wait(30) == 0
    disturbed_s = time.monotonic() - began

    reference, records, reference_s = faults.reference_run(
        kafka, new_database(), workers, sent, tmp_path / "reference"
    )
    disturbed = faults.collect(url, records, tmp_path / "disturbed")
    logs = sorted(tmp_path.glob("worker-*.log"))
    # A thawed worker's Kafka client reports, at ERROR, the session it lost while frozen
    # (Faust's "Thread keepalive is not responding", aiokafka's "Heartbeat session expired"):
    # the symptom under test. crisiswatch's own loggers must report no error.
    errors = faults.log_errors(tmp_path.glob("*.log"))
    assert not [e for e in errors if ": crisiswatch." in e], errors
    figures = faults.assert_same(disturbed, reference, lines[: load.sent_lines])
    print(
        f"\nSIGSTOP/SIGCONT x{len(stalls)} of {WORKERS} workers (seed {seed}): {sent} messages"
        f" at {RATE:g}/s; {figures}; fenced batches {fenced_lines(logs)}; stalls {stalls};"
        f" faults {faults_s:.0f}s, disturbed run {disturbed_s:.0f}s,"
        f" reference {reference_s:.0f}s, test {time.monotonic() - began:.0f}s"
    )
