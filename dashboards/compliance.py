"""Regional compliance: % met by region, ICB and provider over weeks and months vs 70%; the
wait distribution; volumes; exclusions; the 2-day reablement standard.

Rolling % met comes from the recording rules (`icb:` and `region:` levels, 7 and 28 days);
per provider and per calendar week or month it comes from PostgreSQL's clocks table (providers
are not a Prometheus label: too many values for the series budget).
"""

from __future__ import annotations

from typing import Final

from dashboards.model import Dashboard, Grid, Panel, PromQuery, SqlQuery, target_steps
from dashboards.scope import (
    PLACE,
    PLACE_VARIABLES,
    REGIONS,
    SQL_PLACE,
    TARGET,
    icb_ratio,
    met_ratio_of_selection,
    region_ratio,
)
from streams.engine.event import REABLEMENT_2D, UCR_2H
from streams.engine.outcome import EXCLUDED, MET, NOT_MET
from streams.names import CLOCK_WAIT, CLOCKS_STOPPED, OPEN_CLOCKS, REFERRALS_RECEIVED

UID: Final = "crisiswatch-compliance"

_PROVIDER_COLUMNS: Final = ("period", "region", "icb", "provider", "met", "stopped", "percent_met")


def provider_sql(period: str) -> str:
    """Type-05 clocks stopped in the time range, by calendar `period` (week, month) in London
    time and provider; % met from counts (never averaged)."""
    return f"""SELECT
  date_trunc('{period}', clock_stop AT TIME ZONE 'Europe/London')::date AS period,
  region,
  icb,
  provider,
  count(*) FILTER (WHERE state = '{MET}') AS met,
  count(*) AS stopped,
  round(100.0 * count(*) FILTER (WHERE state = '{MET}') / count(*), 1) AS percent_met
FROM clocks
WHERE clock_type = '05'
  AND state IN ('{MET}', '{NOT_MET}')
  AND $__timeFilter(clock_stop)
  AND {SQL_PLACE}
GROUP BY 1, 2, 3, 4
ORDER BY 1 DESC, percent_met, provider"""


EXCLUSIONS_SQL: Final = f"""SELECT
  coalesce(exclusion_reason, 'unspecified') AS exclusion_reason,
  pathway,
  count(*) AS referrals
FROM clocks
WHERE state = '{EXCLUDED}'
  AND $__timeFilter(referral_received_at)
  AND {SQL_PLACE}
GROUP BY 1, 2
ORDER BY referrals DESC, exclusion_reason"""

REABLEMENT_SQL: Final = f"""SELECT
  region,
  icb,
  count(*) FILTER (WHERE state = '{MET}') AS met,
  count(*) AS stopped,
  round(100.0 * count(*) FILTER (WHERE state = '{MET}') / count(*), 1) AS percent_met,
  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_seconds) / 3600)::numeric, 1)
    AS median_wait_hours
FROM clocks
WHERE clock_type = '06'
  AND state IN ('{MET}', '{NOT_MET}')
  AND $__timeFilter(clock_stop)
  AND {SQL_PLACE}
GROUP BY 1, 2
ORDER BY percent_met, region, icb"""


def _quantile(q: float, pathway: str) -> PromQuery:
    bucket = f'{CLOCK_WAIT}_bucket{{pathway="{pathway}", {REGIONS}}}'
    return PromQuery(
        f"histogram_quantile({q}, sum by (le) (rate({bucket}[$__rate_interval])))",
        legend=f"{q:.0%} waited at most",
    )


