"""Fault injection: a worker SIGKILLed again and again, and PostgreSQL restarted under it,
while events are being published, must end exactly where an undisturbed worker ends.

Each test runs the disturbed system first, then a reference: a fresh worker (its own database
and consumer group) that reads the *same* `referral-events` topic undisturbed. The two runs
must agree on

* every row of `clocks`, `events` and `consumer_positions`, every column but the write times
  (`updated_at`, `ingested_at`);
* the latest outcome of every referral on `referral-outcomes` (each run's records are told
  apart by offset: the reference starts after the disturbed worker has stopped);
* the exported figures (`crisiswatch export` of both weeks and the month: every `summary.csv`
  byte for byte, the manifests but for their time stamps and the workbooks' hashes).

A crash between publishing a batch's outcomes and committing it makes the next worker publish
them again (at least once), and batch boundaries differ between runs, so the disturbed run may
publish outcomes the reference never did (a referral judged after only some of its events).
Each must still be one a correct run *could* publish: the engine's outcome after some prefix of
that referral's events, computed here in process from the lines sent.

Load is a publisher thread sending simulated England-shaped lines at a steady rate for the
whole disturbed run: every fault lands while events arrive and a backlog is being consumed.
The faults strike at three kinds of moment: `RANDOM` (whatever the worker is doing), `WRITING`
(a batch held mid-transaction by a lock on `consumer_positions`: outcomes published, rows
written, nothing committed) and, for SIGKILL, `STARTING` (the new process importing,
connecting, joining the group, restoring). The events lie in March 2026, in the past, so every
open clock is already past its deadlines and both runs judge alike whatever the wall clock
says. Completion is exact: the positions stored in PostgreSQL add up to the messages sent.

The default sizes run in CI (on a 2-core machine: SIGKILL ~100 s, PostgreSQL restarts ~35 s).
`--slow` adds long versions with more events, more load and more or longer faults (~80,000
messages and 20 SIGKILLs in ~4 minutes; ~50,000 messages and 8 outages of 8 s in ~2.5).
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from consumers.kafka.admin import create_topics
from consumers.kafka.publisher import EventPublisher, publish_lines
from consumers.live.pipeline import RetryPolicy
from consumers.local.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from consumers.store import migrate
from streams.codec import Codec, Rejection
from streams.engine import Engine
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from streams.pseudonym import Pseudonymiser
from streams.settings import RulesSettings
from streams.simulation import SimulationConfig, simulate
from tests.integration.test_scale_out import KEY
from tests.integration.test_worker import Worker, latest_outcomes, read_topic
from tests.support import crisiswatch, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 12
# The simulated events (2 to 12 March 2026) fall in these export periods.
EXPORTS = (("--week", "2026-W10"), ("--week", "2026-W11"), ("--month", "2026-03"))
REFERENCE_GROUP = "crisiswatch-reference"
# The disturbed workers take small batches (the reference the default, 2000), so a restarted
# worker's backlog is many transactions, each a window between publishing and committing.
BATCH = ("--batch-size", "200")
# Columns left out of the table comparisons: when a row was written, not what it says.
WRITE_TIMES = frozenset({"updated_at", "ingested_at"})
RETRY_WARNING = re.compile(r"^(.+) failed \(attempt (\d+)\), retrying in ([0-9.]+)s: ")


@functools.cache
def simulated(hours: int) -> list[bytes]:
    """Simulated lines from 06:00 on 2 March 2026 at 4x England's rate (~3,000 an hour)."""
    config = SimulationConfig(
        start=datetime(2026, 3, 2, 6, 0, tzinfo=UTC),
        duration=timedelta(hours=hours),
        speed=4.0,
        seed=20260302,
    )
    return [item.line.encode() for item in simulate(config)]


# -- load ----------------------------------------------------------------------------------------


