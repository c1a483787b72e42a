"""The board's SQL: every read takes the viewer and filters by its regions in the query.

Counts are over type-05 (2-hour) clocks (CONTRACT section 6): live states at `now` from the
clock start and the engine's thresholds (`live.ucr_offsets`); "today" is the local day of
`now` under the rules. The worklist pre-filters open 05/06 clocks in SQL with bounds from the
same rules and judges each row in Python with the engine (`live.judge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from consumers.board.auth import Viewer
from consumers.board.database import Connection, Database
from consumers.board.live import (
    Area,
    Hour,
    Item,
    judge,
    local_hour,
    reablement_lookback,
    today,
    ucr_offsets,
)
from streams.engine import Rules
from streams.engine.outcome import CLOCK_REABLEMENT, CLOCK_UCR
from streams.geography import regions

ENGLAND: Final = "england"
UNKNOWN_REGION: Final = "unknown"

# `coalesce(region, 'unknown')`: a referral with no known region counts under "unknown"
# (CONTRACT section 1); only England-wide viewers see those.
_SCOPE: Final = "(%(everything)s OR coalesce(region, 'unknown') = ANY(%(regions)s::text[]))"

# Two parts, so each can use its index: open clocks (the partial index on is_open) and clocks
# stopped today (the index on clock_stop).
_SUMMARY: Final = f"""
SELECT region, sum(waiting)::bigint, sum(at_risk)::bigint, sum(breached)::bigint,
       sum(stopped)::bigint, sum(met)::bigint
FROM (
    SELECT coalesce(region, 'unknown') AS region,
           count(*) FILTER (WHERE clock_start IS NULL OR clock_start > %(risk_from)s) AS waiting,
           count(*) FILTER (WHERE clock_start <= %(risk_from)s
                                  AND clock_start > %(breach_from)s) AS at_risk,
           count(*) FILTER (WHERE clock_start <= %(breach_from)s) AS breached,
           0 AS stopped, 0 AS met
    FROM clocks
    WHERE is_open AND state <> 'pending' AND clock_type = '{CLOCK_UCR}' AND {_SCOPE}
    GROUP BY 1
    UNION ALL
    SELECT coalesce(region, 'unknown'), 0, 0, 0, count(*), count(*) FILTER (WHERE state = 'met')
    FROM clocks
    WHERE clock_stop >= %(midnight)s AND clock_stop <= %(now)s AND clock_type = '{CLOCK_UCR}'
      AND state IN ('met', 'not_met') AND {_SCOPE}
    GROUP BY 1
) AS parts
GROUP BY 1
"""

_WORKLIST: Final = f"""
SELECT referral_id, pathway, clock_type, coalesce(region, 'unknown'), coalesce(icb, 'unknown'),
       coalesce(provider, 'unknown'), extract(epoch FROM clock_start)::bigint
FROM clocks
WHERE is_open AND state <> 'pending' AND clock_start IS NOT NULL
  AND ((clock_type = '{CLOCK_UCR}' AND clock_start <= %(risk_from)s)
       OR (clock_type = '{CLOCK_REABLEMENT}' AND clock_start <= %(reablement_from)s))
  AND {_SCOPE}
  AND (%(region)s::text IS NULL OR coalesce(region, 'unknown') = %(region)s::text)
"""

_TREND_RECEIVED: Final = f"""
SELECT floor(extract(epoch FROM referral_received_at) / 3600)::bigint * 3600, count(*)
FROM clocks
WHERE clock_type = '{CLOCK_UCR}' AND referral_received_at >= %(midnight)s
  AND referral_received_at <= %(now)s AND {_SCOPE}
GROUP BY 1
"""

_TREND_STOPPED: Final = f"""
SELECT floor(extract(epoch FROM clock_stop) / 3600)::bigint * 3600, count(*),
       count(*) FILTER (WHERE state = 'met')
FROM clocks
WHERE clock_type = '{CLOCK_UCR}' AND state IN ('met', 'not_met')
  AND clock_stop >= %(midnight)s AND clock_stop <= %(now)s AND {_SCOPE}
