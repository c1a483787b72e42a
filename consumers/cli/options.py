"""Shared command-line options: every option naming a service also reads an environment
variable (CONTRACT section 3), shown in `--help`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def kafka_security_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The Kafka TLS and SASL options (CONTRACT section 7), each with its environment variable,
    collapsed into one `kafka_security: KafkaSecurity | None` argument of the command (None:
    PLAINTEXT; the password read from its file once, here at the entry point)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(f"kafka_{name}") for name in _SECURITY_FIELDS}
        if all(value is None for value in values.values()):
            # Nothing set: PLAINTEXT, without importing pydantic-settings (commands start fast).
            kwargs["kafka_security"] = None
        else:
            from consumers.kafka.security import KafkaSecurity

            kwargs["kafka_security"] = KafkaSecurity.load(**values)
        return function(*args, **kwargs)

    for option in reversed(_SECURITY_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


_SECURITY_FIELDS = (
    "security_protocol",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password_file",
)
_FILE = click.Path(dir_okay=False, path_type=Path)
_SECURITY_OPTIONS = (
    click.option(
        "--kafka-security-protocol",
        envvar="CRISISWATCH_KAFKA_SECURITY_PROTOCOL",
        show_envvar=True,
        type=click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], case_sensitive=False),
        default=None,
        help="How to talk to the brokers  [default: PLAINTEXT].",
    ),
    click.option(
        "--kafka-ssl-cafile",
        envvar="CRISISWATCH_KAFKA_SSL_CAFILE",
        show_envvar=True,
        type=_FILE,
        default=None,
        metavar="PEM",
        help="CA bundle that verifies the brokers (default: the system's); hostname checked.",
    ),
    click.option(
        "--kafka-ssl-certfile",
        envvar="CRISISWATCH_KAFKA_SSL_CERTFILE",
        show_envvar=True,
        type=_FILE,
        default=None,
        metavar="PEM",
        help="Client certificate (mutual TLS; with --kafka-ssl-keyfile).",
    ),
    click.option(
        "--kafka-ssl-keyfile",
        envvar="CRISISWATCH_KAFKA_SSL_KEYFILE",
        show_envvar=True,
        type=_FILE,
        default=None,
        metavar="PEM",
        help="Private key of the client certificate (unencrypted PEM).",
    ),
    click.option(
        "--kafka-sasl-mechanism",
        envvar="CRISISWATCH_KAFKA_SASL_MECHANISM",
        show_envvar=True,
        type=click.Choice(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], case_sensitive=False),
        default=None,
        help="SASL mechanism (with SASL_SSL or SASL_PLAINTEXT).",
    ),
    click.option(
        "--kafka-sasl-username",
        envvar="CRISISWATCH_KAFKA_SASL_USERNAME",
        show_envvar=True,
        default=None,
        metavar="USER",
        help="SASL username.",
    ),
    click.option(
        "--kafka-sasl-password-file",
        envvar="CRISISWATCH_KAFKA_SASL_PASSWORD_FILE",
        show_envvar=True,
        type=_FILE,
        default=None,
        metavar="FILE",
        help="File holding the SASL password (the password is never an option or variable).",
    ),
)

alertmanager_cafile_option = click.option(
    "--alertmanager-cafile",
    envvar="CRISISWATCH_ALERTMANAGER_CAFILE",
    show_envvar=True,
    type=_FILE,
    default=None,
    metavar="PEM",
    help="CA bundle that verifies an https:// Alertmanager (default: the system's).",
)
alertmanager_username_option = click.option(
    "--alertmanager-username",
    envvar="CRISISWATCH_ALERTMANAGER_USERNAME",
    show_envvar=True,
    default=None,
    metavar="USER",
    help="Basic-auth user for Alertmanager (with --alertmanager-password-file).",
)
alertmanager_password_file_option = click.option(
    "--alertmanager-password-file",
    envvar="CRISISWATCH_ALERTMANAGER_PASSWORD_FILE",
    show_envvar=True,
    type=_FILE,
    default=None,
    metavar="FILE",
    help="File holding the Alertmanager basic-auth password.",
)
