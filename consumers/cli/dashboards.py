"""`crisiswatch dashboards build | push`: write the generated dashboards, or upload them.

Registered on the `crisiswatch` group by `consumers.cli.main` (`cli.add_command(dashboards)`).
"""

from __future__ import annotations

from pathlib import Path

import click

from streams.errors import ConfigurationError, InputError

__all__ = ["dashboards"]

DEFAULT_OUT = Path("deploy/grafana/dashboards")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def dashboards() -> None:
    """Grafana dashboards generated from crisiswatch's metric names."""


@dashboards.command("build")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory of the dashboard JSON files (one <uid>.json each).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 if the files in --out differ from what would be written.",
)
def build(out: Path, check: bool) -> None:
    """Write the dashboards (deterministic: rebuilding unchanged code changes nothing)."""
    from dashboards import build as builder

    if check:
        stale = [
            name
            for name, text in builder.files().items()
            if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text
        ]
        if stale:
            click.echo(
                f"{', '.join(stale)} in {out} out of date: run "
                f"`crisiswatch dashboards build --out {out}`",
                err=True,
            )
            # SystemExit, not click's Exit: with standalone_mode=False (consumers.cli.main.main)
            # click returns Exit's code instead of exiting, and the caller exits 0.
            raise SystemExit(1)
        return
    try:
        written = builder.write(out)
    except OSError as exc:
        raise InputError(f"--out: cannot write {out}: {exc.strerror or exc}") from exc
    for path in written:
        click.echo(f"wrote {path}", err=True)


@dashboards.command("push")
@click.option(
    "--grafana-url", envvar="CRISISWATCH_GRAFANA_URL", show_envvar=True, required=True,
    metavar="URL", help="Grafana's base URL, e.g. http://grafana:3000.",
)  # fmt: skip
@click.option(
    "--token", envvar="CRISISWATCH_GRAFANA_TOKEN", show_envvar=True, default=None,
    metavar="TOKEN", help="Service account token (Editor). Prefer the environment or a file.",
)  # fmt: skip
@click.option(
    "--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="File holding the token (first line); wins over --token.",
)  # fmt: skip
@click.option("--folder", default="crisiswatch", show_default=True, help="Folder title.")
def push(grafana_url: str, token: str | None, token_file: Path | None, folder: str) -> None:
    """Upload the dashboards into a folder (created if missing), overwriting: idempotent."""
    from dashboards import build as builder
    from dashboards import grafana

    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(
                f"--token-file: cannot read {token_file}: {exc.strerror or exc}"
            ) from exc
        token = lines[0].strip() if lines else ""
        if not token:
            raise ConfigurationError(f"--token-file: {token_file} is empty")
    if not token:
        raise ConfigurationError(
            "a Grafana token is required: CRISISWATCH_GRAFANA_TOKEN, --token or --token-file"
        )
    result = grafana.push(grafana_url, token, folder, [d.to_dict() for d in builder.dashboards()])
    verb = "created" if result.folder_created else "found"
    click.echo(
        f"{verb} folder {result.folder_uid}; uploaded {', '.join(result.uploaded)} "
        f"to {grafana_url.rstrip('/')}",
        err=True,
    )
