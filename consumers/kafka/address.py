"""Kafka bootstrap servers as given on the command line (`--kafka` / CRISISWATCH_KAFKA).

One rule for every command: a comma-separated list of HOST:PORT, the port 1-65535. Checked
before any client starts, so a typo is one line and exit 2, not a client retrying forever.
"""

from __future__ import annotations

from streams.errors import ConfigurationError

__all__ = ["bootstrap_servers"]

OPTION = "--kafka / CRISISWATCH_KAFKA"


def bootstrap_servers(value: str) -> str:
    """`value` with blanks removed around each server; `ConfigurationError` unless every
    server is HOST:PORT (an IPv6 host in brackets: `[::1]:9092`)."""
    servers = [part.strip() for part in value.split(",")]
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"{OPTION}: {server!r} is not HOST:PORT")
    return ",".join(servers)
