"""The `crisiswatch` command line (CONTRACT section 3).

Exit codes: 0 success; 2 bad usage or input (one line, no traceback); 1 anything else.
Set CRISISWATCH_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from consumers.cli.options import (
    alertmanager_cafile_option,
    alertmanager_option,
    alertmanager_password_file_option,
    alertmanager_username_option,
    database_option,
    kafka_option,
    kafka_security_options,
    metrics_host_option,
    metrics_port_option,
)
from streams.errors import ConfigurationError, CrisiswatchError, InputError

if TYPE_CHECKING:
    from consumers.kafka.security import KafkaSecurity


def _parse_instant(value: str, option: str) -> int:
    try:
        parsed = datetime.fromisoformat(value.strip().upper())
    except ValueError as exc:
        raise InputError(f"{option}: {value!r} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise InputError(f"{option}: {value!r} needs a UTC offset or Z")
    return int(parsed.timestamp() // 1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="crisiswatch")
def cli() -> None:
    """crisiswatch: live monitor of the 2-hour urgent community response and 2-day
    reablement standards."""


@cli.command()
@click.argument("events", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Outcomes CSV to write (default: standard output).",
)
@click.option(
    "--rejects",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Rejected lines as NDJSON (default: OUT with .rejects.ndjson next to --out).",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    default=None,
    help="Judge open clocks at this RFC 3339 time (default: the latest event time in the "
    "file); events after it are left out.",
)
@click.option("--quiet", "-q", is_flag=True, help="No summary on standard error.")
def replay(
    events: Path, out: Path | None, rejects: Path | None, as_of: str | None, quiet: bool
) -> None:
    """Offline outcomes of an NDJSON event file, one row per referral (CONTRACT section 2).

    Rules settings come from the environment (CRISISWATCH_UCR_LIMIT_SECONDS,
    CRISISWATCH_START_MODE, CRISISWATCH_TIMEZONE, ...; see the README).
    """
    from consumers.cli.output import write_output
    from streams.codec import Codec
    from streams.replay import replay as run
    from streams.replay import write_outcomes
    from streams.runtime import tune_gc_for_batches
    from streams.settings import PrivacySettings, RulesSettings

    tune_gc_for_batches()
    as_of_instant = _parse_instant(as_of, "--as-of") if as_of is not None else None
    rules = _settings(RulesSettings).rules()
    codec = Codec(_settings(PrivacySettings).pseudonymiser())
    if rejects is None and out is not None:
        rejects = out.with_name(out.stem + ".rejects.ndjson")
    try:
        source = events.open("rb")
        size = os.fstat(source.fileno()).st_size
    except OSError as exc:
        raise InputError(f"cannot read {events}: {exc.strerror or exc}") from exc
    from tqdm import tqdm

    bar = tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        desc="replay",
        disable=None if size > 16 * 1024 * 1024 and not quiet else True,
        file=sys.stderr,
    )
    try:
        rejects_handle = rejects.open("w", encoding="utf-8") if rejects is not None else None
    except OSError as exc:
        raise InputError(f"cannot write {rejects}: {exc.strerror or exc}") from exc
    with source, bar:
        try:
            result = run(
                source,
                codec=codec,
                rules=rules,
                as_of=as_of_instant,
                rejects=rejects_handle,
                progress=bar.update if not bar.disable else None,
            )
        except OSError as exc:
            raise InputError(f"cannot read {events}: {exc.strerror or exc}") from exc
        finally:
            if rejects_handle is not None:
                rejects_handle.close()
    write_output(out, lambda handle: write_outcomes(result.outcomes, handle))
    if not quiet:
        from streams.engine import format_instant

        reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.rejections.items()))
        click.echo(
            f"replay: {result.lines} lines, {result.accepted} events accepted, "
            f"{result.duplicates} duplicates, {result.rejected} rejected"
            f"{f' ({reasons})' if reasons else ''}"
            f"{f', {result.after_as_of} after --as-of' if as_of is not None else ''}; "
            f"{len(result.outcomes)} referrals judged at {format_instant(result.judged_at)}"
            f"{f'; {result.pending} without referral.received' if result.pending else ''}",
            err=True,
        )


@cli.command()
@kafka_option
@kafka_security_options
@database_option
@click.option("--group", default="crisiswatch", show_default=True, help="Consumer group id.")
@click.option(
    "--batch-size", type=click.IntRange(1, 100_000), default=5000, show_default=True,
    help="Events per batch (one PostgreSQL transaction).",
)  # fmt: skip
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Faust's working directory (default: a per-process temporary directory).",
)  # fmt: skip
@click.option(
    "--log-level", envvar="CRISISWATCH_LOG_LEVEL", show_envvar=True, default="INFO",
    show_default=True, help="Logging level (DEBUG adds referral ids).",
)  # fmt: skip
@click.option(
    "--log-format", envvar="CRISISWATCH_LOG_FORMAT", show_envvar=True,
    type=click.Choice(["json", "text"]), default="json", show_default=True,
    help="One JSON object per line, or plain text.",
)  # fmt: skip
@metrics_port_option
@metrics_host_option
@alertmanager_option
@alertmanager_cafile_option
@alertmanager_username_option
@alertmanager_password_file_option
@click.option(
    "--dashboard-url", envvar="CRISISWATCH_DASHBOARD_URL", show_envvar=True, default=None,
    metavar="URL", help="Operations dashboard linked from alerts.",
)  # fmt: skip
def worker(
    kafka: str,
    kafka_security: KafkaSecurity | None,
    database_url: str,
    group: str,
    batch_size: int,
    data_dir: Path | None,
    log_level: str,
    log_format: str,
    metrics_port: int,
    metrics_host: str,
    alertmanager_url: str | None,
    alertmanager_cafile: Path | None,
    alertmanager_username: str | None,
    alertmanager_password_file: Path | None,
    dashboard_url: str | None,
) -> None:
    """The live stream worker: referral-events -> clocks -> referral-outcomes and PostgreSQL.

    Scale out by running more workers with the same --group (up to one per partition).
    SIGTERM drains: the batch in flight is written, the worker leaves the group, exit 0.
    Exit 2: a malformed setting; 1: the broker or database cannot be reached, a certificate
    does not verify or credentials are refused (one line naming the broker and the cause).
    """
    import tempfile

    from consumers.kafka.security import KafkaSecurity
    from consumers.live.worker import WorkerConfig, run
    from consumers.observe.alertmanager import AlertmanagerAccess
    from consumers.observe.logs import configure_logging
    from streams.codec import Codec
    from streams.settings import PrivacySettings, RulesSettings

    try:
        configure_logging(log_level, log_format)
    except ValueError as exc:
        raise ConfigurationError(f"--log-level / CRISISWATCH_LOG_LEVEL: {exc}") from exc
    rules = _settings(RulesSettings).rules()
    codec = Codec(_settings(PrivacySettings).pseudonymiser())
    access, password = AlertmanagerAccess.load(
        alertmanager_cafile, alertmanager_username, alertmanager_password_file
    )
    # Faust wants a directory; with none given, a temporary one that goes when the worker does
    # (nothing in it matters: state lives in PostgreSQL).
    with contextlib.ExitStack() as stack:
        directory = data_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="crisiswatch-worker-"))
        )
        config = WorkerConfig(
            kafka=kafka,
            database_url=database_url,
            group_id=group,
            batch_size=batch_size,
            data_dir=str(directory),
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            alertmanager_url=alertmanager_url,
            dashboard_url=dashboard_url,
            kafka_security=kafka_security or KafkaSecurity.plaintext(),
            alertmanager_access=access,
            alertmanager_password=password,
        )
        run(config, rules, codec)


@cli.command()
@click.option(
    "--kafka", envvar="CRISISWATCH_KAFKA", show_envvar=True, default=None, metavar="HOST:PORT",
    help="Use this broker instead of starting an embedded one.",
)  # fmt: skip
@kafka_security_options
@click.option(
    "--database-url", envvar="CRISISWATCH_DATABASE_URL", show_envvar=True, default=None,
    metavar="URL", help="Use this PostgreSQL instead of starting an embedded one.",
)  # fmt: skip
@click.option(
    "--speed", type=click.FloatRange(min=0.01), default=20.0, show_default=True,
    help="Referral rate as a multiple of England's real rate.",
)  # fmt: skip
@click.option(
    "--duration", type=click.FloatRange(min=1), default=None,
    help="Stop after this many seconds (default: run until Ctrl-C).",
)  # fmt: skip
@click.option("--refresh", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds between console summaries.")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Simulator seed (default: random).")
def demo(
    kafka: str | None,
    kafka_security: KafkaSecurity | None,
    database_url: str | None,
    speed: float,
    duration: float | None,
    refresh: float,
    seed: int | None,
) -> None:
    """The whole system on one machine: broker, database, worker, simulated England.

    Nothing to install: an embedded Kafka-protocol broker and PostgreSQL start on free
    loopback ports unless --kafka / --database-url are given. Prints a live summary by
    region; Ctrl-C stops everything cleanly. The --kafka-* security options apply to a broker
    given with --kafka (the embedded one is plaintext on loopback).
    """
    import secrets

    from consumers.kafka.security import KafkaSecurity
    from consumers.local.demo import DemoOptions, run_demo
    from streams.settings import RulesSettings

    run_demo(
        DemoOptions(
            kafka=kafka,
            database_url=database_url,
            kafka_security=kafka_security or KafkaSecurity.plaintext(),
            speed=speed,
            duration=duration,
            refresh=refresh,
            seed=seed if seed is not None else secrets.randbelow(2**31),
            rules=_settings(RulesSettings).rules(),
        )
    )


def _settings(model: type[Any]) -> Any:
    try:
        return model()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "CRISISWATCH_" + str(first["loc"][0]).upper() if first.get("loc") else model.__name__
        raise ConfigurationError(f"{name}: {first['msg']}") from exc


# The pipeline's operator commands (imports inside them keep `crisiswatch --help` fast).
from consumers.cli.board import board  # noqa: E402
from consumers.cli.commands import db, publish, simulate, topics  # noqa: E402
from consumers.cli.dashboards import dashboards  # noqa: E402
from consumers.cli.export import export  # noqa: E402
from consumers.cli.rules import rules  # noqa: E402

cli.add_command(topics)
cli.add_command(db)
cli.add_command(publish)
cli.add_command(simulate)
cli.add_command(rules)
cli.add_command(export)
cli.add_command(dashboards)
cli.add_command(board)


def _add_developer_commands() -> None:
    """`crisiswatch bench` where `benchmarks/` is importable: a source checkout's venv
    (scripts/bootstrap dev), not the wheel or the image, which ship without it."""
    if importlib.util.find_spec("benchmarks") is None:
        return
    from benchmarks.command import bench

    cli.add_command(bench)


_add_developer_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI with one-line errors and contract exit codes."""
    try:
        # Without standalone mode click *returns* the code of a `click.exceptions.Exit`.
        code = cli.main(args=argv, prog_name="crisiswatch", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("crisiswatch: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = (
            f" (see 'crisiswatch {exc.ctx.command_path.partition(' ')[2]} --help')".replace(
                "crisiswatch  --help", "crisiswatch --help"
            )
            if exc.ctx is not None
            else ""
        )
        click.echo(f"crisiswatch: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"crisiswatch: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except CrisiswatchError as exc:
        click.echo(f"crisiswatch: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("crisiswatch: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("CRISISWATCH_DEBUG"):
            raise
        click.echo(f"crisiswatch: unexpected error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    sys.exit(0)