GROUP BY 1
"""

# When the worker last committed a batch (it moves its positions in every batch transaction):
# one row per partition, so this costs nothing however many clocks there are. It says when data
# last arrived, nothing about any region's referrals.
_FRESHNESS: Final = "SELECT max(updated_at) FROM consumer_positions"


@dataclass(frozen=True, slots=True)
class Board:
    """Everything the board shows a viewer, at one instant."""

    as_of: int
    areas: list[Area]
    items: list[Item]
    hours: list[Hour]
    last_update: int | None  # when the worker last committed a batch (None: never)


def region_names() -> dict[str, str]:
    return {code: region.name for code, region in sorted(regions().items())}


def area_codes(viewer: Viewer) -> list[str]:
    """The tiles a viewer sees: England and the 7 regions, or their own regions only."""
    names = region_names()
    if viewer.regions is None:
        return [ENGLAND, *names]
    return [code for code in names if code in viewer.regions]


class Queries:
    """Reads for one board process: the database, the rules (thresholds, time zone)."""

    def __init__(self, database: Database, rules: Rules) -> None:
        self.database = database
        self.rules = rules
        self._ucr = ucr_offsets(rules)
        self._reablement = reablement_lookback(rules)

    def _params(self, viewer: Viewer, now: int, **extra: Any) -> dict[str, Any]:
        midnight, _ = today(self.rules, now)
        return {
            "everything": viewer.regions is None,
            "regions": sorted(viewer.regions or ()),
            "now": _ts(now),
            "midnight": _ts(midnight),
            "risk_from": _ts(now - self._ucr[0]),
            "breach_from": _ts(now - self._ucr[1]),
            "reablement_from": _ts(now - self._reablement),
            **extra,
        }

    async def summary(self, viewer: Viewer, now: int) -> list[Area]:
        async with self.database.connection() as conn:
            return await self._summary(conn, viewer, now)

    async def worklist(self, viewer: Viewer, now: int, region: str | None = None) -> list[Item]:
        async with self.database.connection() as conn:
            return await self._worklist(conn, viewer, now, region)

    async def board(self, viewer: Viewer, now: int, region: str | None = None) -> Board:
        """Everything on the page, on one connection."""
        async with self.database.connection() as conn:
            return Board(
                now,
                await self._summary(conn, viewer, now),
                await self._worklist(conn, viewer, now, region),
                await self._trend(conn, viewer, now),
                await self._last_update(conn),
            )

    async def _summary(self, conn: Connection, viewer: Viewer, now: int) -> list[Area]:
        cursor = await conn.execute(_SUMMARY, self._params(viewer, now))
        return summarise(viewer, await cursor.fetchall())

    async def _worklist(
        self, conn: Connection, viewer: Viewer, now: int, region: str | None
    ) -> list[Item]:
        cursor = await conn.execute(_WORKLIST, self._params(viewer, now, region=region))
        rows = await cursor.fetchall()
        rules = self.rules
        items = [
            item
            for rid, pathway, clock_type, reg, icb, provider, start in rows
            if (item := judge(rules, now, rid, pathway, clock_type, reg, icb, provider, start))
            is not None
        ]
        items.sort(key=lambda item: (item.deadline, item.referral_id))
        return items

    async def _trend(self, conn: Connection, viewer: Viewer, now: int) -> list[Hour]:
        params = self._params(viewer, now)
        cursor = await conn.execute(_TREND_RECEIVED, params)
        received: dict[int, int] = {int(h): int(n) for h, n in await cursor.fetchall()}
        cursor = await conn.execute(_TREND_STOPPED, params)
        stopped = {int(h): (int(n), int(met)) for h, n, met in await cursor.fetchall()}
        midnight, _ = today(self.rules, now)
        hours: list[Hour] = []
        start = midnight - midnight % 3600
        while start <= now:
            # Whole hours of elapsed time from midnight: a DST change day has 23 or 25 rows.
            n, met = stopped.get(start, (0, 0))
            hours.append(Hour(local_hour(self.rules, start), received.get(start, 0), n, met))
            start += 3600
        return hours

    @staticmethod
    async def _last_update(conn: Connection) -> int | None:
        cursor = await conn.execute(_FRESHNESS)
        row = await cursor.fetchone()
        value = row[0] if row is not None else None
        return int(value.timestamp()) if isinstance(value, datetime) else None


def summarise(viewer: Viewer, rows: list[tuple[Any, ...]]) -> list[Area]:
    """Tiles from per-region count rows; England sums every region, unknown included."""
    names = region_names()
    by_region = {str(row[0]): [int(v) for v in row[1:]] for row in rows}
    areas: list[Area] = []
    for code in area_codes(viewer):
        if code == ENGLAND:
            values = [sum(column) for column in zip(*by_region.values(), strict=True)]
            values = values or [0, 0, 0, 0, 0]
            areas.append(Area(ENGLAND, "England", *values))
        else:
            areas.append(Area(code, names[code], *by_region.get(code, [0, 0, 0, 0, 0])))
    return areas


def _ts(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
