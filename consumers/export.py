"""Weekly and monthly regional exports from PostgreSQL (CONTRACT section 5, issue 6).

    crisiswatch export --week 2026-W43 --out DIR [--region Y56 ...] [--publication] [--detail]
    crisiswatch export --month 2026-10 --out DIR

writes, per region (the regions present, plus the seven NHS England regions always) and for
`england`, `DIR/<period>/<area>/summary.csv` and `DIR/<period>/<area>/report.xlsx`, and a
`DIR/<period>/manifest.json` with the row count and SHA-256 of every file.

Measures (STANDARDS section 5)
------------------------------
Over the `clocks` table, whose type and pathway are a referral's *final* ones (after any
re-triage), for a period [start, end) of local time (`streams.period`):

* `referrals_received`: type-05 clocks whose referral was received in the period;
* `clocks_stopped` / `clocks_met`: type-05 clocks stopped in the period (met / not met) / met;
  `pct_met` = met / stopped, one decimal (half up), empty when nothing stopped;
* `clocks_excluded`: type-07 clocks (not subject to the standard) received in the period;
* `open_at_end` / `breached_at_end`: type-05 clocks started before the end and not stopped
  before it (stopped at or after the end, or not yet), and of those the ones past their breach
  instant at the end (`clocks.breach_at`, the engine's `Clock.thresholds` under the worker's
  rules). Cancelled referrals have no clock and invalid clocks are kept out, as everywhere;
* `median_wait_minutes` / `p90_wait_minutes`: of the type-05 clocks stopped in the period,
  `percentile_disc` (an actual wait, no interpolation), in minutes to one decimal;
* `reablement_*`: the same for type-06 (2-day) clocks;
* `contacts`: distinct contacts (by contact id) dated in the period on type-05 or type-07
  referrals, from the audit log (`events`).

One pass, record-level counts
-----------------------------
Every level comes from ONE statement: the clocks that matter to the period (received, stopped
or open at its end, or with a contact in it) are read once, joined to the period's contacts,
and aggregated with `GROUP BY GROUPING SETS` into England, region, ICB, provider, region x ICB,
region x provider and region x ICB x provider: each level is counted from the records, never
averaged from lower levels, and England includes region `unknown`. A second statement counts
the 12-period trend (one pass over the clocks stopped in the trailing window, bucketed by the
period bounds computed here with zoneinfo). Both run in one REPEATABLE READ, READ ONLY
transaction, so they see the same data while the worker keeps writing.

Publication mode
----------------
`--publication` rounds every count to the nearest 5, with 1-7 shown as 5 (0 stays 0), leaves
out organisations with no data, and computes percentages (and wait percentiles) from the
unrounded records. Without it, every reference region and ICB is listed even when it has no
data (zeros), so a regional pack always has its full set of ICBs.

Files
-----
Exports hold codes and counts only. `--detail` adds a per-clock sheet with the referral id (a
source-system id, already free of NHS numbers: the codec scrubs every field) and nothing about
the patient; it is refused together with `--publication`. The whole period is built in a
hidden staging directory beside its final place (each file itself written to a temporary name
and renamed), then swapped in: readers see the previous complete export or the new complete
one, never a mixture; a re-run replaces the period's directory whole; a failed run leaves the
previous export untouched.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from streams.errors import ConfigurationError, InputError
from streams.options import database_option

if TYPE_CHECKING:
    import psycopg

    from streams.engine import Rules
    from streams.period import Period

__all__ = [
    "COLUMNS",
    "TARGET_PCT",
    "TREND_PERIODS",
    "DetailRow",
    "ExportResult",
    "Figures",
    "OpenRow",
    "PeriodData",
    "Report",
    "Row",
    "TrendPoint",
    "build_reports",
    "export",
    "export_period",
    "fetch",
    "pct",
    "publication_count",
]

#: The national ambition: at least 70% of type-05 clocks met (STANDARDS section 1).
TARGET_PCT: Final = 70
#: Periods in the trend sheet: the exported one and the 11 before it.
TREND_PERIODS: Final = 12
ENGLAND: Final = "england"
UNKNOWN: Final = "unknown"
LEVELS: Final = ("england", "region", "icb", "provider")

#: summary.csv columns: CONTRACT section 5's, then extras.
COLUMNS: Final = (
    "level",
    "code",
    "name",
    "referrals_received",
    "clocks_stopped",
    "clocks_met",
    "pct_met",
    "clocks_excluded",
    "open_at_end",
    "breached_at_end",
    "median_wait_minutes",
    "p90_wait_minutes",
    "reablement_received",
    "reablement_stopped",
    "reablement_met",
    "reablement_pct_met",
    "reablement_open_at_end",
    "reablement_breached_at_end",
    "contacts",
)

T = TypeVar("T")

# Publication rounding (STANDARDS section 5): nearest 5; 1-7 shown as 5.
_ROUNDING_BASE: Final = 5
_SMALL_MAX: Final = 7
_SAFE_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")
# Staging directories left by a crashed run are removed once older than this (seconds).
_STALE_STAGING_S: Final = 3600


# -- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """The record-level counts of one organisation for one period (unrounded)."""

    referrals_received: int = 0
    clocks_stopped: int = 0
    clocks_met: int = 0
    clocks_excluded: int = 0
    open_at_end: int = 0
    breached_at_end: int = 0
    median_wait_seconds: int | None = None
    p90_wait_seconds: int | None = None
    reablement_received: int = 0
    reablement_stopped: int = 0
    reablement_met: int = 0
    reablement_open_at_end: int = 0
    reablement_breached_at_end: int = 0
    contacts: int = 0

    def has_data(self) -> bool:
        """Any count above zero (publication mode omits organisations without)."""
        return any(
            getattr(self, f.name) for f in fields(self) if not f.name.endswith("_wait_seconds")
        )


@dataclass(frozen=True, slots=True)
class Row:
    """One summary row: an organisation at one level."""

    level: str  # one of LEVELS
    code: str
    name: str
    figures: Figures


@dataclass(frozen=True, slots=True)
class OpenRow:
    """Open clocks at the period end for one region x ICB x provider."""

    region: str
    icb: str
    provider: str
    open_2h: int
    breached_2h: int
    open_2d: int
    breached_2d: int


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """Type-05 clocks stopped and met in one period of the trend."""

    label: str
    stopped: int
    met: int


@dataclass(frozen=True, slots=True)
class DetailRow:
    """One clock of the period (--detail): codes, instants and its status; no patient data."""

    referral_id: str
    clock_type: str
    region: str
    icb: str
    provider: str
    received_at: int | None
    clock_start: int | None
    clock_stop: int | None
    wait_seconds: int | None
    status: str  # met, not_met, open, breached, excluded, invalid, received (see _DETAIL)


@dataclass(slots=True)
class PeriodData:
    """What the database says about one period, at every level."""

    period: Period
    england: Figures = field(default_factory=Figures)
    regions: dict[str, Figures] = field(default_factory=dict)
    icbs: dict[str, Figures] = field(default_factory=dict)
    providers: dict[str, Figures] = field(default_factory=dict)
    region_icbs: dict[str, dict[str, Figures]] = field(default_factory=dict)
    region_providers: dict[str, dict[str, Figures]] = field(default_factory=dict)
    open_rows: list[OpenRow] = field(default_factory=list)
    # area (ENGLAND or a region code) -> [(stopped, met)] per trend period, oldest first
    trend: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    trend_labels: list[str] = field(default_factory=list)
    detail: list[DetailRow] | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """The content of one area's directory: summary.csv and report.xlsx."""

    area: str  # ENGLAND or a region code
    name: str
    period: Period
    publication: bool
    summary: list[Row]  # england and region rows
    icbs: list[Row]
    providers: list[Row]
    trend: list[TrendPoint]
    open_rows: list[OpenRow]
    detail: list[DetailRow] | None

    @property
    def rows(self) -> list[Row]:
        """Every row of summary.csv, in order."""
        return [*self.summary, *self.icbs, *self.providers]


