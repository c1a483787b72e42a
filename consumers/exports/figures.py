"""The figures of an export: value types, publication rounding and cell formatting.

What one period's export holds at every organisation level (`Figures`, `Row`, ...), and the
rules that turn a count into a published cell (STANDARDS section 5): counts rounded to the
nearest 5 in publication mode (1-7 shown as 5), percentages and waits to one decimal, half up,
always from the unrounded records. Pure: no database, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from streams.period import Period

__all__ = [
    "COLUMNS",
    "ENGLAND",
    "LEVELS",
    "TARGET_PCT",
    "TREND_PERIODS",
    "UNKNOWN",
    "Cell",
    "DetailRow",
    "ExportResult",
    "Figures",
    "OpenRow",
    "PeriodData",
    "Report",
    "Row",
    "TrendPoint",
    "minutes",
    "pct",
    "publication_count",
    "row_cells",
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

# Publication rounding (STANDARDS section 5): nearest 5; 1-7 shown as 5.
_ROUNDING_BASE: Final = 5
_SMALL_MAX: Final = 7


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
