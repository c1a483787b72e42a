"""Operator commands around the live pipeline: `topics`, `db`, `publish`, `simulate`.

Registered on the `crisiswatch` group by `consumers.cli.main`. Heavy imports (kafka-python, psycopg,
the codec, the simulator) happen inside the commands, so `crisiswatch --help` stays fast.
Errors are crisiswatch's own (`streams.errors`); `consumers.cli.main.main` turns them into one line
and the contract's exit code.

`publish` and `simulate` stop cleanly on Ctrl-C: the first one ends the input, flushes what
was queued and reports (exit code 130); a second one aborts at once.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from consumers.cli.options import database_option, kafka_option, kafka_security_options
from consumers.kafka.address import bootstrap_servers
from streams.errors import (
    InputError,
    ServiceError,
)
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC

if TYPE_CHECKING:
    from consumers.kafka.publisher import EventPublisher, PublishReport
    from consumers.kafka.security import KafkaSecurity
    from streams.simulation import SimulatedLine, SimulationConfig

__all__ = ["db", "publish", "simulate", "topics"]

#: Partitions of new topics: the most worker processes that can share the load.
DEFAULT_PARTITIONS: Final = 12
#: Retention of new topics, in hours (a week: time to replay after an outage).
DEFAULT_RETENTION_HOURS: Final = 168
#: How long topic administration may wait for the broker, in seconds.
ADMIN_TIMEOUT_S: Final = 10.0
#: Interval of the status line while simulating in real time, in seconds.
STATUS_INTERVAL_S: Final = 5.0
#: Exit code after a Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED_EXIT: Final = 130

topic_option = click.option(
    "--topic",
    default=EVENTS_TOPIC,
    show_default=True,
    help="Kafka topic to send to.",
)


# -- topics ------------------------------------------------------------------------------------


@click.group()
def topics() -> None:
    """Kafka topics of the pipeline."""


@topics.command("create")
@kafka_option
@kafka_security_options
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=DEFAULT_PARTITIONS,
    envvar="CRISISWATCH_PARTITIONS",
    show_envvar=True,
    show_default=True,
    help="Partitions of each new topic (the most worker processes that share the load).",
)
@click.option(
    "--retention-hours",
    type=click.IntRange(min=1),
    default=DEFAULT_RETENTION_HOURS,
    show_default=True,
    help="retention.ms of each new topic, in hours.",
)
def create_topics_command(
    kafka: str, kafka_security: KafkaSecurity | None, partitions: int, retention_hours: int
) -> None:
    """Create referral-events, referral-outcomes and referral-events-dlq.

    Idempotent: a topic that already exists is left as it is (its partition count is not
    changed) and reported.
    """
    from consumers.kafka.admin import TopicAdminError, create_topics, describe_partitions
    from consumers.kafka.diagnose import preflight

    bootstrap = bootstrap_servers(kafka)
    names = (EVENTS_TOPIC, OUTCOMES_TOPIC, DLQ_TOPIC)
    if kafka_security is not None:
        preflight(bootstrap, kafka_security)
    try:
        created = create_topics(
            bootstrap,
            dict.fromkeys(names, partitions),
            retention_ms=retention_hours * 3_600_000,
            timeout_s=ADMIN_TIMEOUT_S,
            security=kafka_security,
        )
        existing = {
            name: describe_partitions(
                bootstrap, name, timeout_s=ADMIN_TIMEOUT_S, security=kafka_security
            )
            for name in names
            if name not in created
        }
    except TopicAdminError as exc:
        raise _admin_error(exc, bootstrap, kafka_security) from exc
    for name in names:
        if name in created:
            click.echo(f"created {name} ({partitions} partitions, retention {retention_hours} h)")
            continue
        have = existing[name]
        note = f"; not changed to {partitions}" if have != partitions else ""
        click.echo(f"{name} already exists ({have} partitions{note})")


def _admin_error(exc: Exception, bootstrap: str, security: KafkaSecurity | None) -> ServiceError:
    from consumers.kafka.diagnose import connection_error
    from consumers.kafka.publisher import _kafka

    _, errors = _kafka()
    if isinstance(exc.__cause__, errors.KafkaTimeoutError | errors.KafkaConnectionError):
        return connection_error(bootstrap, security, ADMIN_TIMEOUT_S)
    return ServiceError(str(exc))


# -- db ----------------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """The PostgreSQL schema."""


@db.command("migrate")
@database_option
def migrate_command(database_url: str) -> None:
    """Bring the database to the latest schema (idempotent; safe to run concurrently)."""
    from consumers.store import migrate

    applied = migrate(database_url)
    if applied:
        click.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        click.echo("schema up to date")


@db.command("outcomes")
@database_option
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default="-",
    help="CSV to write (default: standard output).",
)
def outcomes_command(database_url: str, out: Path) -> None:
    """Every referral's outcome as the workers last stored it, as CONTRACT section 2 CSV.

    The same columns and order as `crisiswatch replay`, so the live system can be reconciled
    with a replay of the same events (open clocks show the state last written, not the state
    now). Referrals with no `referral.received` yet are left out.
    """
    import asyncio

    from consumers.cli.output import write_output
    from consumers.store import Store
    from streams.engine import Outcome
    from streams.replay import write_outcomes

    async def read() -> list[Outcome]:
        async with await Store.connect(database_url) as store:
            return await store.outcomes()

    outcomes = asyncio.run(read())
    write_output(out, lambda handle: write_outcomes(outcomes, handle))
    if str(out) != "-":
        click.echo(f"wrote {len(outcomes)} outcomes to {out}", err=True)


# -- publish -----------------------------------------------------------------------------------


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@kafka_option
@kafka_security_options
@topic_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def publish(
    file: Path, kafka: str, kafka_security: KafkaSecurity | None, topic: str, quiet: bool
) -> None:
    """Send an NDJSON event file to Kafka, one message per line, keyed by referral id.

    Every line is checked first (CONTRACT section 1); bad lines are reported on standard error
    (count by reason and the first line numbers) and not sent. The bytes sent are the lines as
    they are in the file.
    """
    from tqdm import tqdm

    from consumers.kafka.publisher import EventPublisher, publish_lines
    from streams.codec import Codec

    bootstrap = bootstrap_servers(kafka)
    try:
        source = file.open("rb")
        size = os.fstat(source.fileno()).st_size
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}") from exc
    codec = Codec()
    with (
        source,
        EventPublisher(bootstrap, topic, security=kafka_security) as publisher,
        _stop_on_sigint() as stop,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc="publish",
            disable=True if quiet else None,  # None: only on a terminal
            file=sys.stderr,
        ) as bar,
    ):
        try:
            report = publish_lines(
                _until(stop, source),
                publisher,
                codec,
                progress=None if bar.disable else bar.update,
            )
        except OSError as exc:
            raise InputError(f"cannot read {file}: {exc.strerror or exc}") from exc
    if not quiet:
        _summary("publish", report, topic, stopped=stop.is_set())
    if stop.is_set():
        sys.exit(INTERRUPTED_EXIT)  # SystemExit: click.Exit would be swallowed by main()


def _summary(name: str, report: PublishReport, topic: str, *, stopped: bool) -> None:
    rejected = report.rejected_total
    if rejected and name == "publish":
        rejects = f"; {rejected} bad line{'s' if rejected > 1 else ''} not sent: "
    elif rejected:
        rejects = f"; {rejected} deliberately bad line{'s' if rejected > 1 else ''} among them: "
    else:
        rejects = ""
    click.echo(
        f"{name}: {report.sent} sent to {topic} in {report.seconds:.1f} s "
        f"({_rate(report.rate)}/s){rejects}{report.rejections_text()}"
        f"{'; stopped by Ctrl-C' if stopped else ''}",
        err=True,
    )


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.1f}"


def _until(stop: threading.Event, lines: Iterable[bytes]) -> Iterator[bytes]:
    for line in lines:
        if stop.is_set():
            return
        yield line


@contextmanager
def _stop_on_sigint() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C (a second one raises KeyboardInterrupt as usual).

    Off the main thread (signals cannot be handled there) the event is simply never set.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def first(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


# -- simulate ----------------------------------------------------------------------------------


@click.command()
@kafka_option
@kafka_security_options
@topic_option
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiple of England's real referral rate (1: about 100 two-hour referrals an hour).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="Event time over which referrals are received.",
)
@click.option(
    "--start",
    metavar="TIME",
    default=None,
    help="RFC 3339 time of the first possible referral (default: now).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="Random seed (default: a fresh one, printed). Referral and event ids contain it: "
    "runs with the same seed repeat the same ids, which the worker ignores as duplicates.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write NDJSON to this file instead of sending to Kafka.",
)
@click.option(
    "--realtime/--no-realtime",
    default=True,
    show_default=True,
    help="To Kafka: send each line when it is due (event time paced by the wall clock), or "
    "everything as fast as possible.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress or status lines.")
def simulate(
    kafka: str,
    kafka_security: KafkaSecurity | None,
    topic: str,
    speed: float,
    duration: float,
    start: str | None,
    seed: int | None,
    out: Path | None,
    realtime: bool,
    quiet: bool,
) -> None:
    """Synthetic England-shaped referral events, to Kafka or to a file.

    Volumes, performance and recording habits follow the published 2024-25 national figures
    (see streams/simulation/); about 0.1% of lines are deliberately bad and are sent too, to
    exercise the dead-letter queue.

    In real time (the default for Kafka) each line is sent when its arrival time is due, the
    first possible referral at --start mapped to now, so `--speed 10` is ten times England's
    referrals, live; the run ends after --duration seconds (lines due later are not sent).
    With --no-realtime or --out, every line of the simulation is produced as fast as possible,
    including the visits and late records that follow the last referral.
    """
    from streams.simulation import SimulationConfig

    begin = _parse_start(start)
    if seed is None:
        seed = secrets.randbelow(1_000_000)
    try:
        config = SimulationConfig(
            start=begin, duration=timedelta(seconds=duration), speed=speed, seed=seed
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if out is not None:
        _simulate_to_file(config, out, quiet=quiet)
    else:
        _simulate_to_kafka(
            config,
            bootstrap_servers(kafka),
            topic,
            realtime=realtime,
            quiet=quiet,
            security=kafka_security,
        )


def _parse_start(value: str | None) -> datetime:
    if value is None:
        # The command line is the edge where the wall clock is read (the engine never does).
        return datetime.fromtimestamp(int(time.time()), tz=UTC)
    try:
        parsed = datetime.fromisoformat(value.strip().upper())
    except ValueError as exc:
        raise InputError(f"--start: {value!r} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise InputError(f"--start: {value!r} needs a UTC offset or Z")
    return parsed.astimezone(UTC)


def _simulate_to_file(config: SimulationConfig, out: Path, *, quiet: bool) -> None:
    from tqdm import tqdm

    from streams.simulation import simulate as run
    from streams.simulation import write_ndjson

    tmp = out.with_name(f".{out.name}.tmp")
    started = time.perf_counter()
    try:
        with tqdm(
            run(config),
            unit=" lines",
            unit_scale=True,
            desc="simulate",
            disable=True if quiet else None,
            file=sys.stderr,
        ) as lines:
            count = write_ndjson(lines, tmp)
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not quiet:
        seconds = time.perf_counter() - started
        click.echo(
            f"simulate: {count} lines to {out} in {seconds:.1f} s (seed {config.seed}, "
            f"speed {config.speed:g}, {config.duration.total_seconds():g} s from "
            f"{config.start.isoformat().replace('+00:00', 'Z')})",
            err=True,
        )


def _simulate_to_kafka(
    config: SimulationConfig,
    bootstrap: str,
    topic: str,
    *,
    realtime: bool,
    quiet: bool,
    security: KafkaSecurity | None,
) -> None:
    from tqdm import tqdm

    from consumers.kafka.publisher import EventPublisher, publish_lines
    from streams.codec import Codec
    from streams.simulation import simulate as run

    codec = Codec()
    with (
        EventPublisher(
            bootstrap, topic, client_id="crisiswatch-simulator", security=security
        ) as publisher,
        _stop_on_sigint() as stop,
    ):
        if not quiet:
            click.echo(
                f"simulate: seed {config.seed}, speed {config.speed:g}, to {topic} on "
                f"{bootstrap}{' in real time' if realtime else ''}; Ctrl-C stops",
                err=True,
            )
        if realtime:
            status = None if quiet else _Status(publisher)
            lines: Iterable[bytes] = _paced(run(config), config, stop, status)
            report = publish_lines(lines, publisher, codec, send_rejected=True)
        else:
            with tqdm(
                unit=" lines",
                unit_scale=True,
                desc="simulate",
                disable=True if quiet else None,
                file=sys.stderr,
            ) as bar:
                encoded = (item.line.encode("utf-8") for item in run(config))
                report = publish_lines(
                    _until(stop, encoded),
                    publisher,
                    codec,
                    send_rejected=True,
                    progress=None if bar.disable else lambda _: bar.update(),
                )
    if not quiet:
        _summary("simulate", report, topic, stopped=stop.is_set())
    if stop.is_set():
        sys.exit(INTERRUPTED_EXIT)  # SystemExit: click.Exit would be swallowed by main()


class _Status:
    """Prints `simulate: N sent (R/s), event time T` to standard error every few seconds."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher
        self._last_at = time.monotonic()
        self._last_sent = 0

    def __call__(self, event_time: datetime) -> None:
        now = time.monotonic()
        if now - self._last_at < STATUS_INTERVAL_S:
            return
        sent = self._publisher.sent
        rate = (sent - self._last_sent) / (now - self._last_at)
        self._last_at, self._last_sent = now, sent
        click.echo(
            f"simulate: {sent} sent ({_rate(rate)}/s), event time "
            f"{event_time.isoformat(timespec='seconds').replace('+00:00', 'Z')}",
            err=True,
        )


def _paced(
    lines: Iterable[SimulatedLine],
    config: SimulationConfig,
    stop: threading.Event,
    status: Callable[[datetime], None] | None,
) -> Iterator[bytes]:
    """Each line's bytes once its arrival is due: `start` maps to now, then one to one.

    Ends after `config.duration` (lines due later are dropped), or when `stop` is set.
    """
    wall_start = time.monotonic()
    start = config.start
    end = config.duration.total_seconds()
    for item in lines:
        due = (item.arrival - start).total_seconds()
        if due > end:
            return
        while True:
            if stop.is_set():
                return
            wait = due - (time.monotonic() - wall_start)
            if wait <= 0:
                break
            if status is not None:
                status(start + timedelta(seconds=time.monotonic() - wall_start))
            # Wakes at once on Ctrl-C (the handler sets `stop`); short enough for the status.
            stop.wait(min(wait, 1.0))
        yield item.line.encode("utf-8")
        if status is not None:
            status(item.arrival)