class Load:
    """Publishes `lines` in order at `rate` lines a second from a thread, until `stop()`.

    What was sent is a prefix of `lines` (`sent_lines`); `sent` counts the messages (blank
    lines are skipped), which is what the stored positions must add up to.
    """

    #: Seconds between two flushed slices of the paced stream.
    STEP_S = 0.1

    def __init__(self, kafka: str, lines: Sequence[bytes], rate: float) -> None:
        self._kafka = kafka
        self._lines = lines
        self._rate = rate
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.sent = 0
        self.sent_lines = 0
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    @property
    def publishing(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        codec = Codec(Pseudonymiser(KEY.encode()))
        step = max(1, round(self._rate * self.STEP_S))
        try:
            with EventPublisher(self._kafka, EVENTS_TOPIC) as publisher:
                began = time.monotonic()
                for start in range(0, len(self._lines), step):
                    if self._stop.is_set():
                        return
                    chunk = self._lines[start : start + step]
                    report = publish_lines(chunk, publisher, codec, send_rejected=True)
                    self.sent += report.sent
                    self.sent_lines = start + len(chunk)
                    self._stop.wait(began + self.sent_lines / self._rate - time.monotonic())
        except BaseException as exc:
            self._error = exc

    def stop(self) -> None:
        """Stop sending; fail if the lines ran out first (the load ended too early)."""
        ran_out = not self.publishing
        self.close()
        if self._error is not None:
            raise AssertionError(f"the load publisher failed: {self._error!r}")
        assert not ran_out, f"the load ran out of lines ({self.sent}): lower its rate"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.fixture
def loads() -> Iterator[Callable[[str, Sequence[bytes], float], Load]]:
    started: list[Load] = []

    def start(kafka: str, lines: Sequence[bytes], rate: float) -> Load:
        started.append(Load(kafka, lines, rate))
        return started[-1]

    yield start
    for load in started:
        load.close()


# -- workers and databases -----------------------------------------------------------------------


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Starts `crisiswatch worker` processes (a log and a Faust directory each, in `tmp_path`);
    all stopped at the end."""
    started: list[Worker] = []

    def start(kafka: str, url: str, name: str, *extra: str) -> Worker:
        faust = ("--data-dir", str(tmp_path / f"{name}.faust"))
        started.append(Worker(kafka, url, tmp_path / f"{name}.log", *faust, *extra))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def kafka() -> Iterator[str]:
    """A fresh broker with the worker's topics; its bootstrap address."""
    with EmbeddedBroker() as running:
        create_topics(
            running.bootstrap, {EVENTS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1}
        )
        yield running.bootstrap


def consumed(url: str) -> int | None:
    """Messages consumed (stored positions added up); None while PostgreSQL is unreachable."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions"
            ).fetchone()
    except psycopg.OperationalError:
        return None
    assert row is not None
    return int(row[0])


def first_commit(url: str, since: int, timeout: float) -> None:
    """Return as soon as more than `since` messages are consumed (polling every 10 ms)."""
    end = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < end:
            row = conn.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions"
            ).fetchone()
            if row is not None and int(row[0]) > since:
                return
            time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for a committed batch")


def finish(url: str, load: Load, worker: Worker, timeout: float) -> None:
    """Stop the load, wait until everything sent is consumed, then stop the worker (SIGTERM)."""
    load.stop()
    wait_for(lambda: consumed(url) == load.sent, timeout, f"all {load.sent} messages consumed")
    assert worker.process.poll() is None, worker.log.read_text(errors="replace")[-3000:]
    worker.process.terminate()
    assert worker.process.wait(30) == 0, "the worker did not drain and exit 0 on SIGTERM"


# -- what a run leaves behind --------------------------------------------------------------------


@dataclass
class Run:
    tables: dict[str, list[tuple[Any, ...]]]
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # this run's records, in order
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    exports: dict[str, Any] = field(default_factory=dict)


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the worker's tables, every column but the write times, in key order."""
    keys = {
        "clocks": ["referral_id"],
        "events": ["event_id"],
        "consumer_positions": ["topic", "kafka_partition"],
    }
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(url) as conn:
        for table, key in keys.items():
            columns = [
                name
                for (name,) in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = %s"
                    " ORDER BY ordinal_position",
                    (table,),
                )
                if name not in WRITE_TIMES
            ]
            query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, key)),
            )
            rows[table] = [tuple(map(_hashable, row)) for row in conn.execute(query)]
    return rows


