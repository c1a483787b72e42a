"""Operations centre (live): what is at risk right now, where, and which referrals.

Its uid is `crisiswatch`, the dashboard that alerts link to (Prometheus' external label
`dashboard_url` and the worker's `--dashboard-url` end in `/d/crisiswatch`, and add
`?var-region=<region>`), so a page opens this board filtered to the paged region.
"""

from __future__ import annotations

from typing import Final

from dashboards.model import (
    Dashboard,
    Grid,
    Panel,
    PromQuery,
    SqlQuery,
    count_steps,
    target_steps,
)
from dashboards.policy import SPEC
from dashboards.scope import (
    PLACE,
    PLACE_VARIABLES,
    SQL_PLACE,
    TARGET,
    met_ratio_of_selection,
    region_ratio,
)
from streams.engine.event import REABLEMENT_2D, UCR_2H
from streams.engine.outcome import AT_RISK, BREACHED
from streams.names import OPEN_CLOCKS

UID: Final = "crisiswatch"

AT_RISK_SQL: Final = f"""SELECT
  referral_id AS referral,
  state,
  pathway,
  minutes_waiting,
  deadline,
  region,
  icb,
  provider,
  clock_start
FROM live_open_clocks
WHERE state IN ('{AT_RISK}', '{BREACHED}')
  AND {SQL_PLACE}
ORDER BY state = '{BREACHED}', deadline NULLS LAST, minutes_waiting DESC
LIMIT 1000"""


def _backlog_threshold(pathway: str, state: str) -> int:
    """The region-level backlog alert's threshold: the stat turns red where the page fires."""
    for alert in SPEC.backlog:
        if alert.pathway == pathway and alert.state == state:
            return alert.above
    raise LookupError(f"no backlog alert for {pathway} {state}")


def _open(pathway: str, state: str) -> str:
    return f'sum({OPEN_CLOCKS}{{pathway="{pathway}", state="{state}", {PLACE}}}) or vector(0)'


def dashboard() -> Dashboard:
    grid = Grid()
    counts = [
        Panel(
            f"{name}: {label} now",
            "stat",
            (PromQuery(_open(pathway, state), legend=label, instant=True),),
            grid.at(4, 5),
            description=(
                f"Open {name} clocks {label} in the selected places. Amber from the first; red "
                "at the region-level backlog alert's threshold."
            ),
            steps=count_steps(1, _backlog_threshold(pathway, state)),
        )
        for pathway, name in ((UCR_2H, "2-hour"), (REABLEMENT_2D, "2-day"))
        for state, label in ((AT_RISK, "at risk"), (BREACHED, "breached"))
    ]
    met = [
        Panel(
            f"2-hour % met, last {label}",
            "stat",
            (PromQuery(met_ratio_of_selection(window), legend="% met", instant=True),),
            grid.at(4, 5),
            description=(
                f"Share of type-05 (2-hour) clocks stopped in the last {label} that met the "
                f"standard, in the selected places; red below the {TARGET:.0%} target."
            ),
            unit="percentunit",
            decimals=1,
            steps=target_steps(TARGET),
        )
        for window, label in (("1d", "24 hours"), ("7d", "7 days"))
    ]
    by_state = Panel(
        "Open clocks by state",
        "timeseries",
        (
            PromQuery(
                f"sum by (pathway, state) ({OPEN_CLOCKS}{{{PLACE}}})",
                legend="{{pathway}} {{state}}",
            ),
        ),
        grid.at(12, 9),
        description="Open clocks in the selected places by pathway and live state.",
        stack=True,
    )
    trend = Panel(
        "2-hour % met by region (rolling 24 hours) vs 70%",
        "timeseries",
        (PromQuery(region_ratio("1d"), legend="{{region}}"),),
        grid.at(12, 9),
        description="Recording rule region:crisiswatch_clocks_met:ratio_rate1d; the line is "
        "the 70% target.",
        unit="percentunit",
        min=0,
        max=1,
        steps=target_steps(TARGET),
        threshold_line=True,
    )
    table = Panel(
        "At-risk and breached referrals",
        "table",
        (
            SqlQuery(
                AT_RISK_SQL,
                (
                    "referral",
                    "state",
                    "pathway",
                    "minutes_waiting",
                    "deadline",
                    "region",
                    "icb",
                    "provider",
                    "clock_start",
                ),
            ),
        ),
        grid.at(24, 14),
        description=(
            "Open clocks at risk (soonest deadline first) then provisionally breached, from "
            "PostgreSQL (view live_open_clocks, read-only role). Minutes waiting are measured "
            "against now; the deadline is when the clock breaches."
        ),
        options=(("sortBy", []),),
    )
    return Dashboard(
        uid=UID,
        title="crisiswatch: operations centre",
        description="Live open clocks, at-risk and breached referrals, % met vs 70%.",
        panels=(*counts, *met, by_state, trend, table),
        variables=PLACE_VARIABLES,
        time_from="now-6h",
        refresh="30s",
    )
