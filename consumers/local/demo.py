"""`crisiswatch demo`: the whole live system on one machine, with nothing to install.

Starts (unless given) an embedded Kafka-protocol broker and an embedded PostgreSQL on free
loopback ports, creates the topics and the schema, runs one worker process, feeds it
England-shaped referrals from the simulator, and prints a console summary until Ctrl-C.

The feed starts three hours in the past (sent at once, so the console has open, at-risk and
breached clocks and a % met straight away) and then runs live: each simulated line is sent
when its arrival time comes on the wall clock, at `speed` times England's real referral rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from consumers.kafka.admin import create_topics
from consumers.kafka.diagnose import preflight
from consumers.kafka.publisher import EventPublisher
from consumers.kafka.security import KafkaSecurity
from consumers.local.embedded import EmbeddedBroker, EmbeddedPostgres, free_port, reap
from consumers.store import Counts, Store, migrate
from streams.engine import Rules
from streams.engine.outcome import AT_RISK, BREACHED, WAITING
from streams.geography import regions
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from streams.simulation import SimulationConfig, simulate

BACKFILL = timedelta(hours=3)
PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class DemoOptions:
    kafka: str | None
    database_url: str | None
    kafka_security: KafkaSecurity  # for a broker given with --kafka; the embedded one: plaintext
    speed: float
    duration: float | None  # seconds of wall time; None: until Ctrl-C
    refresh: float  # seconds between console summaries
    seed: int
    rules: Rules  # the worker's: the console's "today" is its local day


def run_demo(options: DemoOptions) -> None:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.ExitStack() as stack:
            board_port = free_port()
            click.echo(f"demo: operations board at http://127.0.0.1:{board_port}/ (live shortly)")
            kafka = options.kafka
            security = options.kafka_security
            if kafka is None:
                security = KafkaSecurity.plaintext()
                broker = stack.enter_context(EmbeddedBroker())
                kafka = broker.bootstrap
                click.echo(f"demo: embedded Kafka-protocol broker (Tansu) at {kafka}")
            database_url = options.database_url
            if database_url is None:
                postgres = stack.enter_context(EmbeddedPostgres())
                database_url = postgres.url
                click.echo(f"demo: embedded PostgreSQL at {database_url}")
            preflight(kafka, security)  # a certificate or password problem: one line, now
            create_topics(
                kafka,
                {EVENTS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1},
                security=security,
            )
            migrate(database_url)
            stack.enter_context(_board(database_url, board_port))
            metrics_port = free_port()
            worker = stack.enter_context(_worker(kafka, security, database_url, metrics_port))
            failures: list[BaseException] = []
            feed = threading.Thread(
                target=_guarded,
                args=(failures, stop, _feed, kafka, security, options, stop),
                name="demo-feed",
                daemon=True,
            )
            feed.start()
            click.echo(
                f"demo: worker pid {worker.pid}; simulated England at {options.speed:g}x the "
                f"real referral rate.\n      metrics: http://127.0.0.1:{metrics_port}/metrics; "
                f"outcomes: topic {OUTCOMES_TOPIC}; PostgreSQL tables clocks, events. "
                "Ctrl-C stops."
            )
            started = time.monotonic()
            while not stop.wait(options.refresh):
                if worker.poll() is not None:
                    raise click.ClickException(f"the worker exited with code {worker.returncode}")
                click.echo(summary(database_url, options.rules))
                if options.duration is not None and time.monotonic() - started >= options.duration:
                    break
            stop.set()
            feed.join(timeout=15)
            if failures:
                raise click.ClickException(f"the simulator feed failed: {failures[0]}")
            click.echo(summary(database_url, options.rules))
            click.echo("demo: stopping")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    click.echo("demo: stopped cleanly")


@contextlib.contextmanager
def _worker(
    kafka: str, security: KafkaSecurity, database_url: str, metrics_port: int
) -> Iterator[subprocess.Popen[bytes]]:
    log = Path(tempfile.gettempdir()) / f"crisiswatch-demo-worker-{os.getpid()}.log"
    env = {
        # The security settings go as options (`security.options()`): none from the environment,
        # which may describe an external broker while the embedded one is plaintext.
        **{k: v for k, v in os.environ.items() if not k.startswith("CRISISWATCH_KAFKA_")},
        # Pseudonyms only need to link within the demo's lifetime.
        "CRISISWATCH_PSEUDONYM_KEY": os.environ.get(
            "CRISISWATCH_PSEUDONYM_KEY", secrets.token_hex(16)
        ),
    }
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumers.cli", "worker", "--kafka", kafka,
             *security.options(), "--database-url", database_url, "--log-level", "WARNING",
             "--metrics-port", str(metrics_port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops the worker itself
        )  # fmt: skip
    click.echo(f"demo: worker log {log}")
    try:
        yield process
    finally:
        reap(process, 20.0)


@contextlib.contextmanager
def _board(database_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`crisiswatch board` on loopback (no sign-in) for the demo's database."""
    log = Path(tempfile.gettempdir()) / f"crisiswatch-demo-board-{os.getpid()}.log"
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumers.cli", "board", "--database-url", database_url,
             "--host", "127.0.0.1", "--port", str(port), "--auth", "none"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        reap(process, 10.0)


