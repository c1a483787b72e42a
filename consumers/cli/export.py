"""`crisiswatch export`: weekly or monthly regional exports (CONTRACT section 5).

The command reads the rules settings and the period, then hands over to
`consumers.exports.writer.export_period`, which queries, builds and writes the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from consumers.cli.options import database_option
from consumers.exports.figures import ENGLAND, UNKNOWN
from streams.errors import ConfigurationError

__all__ = ["export"]


@click.command()
@click.option(
    "--week",
    metavar="YYYY-Www",
    default=None,
    help="ISO week, Monday to Sunday local time (CRISISWATCH_TIMEZONE, default Europe/London).",
)
@click.option("--month", metavar="YYYY-MM", default=None, help="Calendar month instead.")
@click.option(
    "--region",
    "regions",
    metavar="CODE",
    multiple=True,
    help="Only these areas (region codes, 'unknown', 'england'); repeatable. Default: all.",
)
@click.option(
    "--publication",
    is_flag=True,
    help="Round counts to the nearest 5 (1-7 as 5) and omit organisations with no data.",
)
@click.option(
    "--detail", is_flag=True, help="Add a per-clock sheet (referral ids, no patient data)."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory; the export goes to OUT/<period>/ (replaced whole on a re-run).",
)
@database_option
@click.option("--quiet", "-q", is_flag=True, help="No progress on standard error.")
def export(
    week: str | None,
    month: str | None,
    regions: tuple[str, ...],
    publication: bool,
    detail: bool,
    out: Path,
    database_url: str,
    quiet: bool,
) -> None:
    """Weekly (ISO week) or monthly regional exports from PostgreSQL (CONTRACT section 5).

    Writes OUT/<period>/<area>/summary.csv and report.xlsx for England and each region, and
    OUT/<period>/manifest.json (row counts, SHA-256). Rules settings (time zone, thresholds)
    come from the environment, as for the worker.
    """
    from pydantic import ValidationError

    from consumers.exports.writer import export_period
    from streams.period import parse_month, parse_week
    from streams.settings import RulesSettings

    if (week is None) == (month is None):
        raise click.UsageError("give exactly one of --week YYYY-Www and --month YYYY-MM")
    if publication and detail:
        raise click.UsageError("--detail cannot go with --publication (files that leave)")
    try:
        settings: type[Any] = RulesSettings  # pydantic-settings reads the environment
        rules = settings().rules()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = f"CRISISWATCH_{str(first['loc'][0]).upper()}" if first.get("loc") else "rules"
        raise ConfigurationError(f"{name}: {first['msg']}") from exc
    try:
        if week is not None:
            period = parse_week(week, rules.zone)
        else:
            assert month is not None
            period = parse_month(month, rules.zone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--week" if week else "--month") from exc
    areas = [_area_code(code) for code in regions] or None

    def say(message: str) -> None:
        click.echo(message, err=True)

    export_period(
        database_url,
        period,
        out,
        rules=rules,
        areas=areas,
        publication=publication,
        detail=detail,
        progress=None if quiet else say,
    )


def _area_code(code: str) -> str:
    lowered = code.strip().lower()
    return lowered if lowered in (ENGLAND, UNKNOWN) else code.strip().upper()
