"""Shared command-line options: every option naming a service also reads an environment
variable (CONTRACT section 3), shown in `--help`."""

from __future__ import annotations

import click

kafka_option = click.option(
    "--kafka",
    envvar="CRISISWATCH_KAFKA",
    show_envvar=True,
    default="127.0.0.1:9092",
    show_default=True,
    metavar="HOST:PORT[,...]",
    help="Kafka bootstrap servers.",
)
database_option = click.option(
    "--database-url",
    envvar="CRISISWATCH_DATABASE_URL",
    show_envvar=True,
    default="postgresql://127.0.0.1:5432/crisiswatch",
    show_default=True,
    metavar="URL",
    help="PostgreSQL connection URL (libpq form; password from PGPASSWORD or ~/.pgpass).",
)
metrics_port_option = click.option(
    "--metrics-port",
    envvar="CRISISWATCH_METRICS_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    default=9464,
    show_default=True,
    help="Port of /metrics, /health and /ready (0: pick a free port).",
)
metrics_host_option = click.option(
    "--metrics-host",
    envvar="CRISISWATCH_METRICS_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    metavar="ADDRESS",
    help="Address /metrics, /health and /ready listen on (0.0.0.0 in a container).",
)
alertmanager_option = click.option(
    "--alertmanager-url",
    envvar="CRISISWATCH_ALERTMANAGER_URL",
    show_envvar=True,
    default=None,
    metavar="URL",
    help="Alertmanager to post per-referral alerts to (none when unset).",
)