def _guarded(failures: list[BaseException], stop: threading.Event, target: Any, *args: Any) -> None:
    """Run `target`; on failure keep the exception and stop the demo (no thread traceback)."""
    try:
        target(*args)
    except Exception as exc:
        failures.append(exc)
        stop.set()


def _feed(kafka: str, security: KafkaSecurity, options: DemoOptions, stop: threading.Event) -> None:
    """Send simulated lines: the backfill at once, then each when its time comes."""
    now = datetime.now(UTC)
    live = timedelta(seconds=options.duration) if options.duration else timedelta(days=365)
    config = SimulationConfig(
        start=now - BACKFILL, duration=BACKFILL + live, speed=options.speed, seed=options.seed
    )
    with EventPublisher(kafka, EVENTS_TOPIC, security=security) as publisher:
        for line in simulate(config):
            # Hold a line until its arrival (never before its event time: arrival >= time).
            due = line.arrival.timestamp()
            while not stop.is_set() and time.time() < due:
                stop.wait(min(0.5, due - time.time()))
            if stop.is_set():
                break
            publisher.send(line.key, line.line.encode("utf-8"))
        publisher.flush()


def summary(database_url: str, rules: Rules, now: int | None = None) -> str:
    """A console table: open clocks by state and today's 2-hour % met, by region.

    The store's counts under the worker's rules, so "today" is the local day of
    CRISISWATCH_TIMEZONE, as everywhere else. `now`: epoch seconds (default: the wall clock).
    """
    instant = int(time.time()) if now is None else now

    async def read() -> Counts:
        async with await Store.connect(database_url, rules=rules) as store:
            return await store.counts(instant)

    counts = asyncio.run(read())
    names = {code: region.name for code, region in regions().items()}
    stamp = datetime.fromtimestamp(instant, rules.zone).strftime("%H:%M:%S %Z")
    lines = [
        f"\n{stamp}  {counts.events} events stored",
        f"{'region':<26}{'waiting':>9}{'at risk':>9}{'breached':>10}{'stopped':>9}"
        f"{'% met of stopped':>18}{'projected % met':>17}",
    ]
    for region in [*counts.regions(), None]:
        name = "England" if region is None else names.get(region, region)
        lines.append(
            _row(
                name,
                counts.open_in(region, WAITING),
                counts.open_in(region, AT_RISK),
                counts.open_in(region, BREACHED),
                *counts.stopped_in(region),
                counts.breached_ucr_in(region),
            )
        )
    lines.append(
        "2-hour (type-05) clocks today. % met of stopped: met / stopped today; projected % met:"
        " met / (stopped + open breached), counting every open breached clock as not met."
    )
    return "\n".join(lines)


def _row(
    name: str, waiting: int, at_risk: int, breached: int, stopped: int, met: int, breached_05: int
) -> str:
    pct = f"{100 * met / stopped:.1f}" if stopped else "-"
    projected = f"{100 * met / (stopped + breached_05):.1f}" if stopped + breached_05 else "-"
    return (
        f"{name[:25]:<26}{waiting:>9}{at_risk:>9}{breached:>10}{stopped:>9}{pct:>18}{projected:>17}"
    )