def dashboard() -> Dashboard:
    grid = Grid()
    stats = [
        Panel(
            f"2-hour % met, last {label}",
            "stat",
            (PromQuery(met_ratio_of_selection(window), legend="% met", instant=True),),
            grid.at(6, 5),
            description=f"Selected places; red below the {TARGET:.0%} target.",
            unit="percentunit",
            decimals=1,
            steps=target_steps(TARGET),
        )
        for window, label in (("7d", "7 days"), ("28d", "28 days"))
    ]
    received = Panel(
        "Referrals received in the time range",
        "stat",
        (
            PromQuery(
                f"sum by (pathway) (increase({REFERRALS_RECEIVED}{{{PLACE}}}[$__range]))",
                legend="{{pathway}}",
                instant=True,
            ),
        ),
        grid.at(6, 5),
        decimals=0,
    )
    reablement_met = Panel(
        "2-day reablement % met in the time range",
        "stat",
        (
            PromQuery(
                f'sum(increase({CLOCKS_STOPPED}{{pathway="{REABLEMENT_2D}", result="{MET}", '
                f"{PLACE}}}[$__range]))\n/\n"
                f'sum(increase({CLOCKS_STOPPED}{{pathway="{REABLEMENT_2D}", {PLACE}}}[$__range]))',
                legend="% met",
                instant=True,
            ),
        ),
        grid.at(6, 5),
        description="Type-06 clocks stopped in the time range that met the 2-day standard.",
        unit="percentunit",
        decimals=1,
        steps=target_steps(TARGET),
    )
    trends = [
        Panel(
            "2-hour % met by ICB, rolling 7 days",
            "timeseries",
            (PromQuery(icb_ratio("7d"), legend="{{icb}}"),),
            grid.at(12, 9),
            description="Recording rule icb:crisiswatch_clocks_met:ratio_rate7d; line: 70%.",
            unit="percentunit",
            min=0,
            max=1,
            steps=target_steps(TARGET),
            threshold_line=True,
        ),
        Panel(
            "2-hour % met by region, rolling 28 days",
            "timeseries",
            (PromQuery(region_ratio("28d"), legend="{{region}}"),),
            grid.at(12, 9),
            description="Recording rule region:crisiswatch_clocks_met:ratio_rate28d; line: 70%.",
            unit="percentunit",
            min=0,
            max=1,
            steps=target_steps(TARGET),
            threshold_line=True,
        ),
        Panel(
            "2-hour % met by ICB, last 28 days",
            "bargauge",
            (PromQuery(icb_ratio("28d"), legend="{{icb}}", instant=True),),
            grid.at(24, 10),
            unit="percentunit",
            min=0,
            max=1,
            decimals=1,
            steps=target_steps(TARGET),
        ),
    ]
    providers = [
        Panel(
            f"2-hour % met by provider and {period}",
            "table",
            (SqlQuery(provider_sql(period), _PROVIDER_COLUMNS),),
            grid.at(12, 12),
            description=(
                f"Type-05 clocks stopped in the time range, by calendar {period} (London time) "
                "and provider, from PostgreSQL."
            ),
        )
        for period in ("week", "month")
    ]
    waits = [
        Panel(
            "2-hour wait of stopped clocks (percentiles)",
            "timeseries",
            tuple(_quantile(q, UCR_2H) for q in (0.5, 0.9, 0.95)),
            grid.at(12, 9),
            description="histogram_quantile over crisiswatch_clock_wait_seconds; buckets "
            "resolve 30, 60, 90, 105, 120, 150 and 180 minutes.",
            unit="s",
        ),
        Panel(
            "2-hour waits by band in the time range",
            "bargauge",
            (
                PromQuery(
                    f"sum by (le) (increase({CLOCK_WAIT}_bucket"
                    f'{{pathway="{UCR_2H}", {REGIONS}}}[$__range]))',
                    legend="<= {{le}} s",
                    instant=True,
                    format="table",
                ),
            ),
            grid.at(12, 9),
            description="Stopped clocks that waited at most each bucket bound (cumulative).",
            decimals=0,
        ),
    ]
    volumes = Panel(
        "Referrals received per hour",
        "timeseries",
        (
            PromQuery(
                f"sum by (pathway) (rate({REFERRALS_RECEIVED}{{{PLACE}}}[$__rate_interval]))"
                " * 3600",
                legend="{{pathway}}",
            ),
        ),
        grid.at(12, 9),
        decimals=0,
    )
    exclusions = Panel(
        "Exclusions by reason",
        "table",
        (SqlQuery(EXCLUSIONS_SQL, ("exclusion_reason", "pathway", "referrals")),),
        grid.at(12, 9),
        description="Referrals received in the time range whose clock is excluded from the "
        "standard, by reason, from PostgreSQL.",
    )
    reablement = [
        Panel(
            "2-day reablement open clocks by state",
            "timeseries",
            (
                PromQuery(
                    f'sum by (state) ({OPEN_CLOCKS}{{pathway="{REABLEMENT_2D}", {PLACE}}})',
                    legend="{{state}}",
                ),
            ),
            grid.at(12, 9),
            stack=True,
        ),
        Panel(
            "2-day reablement % met by ICB",
            "table",
            (
                SqlQuery(
                    REABLEMENT_SQL,
                    ("region", "icb", "met", "stopped", "percent_met", "median_wait_hours"),
                ),
            ),
            grid.at(12, 9),
            description="Type-06 clocks stopped in the time range, from PostgreSQL.",
        ),
    ]
    return Dashboard(
        uid=UID,
        title="crisiswatch: regional compliance",
        description="% met vs 70% by region, ICB and provider; waits, volumes, exclusions, "
        "2-day reablement.",
        panels=(
            *stats,
            received,
            reablement_met,
            *trends,
            *providers,
            *waits,
            volumes,
            exclusions,
            *reablement,
        ),
        variables=PLACE_VARIABLES,
        time_from="now-30d",
        refresh="5m",
    )
