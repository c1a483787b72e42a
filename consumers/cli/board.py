"""`crisiswatch board`: serve the operations board (CONTRACT section 6).

Exit codes: 2 for bad usage (`--auth none` on an address other than loopback, a bad
setting), 1 when the address cannot be listened on. A database that cannot be reached is not
fatal: the board starts, says "data unavailable", and recovers when PostgreSQL answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consumers.board.auth import AuthMode, is_loopback
from consumers.cli.options import database_option
from streams.errors import ConfigurationError

if TYPE_CHECKING:
    from streams.settings import RulesSettings


@click.command()
@database_option
@click.option(
    "--host", envvar="CRISISWATCH_BOARD_HOST", show_envvar=True, default="127.0.0.1",
    show_default=True, metavar="ADDRESS",
    help="Address to listen on (beyond loopback only with --auth proxy).",
)  # fmt: skip
@click.option(
    "--port", envvar="CRISISWATCH_BOARD_PORT", show_envvar=True, type=click.IntRange(0, 65535),
    default=8080, show_default=True, help="Port to listen on (0: any free port; printed).",
)  # fmt: skip
@click.option(
    "--auth", envvar="CRISISWATCH_BOARD_AUTH", show_envvar=True,
    type=click.Choice([m.value for m in AuthMode]), default=AuthMode.NONE.value,
    show_default=True,
    help="none: no sign-in (loopback only); proxy: trust X-Forwarded-User and "
    "X-Forwarded-Groups from an authenticating proxy such as oauth2-proxy.",
)  # fmt: skip
@click.option(
    "--assets", envvar="CRISISWATCH_BOARD_ASSETS", show_envvar=True, default=None,
    type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
    help="nhsuk-frontend's dist/nhsuk folder (default: the one npm ci installs).",
)  # fmt: skip
def board(database_url: str, host: str, port: int, auth: str, assets: Path | None) -> None:
    """Serve the live operations-centre board (HTML, JSON APIs, Server-Sent Events).

    Reads PostgreSQL only; the worker need not run in this process. With --auth proxy,
    group crisiswatch-england sees everything and crisiswatch-region-<CODE> one region.
    """
    mode = AuthMode(auth)
    if mode is AuthMode.NONE and not is_loopback(host):
        raise ConfigurationError(
            f"--auth none is refused on {host}: listen on 127.0.0.1, or use --auth proxy "
            "behind an authenticating proxy"
        )
    # Imported here: `crisiswatch --help` and the other commands need no web stack.
    import asyncio
    import logging

    from pydantic import ValidationError

    from consumers.board.app import BoardSettings, find_assets
    from consumers.board.server import serve

    try:
        rules = _rules_settings().rules()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(f"CRISISWATCH_{first['loc'][0]!s}: {first['msg']}") from exc
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    settings = BoardSettings(database_url, mode, rules, find_assets(assets))
    asyncio.run(serve(settings, host, port, lambda url: click.echo(f"board: {url}", err=False)))


def _rules_settings() -> RulesSettings:
    from streams.settings import RulesSettings

    settings: Any = RulesSettings
    return settings()  # type: ignore[no-any-return]