def _hashable(value: Any) -> Any:
    """jsonb values (dicts, lists) as canonical JSON text, so rows can go in sets."""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def export_all(url: str, out: Path) -> dict[str, Any]:
    """`crisiswatch export` of every period of the data: summary CSVs and manifests."""
    figures: dict[str, Any] = {}
    for option, period in EXPORTS:
        subprocess.run(
            [crisiswatch(), "export", option, period, "--out", str(out), "--quiet",
             "--database-url", url],
            check=True,
            timeout=120,
        )  # fmt: skip
        for path in sorted((out / period).glob("*/summary.csv")):
            figures[str(path.relative_to(out))] = path.read_bytes()
        manifest = json.loads((out / period / "manifest.json").read_text())
        manifest.pop("generated_at")
        for name, entry in manifest["files"].items():
            if name.endswith(".xlsx"):  # a workbook carries its creation time: rows only
                manifest["files"][name] = {"rows": entry["rows"]}
        figures[f"{period}/manifest.json"] = manifest
    return figures


def outcome_offsets(kafka: str) -> tuple[list[Any], dict[int, int]]:
    """Every record on the outcomes topic so far, and the next offset of each partition."""
    records = read_topic(kafka, OUTCOMES_TOPIC, idle=3.0, deadline=120)
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return records, ends


def collect(url: str, records: list[Any], out: Path) -> Run:
    run = Run(table_rows(url))
    run.outcomes = [json.loads(record.value) for record in records]
    run.latest = latest_outcomes(records)
    run.exports = export_all(url, out)
    return run


def reference_run(
    kafka: str, url: str, start: Callable[..., Worker], sent: int, out: Path
) -> tuple[Run, list[Any], float]:
    """One undisturbed worker over the same topic: its results, the disturbed run's outcome
    records (those before the reference's), and how long the reference took."""
    disturbed_records, ends = outcome_offsets(kafka)
    migrate(url)
    began = time.monotonic()
    worker = start(kafka, url, "reference", "--group", REFERENCE_GROUP)
    wait_for(lambda: consumed(url) == sent, 240, "the reference worker to finish")
    seconds = time.monotonic() - began
    worker.process.terminate()
    assert worker.process.wait(30) == 0
    records, _ = outcome_offsets(kafka)
    mine = [r for r in records if r.offset >= ends.get(r.partition, 0)]
    assert len(records) - len(mine) == len(disturbed_records)
    return collect(url, mine, out), disturbed_records, seconds


