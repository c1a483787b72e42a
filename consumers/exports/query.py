"""The export's SQL: one period's figures at every level, in one REPEATABLE READ snapshot.

Every level comes from ONE statement: the clocks that matter to the period (received, stopped
or open at its end, or with a contact in it) are read once, joined to the period's contacts,
and aggregated with `GROUP BY GROUPING SETS` into England, region, ICB, provider, region x ICB,
region x provider and region x ICB x provider: each level is counted from the records, never
averaged from lower levels, and England includes region `unknown`. A second statement counts
the 12-period trend (one pass over the clocks stopped in the trailing window, bucketed by the
period bounds computed here with zoneinfo). Both run in one REPEATABLE READ, READ ONLY
transaction, so they see the same data while the worker keeps writing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from consumers.exports.figures import (
    ENGLAND,
    TREND_PERIODS,
    DetailRow,
    Figures,
    OpenRow,
    PeriodData,
)

if TYPE_CHECKING:
    import psycopg

    from streams.period import Period

__all__ = ["fetch"]


# The clocks that matter to [start, end): received in it, stopped in it, open at its end, or
# with a contact in it. Conditions are evaluated once per clock (`received`, `stopped`, ...)
# and the aggregate FILTERs combine them with the clock type.
_SUMMARY: Final = """
WITH contact AS (
    SELECT referral_id,
           count(DISTINCT document -> 'data' ->> 'contact_id') AS contacts
    FROM events
    WHERE type = 'referral.contact'
      AND event_time >= %(start)s AND event_time < %(end)s
    GROUP BY referral_id
),
clock AS (
    SELECT c.clock_type,
           coalesce(c.region, 'unknown') AS region,
           coalesce(c.icb, 'unknown') AS icb,
           coalesce(c.provider, 'unknown') AS provider,
           c.wait_seconds,
           c.state = 'met' AS met,
           coalesce(c.referral_received_at >= %(start)s
                    AND c.referral_received_at < %(end)s, false) AS received,
           coalesce(c.state IN ('met', 'not_met')
                    AND c.clock_stop >= %(start)s AND c.clock_stop < %(end)s, false) AS stopped,
           coalesce(c.state <> 'invalid' AND c.clock_start < %(end)s
                    AND (c.clock_stop IS NULL OR c.clock_stop >= %(end)s), false) AS open_at_end,
           coalesce(c.breach_at <= %(end)s, false) AS past_breach,
           coalesce(k.contacts, 0) AS contacts
    FROM clocks AS c
    LEFT JOIN contact AS k ON k.referral_id = c.referral_id
    WHERE c.clock_type IS NOT NULL
      AND (k.referral_id IS NOT NULL
           OR (c.referral_received_at < %(end)s
               AND (c.referral_received_at >= %(start)s
                    OR c.clock_stop IS NULL
                    OR c.clock_stop >= %(start)s)))
)
SELECT GROUPING(region, icb, provider) AS grouping, region, icb, provider,
       count(*) FILTER (WHERE clock_type = '05' AND received),
       count(*) FILTER (WHERE clock_type = '05' AND stopped),
       count(*) FILTER (WHERE clock_type = '05' AND stopped AND met),
       count(*) FILTER (WHERE clock_type = '07' AND received),
       count(*) FILTER (WHERE clock_type = '05' AND open_at_end),
       count(*) FILTER (WHERE clock_type = '05' AND open_at_end AND past_breach),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY wait_seconds)
           FILTER (WHERE clock_type = '05' AND stopped),
       percentile_disc(0.9) WITHIN GROUP (ORDER BY wait_seconds)
           FILTER (WHERE clock_type = '05' AND stopped),
       count(*) FILTER (WHERE clock_type = '06' AND received),
       count(*) FILTER (WHERE clock_type = '06' AND stopped),
       count(*) FILTER (WHERE clock_type = '06' AND stopped AND met),
       count(*) FILTER (WHERE clock_type = '06' AND open_at_end),
       count(*) FILTER (WHERE clock_type = '06' AND open_at_end AND past_breach),
       coalesce(sum(contacts) FILTER (WHERE clock_type IN ('05', '07')), 0)
FROM clock
GROUP BY GROUPING SETS (
    (), (region), (icb), (provider), (region, icb), (region, provider), (region, icb, provider)
)
"""

# GROUPING(region, icb, provider): a bit set for each column NOT grouped (region = 4).
_ENGLAND_SET: Final = 0b111
_REGION_SET: Final = 0b011
_ICB_SET: Final = 0b101
_PROVIDER_SET: Final = 0b110
_REGION_ICB_SET: Final = 0b001
_REGION_PROVIDER_SET: Final = 0b010
_ORGANISATION_SET: Final = 0b000

# Type-05 clocks stopped in each trend period: bucket i (1-based) is [bounds[i-1], bounds[i]).
_TREND: Final = """
SELECT GROUPING(region) AS grouping, region, bucket,
       count(*), count(*) FILTER (WHERE state = 'met')
