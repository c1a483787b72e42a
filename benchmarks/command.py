"""`crisiswatch bench`: the benchmark harness (`benchmarks.harness`) from the command line.

Registered on the `crisiswatch` group by `consumers.cli.main`; imports stay inside the command so
that `crisiswatch --help` does not load the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import click

from benchmarks import DEFAULT_SERVER
from streams.errors import InputError

__all__ = ["bench"]


@click.command()
@click.option(
    "--quick", is_flag=True,
    help="Small sizes (about 2 minutes): 20k events, 10k open clocks, 100k clocks in memory, "
    "a month of England. Default: the full run (about 10 minutes; the first one also "
    "simulates a national year, cached).",
)  # fmt: skip
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
    metavar="FILE", help="Also write every figure, the sizes and the machine as JSON.",
)  # fmt: skip
@click.option(
    "--database-url", envvar="CRISISWATCH_DATABASE_URL", show_envvar=True,
    default=DEFAULT_SERVER, show_default=True, metavar="URL",
    help="PostgreSQL server where scratch databases are created and dropped (the URL's own "
    "database is only used for that; needs CREATEDB).",
)  # fmt: skip
@click.option(
    "--embedded-postgres", is_flag=True,
    help="Start an embedded PostgreSQL for the run instead of using --database-url.",
)  # fmt: skip
@click.option("--size", "sizes", multiple=True, hidden=True, metavar="NAME=VALUE")
def bench(
    quick: bool,
    json_path: Path | None,
    database_url: str,
    embedded_postgres: bool,
    sizes: tuple[str, ...],
) -> None:
    """Measure crisiswatch on this machine and print a Markdown table of the figures.

    In one run: worker throughput end to end against raw aiokafka consumption of the same
    topic (the headline ratio); breach-detection lag with many open clocks; event -> outcome
    latency at 10x England's peak hourly rate; memory per open clock; PostgreSQL sink rows/s;
    replay of a simulated national year against json.loads alone. The broker is embedded
    (Tansu); workers are real `crisiswatch worker` processes. Progress goes to standard
    error. See docs/benchmarks.md.
    """
    from benchmarks.harness import FULL, QUICK, run

    try:
        chosen = (QUICK if quick else FULL).replace(sizes)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    run(
        chosen,
        mode="quick" if quick else "full",
        database_url=database_url,
        embedded_postgres=embedded_postgres,
        json_path=json_path,
    )
