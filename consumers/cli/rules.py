"""`crisiswatch rules build`: write the generated Prometheus rules (`dashboards.alert_rules`),
or with `--kubernetes` the same rule groups as a PrometheusRule object (`dashboards.k8s_rules`).

CI's golden tests fail when a committed file differs from what the table generates.
"""

from __future__ import annotations

from pathlib import Path

import click

from streams.atomic import write_text_atomic
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
    "--kubernetes",
    is_flag=True,
    help="Write a Prometheus Operator PrometheusRule manifest instead "
    "(deploy/kubernetes/prometheusrule.yaml).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 if the --out file differs from what would be written.",
)
def build(out: Path, kubernetes: bool, check: bool) -> None:
    """Write the rules file (deterministic: regenerating an unchanged table changes nothing)."""
    from dashboards import alert_rules, k8s_rules

    text = k8s_rules.render() if kubernetes else alert_rules.render()
    if str(out) == "-":
        click.echo(text, nl=False)
        return
    if check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            flag = " --kubernetes" if kubernetes else ""
            click.echo(
                f"{out} is out of date: run `crisiswatch rules build{flag} --out {out}`", err=True
            )
            raise click.exceptions.Exit(1)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text)
    except OSError as exc:
        raise InputError(f"--out: cannot write {out}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {out}", err=True)
