"""`crisiswatch rules build`: write the generated Prometheus rules (`consumers.alert_rules`).

Registered on the `crisiswatch` group by `streams.cli` (`cli.add_command(rules)`). The same
file comes from ``python -m consumers.alert_rules --out FILE``; CI's golden test fails when
the committed file differs from what the table generates.
"""

from __future__ import annotations

from pathlib import Path

import click

from streams.errors import InputError

__all__ = ["rules"]


@click.group()
def rules() -> None:
    """Prometheus recording and alerting rules, generated from crisiswatch's rule table."""


@rules.command("build")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default="-",
    help="Rules file to write, e.g. deploy/prometheus/rules/crisiswatch.rules.yml "
    "(default: standard output).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 if the --out file differs from what would be written.",
)
def build(out: Path, check: bool) -> None:
    """Write the rules file (deterministic: regenerating an unchanged table changes nothing)."""
    from consumers import alert_rules

    text = alert_rules.render()
    if str(out) == "-":
        click.echo(text, nl=False)
        return
    if check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            click.echo(f"{out} is out of date: run `crisiswatch rules build --out {out}`", err=True)
            raise click.exceptions.Exit(1)
        return
    try:
        alert_rules.write(out)
    except OSError as exc:
        raise InputError(f"--out: cannot write {out}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {out}", err=True)