def possible_outcomes(lines: Sequence[bytes]) -> dict[str, set[str]]:
    """Per referral, every outcome a correct run may publish: the engine's judgement after
    each prefix of its events (one event per batch, the finest split), as canonical JSON."""
    codec = Codec(Pseudonymiser(KEY.encode()))
    engine = Engine(RulesSettings().rules())  # the workers' rules: the same environment
    now = int(time.time())
    possible: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        decoded = codec.decode(line)
        if isinstance(decoded, Rejection):
            continue
        change = engine.apply(decoded, now)
        if change is not None:
            outcome = change.outcome
            possible[outcome.referral_id].add(_canonical(outcome.to_record()))
    return possible


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def assert_same(disturbed: Run, reference: Run, lines: Sequence[bytes]) -> dict[str, int]:
    """The comparison of the module docstring; returns figures for the report."""
    for table, want in reference.tables.items():
        got = disturbed.tables[table]
        if got != want:
            missing, extra = set(want) - set(got), set(got) - set(want)
            raise AssertionError(
                f"{table}: {len(got)} rows after the faults, {len(want)} undisturbed; "
                f"{len(missing)} rows differ, e.g. undisturbed {sorted(missing)[:2]}, "
                f"after the faults {sorted(extra)[:2]}"
            )
    assert disturbed.latest.keys() == reference.latest.keys()
    differ = [k for k in reference.latest if disturbed.latest[k] != reference.latest[k]]
    assert not differ, f"{len(differ)} latest outcomes differ, e.g. {differ[:3]}"
    assert disturbed.exports == reference.exports

    possible = possible_outcomes(lines)
    for name, run in (("disturbed", disturbed), ("reference", reference)):
        impossible = [
            record
            for record in run.outcomes
            if _canonical(record) not in possible.get(str(record["referral_id"]), set())
        ]
        assert not impossible, (
            f"{name} run published {len(impossible)} outcomes no prefix of"
            f" the events gives, e.g. {impossible[:2]}"
        )
    reference_set = {_canonical(r) for r in reference.outcomes}
    counts = Counter(_canonical(r) for r in disturbed.outcomes)
    return {
        "events": len(reference.tables["events"]),
        "clocks": len(reference.tables["clocks"]),
        "outcomes": len(disturbed.outcomes),
        "reference_outcomes": len(reference.outcomes),
        "republished": sum(n - 1 for n in counts.values()),
        "not_in_reference": sum(1 for record in counts if record not in reference_set),
    }


# -- PostgreSQL and worker logs ------------------------------------------------------------------


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of our own (data directory and port fixed) that a test may restart."""
    data = tmp_path / "pgdata"
    server = EmbeddedPostgres(data_dir=data, port=free_port())
    server.start()
    yield server
    server.stop()
    shutil.rmtree(data, ignore_errors=True)


def log_entries(log: Path) -> Iterator[dict[str, Any]]:
    """The JSON entries of a worker's log (other lines, e.g. Faust's banner, skipped)."""
    for line in log.read_text(errors="replace").splitlines():
        if "{" in line:
            with contextlib.suppress(ValueError):  # after any terminal escape Faust wrote
                yield json.loads(line[line.index("{") :])


def log_errors(logs: Iterable[Path]) -> list[str]:
    """Every ERROR or CRITICAL entry of these logs (a gap skipped, a batch given up, ...)."""
    return [
        f"{log.name}: {entry['logger']}: {entry['message']}"
        for log in logs
        for entry in log_entries(log)
        if entry.get("level") in ("ERROR", "CRITICAL")
    ]


def retry_warnings(log: Path) -> list[tuple[float, str, int, float]]:
    """(time, operation, attempt, delay) of every retry warning in a worker's JSON log."""
    found = []
    for entry in log_entries(log):
        match = RETRY_WARNING.match(str(entry.get("message", "")))
        if match and entry["level"] == "WARNING" and entry["logger"] == "crisiswatch.pipeline":
            instant = datetime.fromisoformat(entry["time"]).timestamp()
            found.append((instant, match[1], int(match[2]), float(match[3])))
    return found


# -- the tests -----------------------------------------------------------------------------------

# When a fault strikes (each measured from the first batch the worker commits after the last
# fault, so that the worker is up and consuming):
RANDOM = "random"  # a random moment of the stream: decoding, publishing, writing or idle
RANDOM_WITHIN_S = 2.0  # seconds after that first batch (a few dozen batches of the backlog)
WRITING = "writing"  # mid-batch: outcomes published, rows written, the transaction not committed
STARTING = "starting"  # SIGKILL only: while the new process starts, joins the group, restores