FROM (
    SELECT coalesce(region, 'unknown') AS region, state,
           width_bucket(clock_stop, %(bounds)s::timestamptz[]) AS bucket
    FROM clocks
    WHERE clock_type = '05' AND state IN ('met', 'not_met')
      AND clock_stop >= %(first)s AND clock_stop < %(end)s
) AS stopped
GROUP BY GROUPING SETS ((bucket), (bucket, region))
"""

# --detail: the clocks counted in some measure of the period, with their status in it.
_DETAIL: Final = """
SELECT referral_id, clock_type,
       coalesce(region, 'unknown'), coalesce(icb, 'unknown'), coalesce(provider, 'unknown'),
       referral_received_at, clock_start, clock_stop, wait_seconds,
       CASE
           WHEN state = 'invalid' THEN 'invalid'
           WHEN clock_type = '07' THEN 'excluded'
           WHEN state IN ('met', 'not_met')
                AND clock_stop >= %(start)s AND clock_stop < %(end)s THEN state
           WHEN clock_start < %(end)s AND (clock_stop IS NULL OR clock_stop >= %(end)s)
               THEN CASE WHEN breach_at <= %(end)s THEN 'breached' ELSE 'open' END
           ELSE 'received'
       END
FROM clocks
WHERE clock_type IS NOT NULL
  AND ((referral_received_at >= %(start)s AND referral_received_at < %(end)s)
       OR (clock_type <> '07' AND state <> 'invalid' AND (
               (clock_stop >= %(start)s AND clock_stop < %(end)s)
               OR (clock_start < %(end)s AND (clock_stop IS NULL OR clock_stop >= %(end)s)))))
ORDER BY referral_id
"""


def fetch(conn: psycopg.Connection[tuple[Any, ...]], period: Period, *, detail: bool) -> PeriodData:
    """Read one period's figures (and the trend, and the detail if asked) in one snapshot."""
    conn.isolation_level = _repeatable_read()
    conn.read_only = True
    data = PeriodData(period)
    trailing = period.trailing(TREND_PERIODS)
    data.trend_labels = [p.label for p in trailing]
    bounds = [_utc(p.start) for p in trailing] + [_utc(period.end)]
    params = {"start": _utc(period.start), "end": _utc(period.end)}
    with conn.transaction():
        # JIT compiling these few-row aggregates costs more than running them (figures in
        # docs/benchmarks.md); the contacts sort fits in memory at 64 MB.
        conn.execute("SET LOCAL jit = off")
        conn.execute("SET LOCAL work_mem = '64MB'")
        for record in conn.execute(_SUMMARY, params):
            _add_summary(data, record)
        trend: dict[str, list[tuple[int, int]]] = {}
        for grouping, region, bucket, stopped, met in conn.execute(
            _TREND, {"bounds": bounds, "first": bounds[0], "end": bounds[-1]}
        ):
            area = ENGLAND if grouping else region
            points = trend.setdefault(area, [(0, 0)] * len(trailing))
            points[int(bucket) - 1] = (int(stopped), int(met))
        data.trend = trend
        if detail:
            data.detail = [
                DetailRow(
                    rid, clock_type, region, icb, provider,
                    _epoch(received), _epoch(start), _epoch(stop),
                    None if wait is None else int(wait), status,
                )
                for rid, clock_type, region, icb, provider, received, start, stop, wait, status
                in conn.execute(_DETAIL, params)
            ]  # fmt: skip
    return data


def _add_summary(data: PeriodData, record: tuple[Any, ...]) -> None:
    grouping, region, icb, provider = record[:4]
    counts: list[Any] = [None if value is None else int(value) for value in record[4:]]
    figures = Figures(*counts)  # column order = field order
    if grouping == _ENGLAND_SET:
        data.england = figures
    elif grouping == _REGION_SET:
        data.regions[region] = figures
    elif grouping == _ICB_SET:
        data.icbs[icb] = figures
    elif grouping == _PROVIDER_SET:
        data.providers[provider] = figures
    elif grouping == _REGION_ICB_SET:
        data.region_icbs.setdefault(region, {})[icb] = figures
    elif grouping == _REGION_PROVIDER_SET:
        data.region_providers.setdefault(region, {})[provider] = figures
    elif grouping == _ORGANISATION_SET:
        open_row = OpenRow(
            region, icb, provider,
            figures.open_at_end, figures.breached_at_end,
            figures.reablement_open_at_end, figures.reablement_breached_at_end,
        )  # fmt: skip
        if open_row.open_2h or open_row.open_2d:
            data.open_rows.append(open_row)


def _repeatable_read() -> Any:
    from psycopg import IsolationLevel

    return IsolationLevel.REPEATABLE_READ


def _utc(instant: int) -> datetime:
    return datetime.fromtimestamp(instant, UTC)


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())