@dataclass(frozen=True, slots=True)
class ExportResult:
    directory: Path
    files: dict[str, dict[str, Any]]  # relative path -> manifest entry
    seconds: float
    query_seconds: float


# -- rounding and formatting ------------------------------------------------------------------


def publication_count(count: int) -> int:
    """STANDARDS section 5: nearest 5, with 1-7 shown as 5 (0 -> 0, 8 -> 10, 13 -> 15)."""
    if count <= 0:
        return 0
    if count <= _SMALL_MAX:
        return _ROUNDING_BASE
    return (count + _ROUNDING_BASE // 2) // _ROUNDING_BASE * _ROUNDING_BASE


def pct(met: int, stopped: int) -> Decimal | None:
    """100 x met / stopped to one decimal, half up (exact); None when nothing stopped."""
    if stopped <= 0:
        return None
    return (Decimal(100 * met) / Decimal(stopped)).quantize(Decimal("0.1"), ROUND_HALF_UP)


def minutes(seconds: int | None) -> Decimal | None:
    """Seconds as minutes to one decimal, half up."""
    if seconds is None:
        return None
    return (Decimal(seconds) / Decimal(60)).quantize(Decimal("0.1"), ROUND_HALF_UP)


Cell = int | Decimal | str | None


def row_cells(row: Row, publication: bool) -> list[Cell]:
    """A summary row in COLUMNS order; counts rounded in publication mode, percentages not."""
    f = row.figures
    n = publication_count if publication else _same
    return [
        row.level,
        row.code,
        row.name,
        n(f.referrals_received),
        n(f.clocks_stopped),
        n(f.clocks_met),
        pct(f.clocks_met, f.clocks_stopped),
        n(f.clocks_excluded),
        n(f.open_at_end),
        n(f.breached_at_end),
        minutes(f.median_wait_seconds),
        minutes(f.p90_wait_seconds),
        n(f.reablement_received),
        n(f.reablement_stopped),
        n(f.reablement_met),
        pct(f.reablement_met, f.reablement_stopped),
        n(f.reablement_open_at_end),
        n(f.reablement_breached_at_end),
        n(f.contacts),
    ]


def _same(count: int) -> int:
    return count


# -- SQL --------------------------------------------------------------------------------------

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
        # JIT compiling these few-row aggregates costs more than running them (measured: 1.3 s
        # of a 1.5 s week on a national year); the contacts sort fits in memory at 64 MB.
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


# -- reports ----------------------------------------------------------------------------------


def region_codes(data: PeriodData) -> list[str]:
    """Areas below England: the seven reference regions, others with data, `unknown` last."""
    from streams.geography import regions

    present = {code for code, figures in data.regions.items() if figures.has_data()}
    return _ordered(present | set(regions()))


def build_reports(
    data: PeriodData, *, areas: Sequence[str] | None = None, publication: bool = False
) -> list[Report]:
    """One `Report` per area (ENGLAND first, then regions); `areas` limits which."""
    from streams.geography import icbs

    wanted = [ENGLAND, *region_codes(data)] if areas is None else list(areas)
    reports = []
    for area in wanted:
        if area == ENGLAND:
            summary = [
                Row("england", ENGLAND, "England", data.england),
                *(
                    Row("region", code, _region_name(code), data.regions.get(code, Figures()))
                    for code in region_codes(data)
                ),
            ]
            icb_figures = dict(data.icbs)
            reference_icbs = list(icbs())
            provider_figures = data.providers
            open_rows = data.open_rows
            detail = data.detail
        else:
            summary = [
                Row("england", ENGLAND, "England", data.england),
                Row("region", area, _region_name(area), data.regions.get(area, Figures())),
            ]
            icb_figures = dict(data.region_icbs.get(area, {}))
            reference_icbs = [code for code, icb in icbs().items() if icb.region == area]
            provider_figures = data.region_providers.get(area, {})
            open_rows = [row for row in data.open_rows if row.region == area]
            detail = (
                [row for row in data.detail if row.region == area]
                if data.detail is not None
                else None
            )
        # Organisations with data; and, unless publishing, every reference region and ICB.
        icb_figures = {code: f for code, f in icb_figures.items() if f.has_data()}
        if not publication:
            for code in reference_icbs:
                icb_figures.setdefault(code, Figures())
        icb_rows = [
            Row("icb", code, _icb_name(code), icb_figures[code]) for code in _ordered(icb_figures)
        ]
        provider_rows = [
            Row("provider", code, "", figures)
            for code in _ordered(provider_figures)
            if (figures := provider_figures[code]).has_data()
        ]
        if publication:
            summary = [row for row in summary if row.figures.has_data()]
        points = data.trend.get(area, [(0, 0)] * len(data.trend_labels))
        trend = [
            TrendPoint(label, stopped, met)
            for label, (stopped, met) in zip(data.trend_labels, points, strict=True)
        ]
        reports.append(
            Report(
                area=area,
                name="England" if area == ENGLAND else _region_name(area) or area,
                period=data.period,
                publication=publication,
                summary=summary,
                icbs=icb_rows,
                providers=provider_rows,
                trend=trend,
                open_rows=sorted(open_rows, key=lambda r: (r.region, r.icb, r.provider)),
                detail=detail,
            )
        )
    return reports


def _ordered(codes: Iterable[str]) -> list[str]:
    return sorted(codes, key=lambda code: (code == UNKNOWN, code))


def _region_name(code: str) -> str:
    from streams.geography import regions

    if code == UNKNOWN:
        return "Unknown"
    region = regions().get(code)
    return region.name if region is not None else ""


def _icb_name(code: str) -> str:
    from streams.geography import icbs

    if code == UNKNOWN:
        return "Unknown"
    icb = icbs().get(code)
    return icb.name if icb is not None else ""


# -- files ------------------------------------------------------------------------------------


def write_summary_csv(report: Report, path: Path) -> int:
    """summary.csv (COLUMNS; empty cells for absent values); returns its data rows."""
    rows = report.rows
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(
                "" if cell is None else str(cell) for cell in row_cells(row, report.publication)
            )
    return len(rows)


def export_period(
    url: str,
    period: Period,
    out: Path,
    *,
    rules: Rules,
    areas: Sequence[str] | None = None,
    publication: bool = False,
    detail: bool = False,
    progress: Callable[[str], object] | None = None,
) -> ExportResult:
    """Query, build and write one period's export under `out/<period label>/`."""
    from consumers.postgres import blocking_session
    from consumers.workbook import write_workbook

    say = progress if progress is not None else _silent
    if publication and detail:
        raise InputError("--detail is per clock: it cannot go with --publication")
    began = time.perf_counter()
    say(f"export {period.label}: reading {_span(period, rules)} from PostgreSQL")
    with blocking_session(url, f"exporting {period.label}") as conn:
        data = fetch(conn, period, detail=detail)
    query_s = time.perf_counter() - began
    say(f"export {period.label}: queried in {query_s:.2f} s")
    if areas is not None:
        known = {ENGLAND, *region_codes(data)}
        missing = [area for area in areas if area not in known]
        if missing:
            raise InputError(
                f"--region {missing[0]}: no such region (known: {', '.join(sorted(known))})"
            )
    reports = build_reports(data, areas=areas, publication=publication)

    final = out / period.label
    staging = out / f".{period.label}.tmp-{secrets.token_hex(4)}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale(out, period.label)
        staging.mkdir()
    except OSError as exc:
        raise InputError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    try:
        entries: dict[str, dict[str, Any]] = {}
        for number, report in enumerate(reports, 1):
            say(f"export {period.label}: {report.area} ({number}/{len(reports)})")
            folder = staging / _directory_name(report.area)
            folder.mkdir()
            entries.update(_write_area(report, folder, write_workbook))
        manifest = {
            "format": 1,
            "period": period.label,
            "kind": period.kind,
            "timezone": rules.timezone,
            "start": _iso(period.start),
            "end": _iso(period.end),
            "publication": publication,
            "detail": detail,
            "areas": [report.area for report in reports],
            "generated_at": _iso(int(time.time())),
            "files": entries,
        }
        _atomic(
            staging / "manifest.json",
            lambda tmp: tmp.write_text(
                json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            ),
        )
        _swap(staging, final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"cannot write {final}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - began
    say(f"export {period.label}: wrote {len(entries)} files to {final} in {seconds:.2f} s")
    return ExportResult(final, entries, seconds, query_s)


def _write_area(
    report: Report, folder: Path, write_workbook: Callable[[Report, Path], dict[str, int]]
) -> dict[str, dict[str, Any]]:
    """An area's two files, each written atomically; their manifest entries."""
    summary = folder / "summary.csv"
    rows = _atomic(summary, lambda tmp: write_summary_csv(report, tmp))
    workbook = folder / "report.xlsx"
    sheets = _atomic(workbook, lambda tmp: write_workbook(report, tmp))
    return {
        f"{folder.name}/summary.csv": _entry(summary, rows),
        f"{folder.name}/report.xlsx": _entry(workbook, sheets),
    }


def _atomic(path: Path, write: Callable[[Path], T]) -> T:
    """Write through a temporary sibling and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        result = write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def _entry(path: Path, rows: int | dict[str, int]) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "rows": rows, "sha256": digest.hexdigest()}


def _swap(staging: Path, final: Path) -> None:
    """Put the staged period in place of the old one (two renames; the old one is deleted)."""
    old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
    replacing = final.exists()
    if replacing:
        final.rename(old)
    try:
        staging.rename(final)
    except OSError:
        if replacing:
            old.rename(final)  # put the previous export back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale(out: Path, label: str) -> None:
    """Leftovers of crashed runs of this period: old copies, and staging over an hour old."""
    now = time.time()
    for path in out.glob(f".{label}.*"):
        if ".old-" in path.name or now - path.stat().st_mtime > _STALE_STAGING_S:
            shutil.rmtree(path, ignore_errors=True)


def _directory_name(area: str) -> str:
    # Codes are [A-Za-z0-9]+ (the event schema) or "unknown"/"england"; be safe regardless.
    return _SAFE_NAME.sub("_", area) or "_"


def _iso(instant: int) -> str:
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(period: Period, rules: Rules) -> str:
    return f"{period.describe()} {rules.timezone} [{_iso(period.start)}, {_iso(period.end)})"


def _silent(message: str) -> None:
    return None


# -- command ----------------------------------------------------------------------------------


@click.command()
@click.option(
    "--week",
    metavar="YYYY-Www",
    default=None,
    help="ISO week, Monday to Sunday local time (CRISISWATCH_TIMEZONE, default Europe/London).",
)
@click.option("--month", metavar="YYYY-MM", default=None, help="Calendar month instead.")
@click.option(
    "--region",
    "regions",
    metavar="CODE",
    multiple=True,
    help="Only these areas (region codes, 'unknown', 'england'); repeatable. Default: all.",
)
@click.option(
    "--publication",
    is_flag=True,
    help="Round counts to the nearest 5 (1-7 as 5) and omit organisations with no data.",
)
@click.option(
    "--detail", is_flag=True, help="Add a per-clock sheet (referral ids, no patient data)."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory; the export goes to OUT/<period>/ (replaced whole on a re-run).",
)
@database_option
@click.option("--quiet", "-q", is_flag=True, help="No progress on standard error.")
def export(
    week: str | None,
    month: str | None,
    regions: tuple[str, ...],
    publication: bool,
    detail: bool,
    out: Path,
    database_url: str,
    quiet: bool,
) -> None:
    """Weekly (ISO week) or monthly regional exports from PostgreSQL (CONTRACT section 5).

    Writes OUT/<period>/<area>/summary.csv and report.xlsx for England and each region, and
    OUT/<period>/manifest.json (row counts, SHA-256). Rules settings (time zone, thresholds)
    come from the environment, as for the worker.
    """
    from pydantic import ValidationError

    from streams.period import parse_month, parse_week
    from streams.settings import RulesSettings

    if (week is None) == (month is None):
        raise click.UsageError("give exactly one of --week YYYY-Www and --month YYYY-MM")
    if publication and detail:
        raise click.UsageError("--detail cannot go with --publication (files that leave)")
    try:
        settings: type[Any] = RulesSettings  # pydantic-settings reads the environment
        rules = settings().rules()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = f"CRISISWATCH_{str(first['loc'][0]).upper()}" if first.get("loc") else "rules"
        raise ConfigurationError(f"{name}: {first['msg']}") from exc
    try:
        if week is not None:
            period = parse_week(week, rules.zone)
        else:
            assert month is not None
            period = parse_month(month, rules.zone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--week" if week else "--month") from exc
    areas = [_area_code(code) for code in regions] or None

    def say(message: str) -> None:
        click.echo(message, err=True)

    export_period(
        database_url,
        period,
        out,
        rules=rules,
        areas=areas,
        publication=publication,
        detail=detail,
        progress=None if quiet else say,
    )


def _area_code(code: str) -> str:
    lowered = code.strip().lower()
    return lowered if lowered in (ENGLAND, UNKNOWN) else code.strip().upper()