@contextmanager
def mid_batch(url: str) -> Iterator[None]:
    """Holds the worker in the middle of a batch transaction for the duration of the block.

    `consumer_positions` is locked against writes until the worker's next batch blocks on it:
    by then its outcomes are published and its audit and clock rows written, uncommitted. The
    lock goes when the block ends (or when PostgreSQL does).
    """
    holder = psycopg.connect(url)
    try:
        holder.execute("LOCK TABLE consumer_positions IN EXCLUSIVE MODE")  # reads still pass
        with psycopg.connect(url, autocommit=True) as watcher:

            def blocked() -> bool:
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'crisiswatch' AND wait_event_type = 'Lock'"
                ).fetchone()
                return row is not None and row[0] > 0

            wait_for(blocked, 60, "a batch transaction to wait on the positions lock")
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            holder.close()


@pytest.mark.parametrize(
    ("hours", "rate", "kills"),
    [
        # 10 kills of the consuming worker, each of the three kinds in turn.
        pytest.param(12, 150.0, (WRITING, STARTING, RANDOM) * 3 + (WRITING,), id="ci"),
        pytest.param(
            72, 500.0, ((WRITING, RANDOM, STARTING, RANDOM) * 5), id="long",
            marks=pytest.mark.slow,
        ),
    ],
)  # fmt: skip
def test_a_worker_sigkilled_under_load_ends_like_an_undisturbed_one(
    kafka: str,
    workers: Callable[..., Worker],
    loads: Callable[[str, Sequence[bytes], float], Load],
    new_database: Callable[[], str],
    tmp_path: Path,
    hours: int,
    rate: float,
    kills: tuple[str, ...],
) -> None:
    began = time.monotonic()
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    lines = simulated(hours)
    url = new_database()
    migrate(url)
    load = loads(kafka, lines, rate)
    worker = workers(kafka, url, "worker-0", *BATCH)
    backlogs = []
    for number, when in enumerate(kills, 1):
        if when == STARTING:
            time.sleep(rng.uniform(0.3, 3.0))
            fault: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        else:
            # This incarnation has restored its clocks and committed a batch (the first of the
            # backlog its predecessor's downtime left).
            first_commit(url, consumed(url) or 0, 90)
            if when == RANDOM:
                time.sleep(rng.uniform(0.0, RANDOM_WITHIN_S))
                fault = contextlib.nullcontext()
            else:
                fault = mid_batch(url)
        with fault:
            assert load.publishing, "the load ended before the faults did"
            backlogs.append(load.sent - (consumed(url) or 0))
            worker.kill()
        assert worker.process.returncode == -signal.SIGKILL
        worker = workers(kafka, url, f"worker-{number}", *BATCH)
    faults_s = time.monotonic() - began
    finish(url, load, worker, 240)
    disturbed_s = time.monotonic() - began

    reference, records, reference_s = reference_run(
        kafka, new_database(), workers, load.sent, tmp_path / "reference"
    )
    disturbed = collect(url, records, tmp_path / "disturbed")
    assert not log_errors(tmp_path.glob("*.log"))
    figures = assert_same(disturbed, reference, lines[: load.sent_lines])
    # A worker killed between publishing and committing: its successor published again.
    assert figures["republished"] > 0
    print(
        f"\nSIGKILL x{len(kills)} {Counter(kills)} (seed {seed}): {load.sent} messages at "
        f"{rate:g}/s, {figures}; backlog at each kill {backlogs}; faults {faults_s:.0f}s, "
        f"disturbed run {disturbed_s:.0f}s, reference {reference_s:.0f}s, "
        f"test {time.monotonic() - began:.0f}s"
    )


FAST = "fast"  # SIGINT: fast shutdown (transactions rolled back, sessions terminated)
KILL = "kill"  # SIGKILL of the postmaster: crash recovery on the next start


