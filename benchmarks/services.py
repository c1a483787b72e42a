"""What the benchmarks run against: scratch databases, worker processes, the outcomes topic.

* `scratch_database(server)`: a fresh, migrated database on a PostgreSQL server, dropped
  afterwards (the server's own database is only used to create and drop it).
* `postgres_server(url, embedded=...)`: that server, or an embedded one started for the run.
* `worker_process(...)`: one real `crisiswatch worker` process (the installed code, with the
  default rules: `CRISISWATCH_*` settings of the calling shell are not passed on), stopped
  with SIGTERM like a supervisor would.
* `committed(url)`: events committed by the worker so far (the sum of the consumer positions it
  writes in the same transaction as the rows, so it counts fully processed events: decoded,
  judged, outcomes published and rows stored).
* `OutcomeCollector`: every record of `referral-outcomes`, stamped with the wall clock when it
  was read, from a consumer on its own thread (the measurements of breach lag and latency).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

from consumers.local.embedded import reap
from consumers.store import migrate, with_database
from streams.errors import ServiceError, ServiceUnavailableError
from streams.names import OUTCOMES_TOPIC

#: The pseudonym key of benchmark workers (synthetic data only; not a secret).
PSEUDONYM_KEY: Final = "benchmark-key-not-a-secret-0123"
#: How long a worker may take to start and answer, in seconds: more than Faust's request
#: timeout (90 s), after which its consumer retries a fetch the broker never answered.
WORKER_START_TIMEOUT_S: Final = 180.0


def database_url(server: str, dbname: str) -> str:
    """`server` (a libpq URL or DSN) with its database replaced by `dbname`."""
    return with_database(server, dbname)


def _admin(server: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(server, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ServiceUnavailableError(
            f"cannot reach PostgreSQL for the benchmark ({exc.args[0] if exc.args else exc})"
        ) from exc


@contextmanager
def scratch_database(server: str, label: str) -> Iterator[str]:
    """A fresh database with the crisiswatch schema on `server`; dropped on exit."""
    name = f"cw_bench_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    with _admin(server) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise ServiceError(f"cannot create a scratch database on the server: {exc}") from exc
    url = database_url(server, name)
    try:
        migrate(url)
        yield url
    finally:
        with _admin(server) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def server_version(server: str) -> str:
    with _admin(server) as admin:
        row = admin.execute("SELECT current_setting('server_version')").fetchone()
    return str(row[0]) if row else "unknown"


@contextmanager
def postgres_server(url: str, *, embedded: bool) -> Iterator[str]:
    """The server to make scratch databases on: `url`, or an embedded one for the run."""
    if not embedded:
        yield url
        return
    from consumers.local.embedded import EmbeddedPostgres

    with EmbeddedPostgres() as pg:
        yield pg.url


def committed(url: str) -> int:
    """Events the worker has committed (the sum of its stored next offsets)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions"
        ).fetchone()
    return int(row[0]) if row else 0


def stored_events(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


@dataclass
class Worker:
    """A running `crisiswatch worker` process and its log file."""

    process: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        """`ServiceError` if the worker has exited."""
        if self.process.poll() is not None:
            tail = self.log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise ServiceError(
                f"the benchmark worker exited with code {self.process.returncode}; "
                f"see {self.log}:\n{tail}"
            )


@contextmanager
def worker_process(kafka: str, url: str, *, batch_size: int, label: str) -> Iterator[Worker]:
    """One `crisiswatch worker` on `kafka` and `url`; SIGTERM (drain) on exit."""
    log = Path(tempfile.gettempdir()) / f"crisiswatch-bench-{label}-{os.getpid()}.log"
    # The rules are the defaults (the harness computes thresholds from `Rules()`).
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRISISWATCH_")}
    env["CRISISWATCH_PSEUDONYM_KEY"] = PSEUDONYM_KEY
    args = [
        sys.executable, "-m", "consumers.cli", "worker", "--kafka", kafka, "--database-url", url,
        "--batch-size", str(batch_size), "--group", f"crisiswatch-bench-{label}",
        "--metrics-port", "0", "--log-level", "INFO", "--log-format", "text",
    ]  # fmt: skip
    with log.open("wb") as handle:  # the child keeps its own descriptor
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)
    worker = Worker(process, log)
    failed = True
    try:
        yield worker
        failed = False
    finally:
        reap(process, 30.0)
        if not failed:
            log.unlink(missing_ok=True)


def wait_committed(url: str, expected: int, worker: Worker, timeout_s: float) -> float:
    """Poll until the worker has committed `expected` events; the wall time it was seen."""
    for _ in poll_committed(url, expected, worker, timeout_s, interval_s=0.05):
        pass
    return time.time()


def poll_committed(
    url: str, expected: int, worker: Worker, timeout_s: float, interval_s: float
) -> Iterator[int]:
    """The worker's committed event count, read every `interval_s`, until it reaches
    `expected` (the last count yielded); `ServiceError` after `timeout_s`, or if the worker
    exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = committed(url)
        yield count
        if count >= expected:
            return
        worker.check()
        if time.monotonic() > deadline:
            raise ServiceError(
                f"the benchmark worker committed {count} of {expected} events "
                f"within {timeout_s:.0f} s; see {worker.log}"
            )
        time.sleep(interval_s)


# (wall-clock seconds when read, referral id, state)
OutcomeRecord = tuple[float, str, str]


class OutcomeCollector:
    """Reads `referral-outcomes` from the beginning on its own thread, stamping each record.

    The stamp is `time.time()` when the consumer's fetch returned the record: the moment the
    outcome was visible to a downstream reader. Fetches return as soon as a record is there
    (`fetch_min_bytes` 1); `fetch_max_wait_ms` only bounds an idle poll.
    """

    def __init__(self, kafka: str, partitions: int, topic: str = OUTCOMES_TOPIC) -> None:
        self.kafka = kafka
        self.partitions = partitions
        self.topic = topic
        self._records: list[OutcomeRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="outcome-collector", daemon=True)

    def __enter__(self) -> OutcomeCollector:
        self._thread.start()
        if not self._ready.wait(30):
            raise ServiceError("the outcomes consumer did not start within 30 s")
        self._raise()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _raise(self) -> None:
        if self._error is not None:
            raise ServiceError(f"the outcomes consumer failed: {self._error}") from self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:  # reported to the main thread by _raise
            self._error = exc
            self._ready.set()

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            # A fetch the broker never answers is retried after this, not aiokafka's 40 s.
            request_timeout_ms=5000,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            self._ready.set()
            loads = json.loads
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=50)
                now = time.time()
                rows = [
                    (now, record.key.decode(), loads(record.value)["state"])
                    for records in batches.values()
                    for record in records
                ]
                if rows:
                    with self._lock:
                        self._records.extend(rows)
        finally:
            await consumer.stop()

    def records(self, start: int = 0) -> list[OutcomeRecord]:
        """The records read so far (from index `start`)."""
        self._raise()
        with self._lock:
            return self._records[start:]

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def wait(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `done` every 50 ms; `ServiceError` naming `what` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not done():
            self._raise()
            if time.monotonic() > deadline:
                raise ServiceError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.05)