@pytest.mark.parametrize(
    ("hours", "rate", "outages", "down_s"),
    [
        pytest.param(
            12, 250.0, ((FAST, RANDOM), (KILL, WRITING), (FAST, WRITING)), 2.0, id="ci"
        ),
        pytest.param(
            72, 500.0,
            ((FAST, RANDOM), (KILL, WRITING), (FAST, WRITING), (KILL, RANDOM)) * 2, 8.0,
            id="long", marks=pytest.mark.slow,
        ),
    ],
)  # fmt: skip
def test_a_worker_rides_out_postgres_restarts_under_load(
    kafka: str,
    workers: Callable[..., Worker],
    loads: Callable[[str, Sequence[bytes], float], Load],
    new_database: Callable[[], str],
    postgres: EmbeddedPostgres,
    tmp_path: Path,
    hours: int,
    rate: float,
    outages: tuple[tuple[str, str], ...],
    down_s: float,
) -> None:
    began = time.monotonic()
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    lines = simulated(hours)
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE crisiswatch")
    url = postgres.url_for("crisiswatch")
    migrate(url)
    load = loads(kafka, lines, rate)
    worker = workers(kafka, url, "worker", *BATCH)
    windows: list[tuple[str, str, float, float]] = []
    resumed: list[float] = []
    for how, when in outages:
        first_commit(url, consumed(url) or 0, 90)
        if windows:
            resumed.append(time.time() - windows[-1][3])
        if when == RANDOM:
            time.sleep(rng.uniform(0.0, RANDOM_WITHIN_S))
        with mid_batch(url) if when == WRITING else contextlib.nullcontext():
            assert load.publishing, "the load ended before the faults did"
            down = time.time()
            if how == FAST:
                postgres.stop()
            else:
                postgres.kill()
        time.sleep(down_s)
        assert worker.process.poll() is None, "the worker exited while PostgreSQL was down"
        postgres.start()
        windows.append((how, when, down, time.time()))
    first_commit(url, consumed(url) or 0, 90)
    resumed.append(time.time() - windows[-1][3])
    faults_s = time.monotonic() - began
    # The same process from start to finish (no crash loop), drained by SIGTERM, exit 0.
    finish(url, load, worker, 240)
    disturbed_s = time.monotonic() - began

    assert "beyond retry" not in worker.log.read_text(errors="replace")
    warnings = retry_warnings(worker.log)
    policy = RetryPolicy()  # the worker's: exponential backoff, capped
    for *_, attempt, delay in warnings:
        backoff = policy.first_delay * policy.factor ** (attempt - 1)
        assert delay == pytest.approx(min(backoff, policy.max_delay), abs=0.05)
    attempts = []
    for how, when, down, up in windows:
        inside = [w for w in warnings if down - 0.5 <= w[0] <= up + 1.0]
        assert inside, f"no retry while PostgreSQL was down ({how}, {when})"
        if when == WRITING:  # the batch in flight failed, and was retried (the next batch's
            # read of its referrals may notice first: it runs while the write commits)
            assert any(w[1:3] == ("write", 1) for w in inside[:2]), inside[:2]
        attempts.append(max(w[2] for w in inside))
        assert attempts[-1] >= 3, f"no backoff while PostgreSQL was down ({how}, {when})"
    outside = [w for w in warnings if not any(d - 0.5 <= w[0] <= u + 1.0 for *_, d, u in windows)]
    assert not outside, f"retries while PostgreSQL was up: {outside[:3]}"

    reference, records, reference_s = reference_run(
        kafka, new_database(), workers, load.sent, tmp_path / "reference"
    )
    disturbed = collect(url, records, tmp_path / "disturbed")
    assert not log_errors(tmp_path.glob("*.log"))
    figures = assert_same(disturbed, reference, lines[: load.sent_lines])
    # The worker retried the failed step, never the batch: no outcome was published twice.
    assert figures["republished"] == 0
    print(
        f"\nPostgreSQL restarts {outages} down {down_s:g}s each (seed {seed}): "
        f"{load.sent} messages at {rate:g}/s, {figures}; retry attempts per outage {attempts}, "
        f"resumed {[round(s, 1) for s in resumed]}s after each start; faults {faults_s:.0f}s, "
        f"disturbed run {disturbed_s:.0f}s, reference {reference_s:.0f}s, "
        f"test {time.monotonic() - began:.0f}s"
    )
