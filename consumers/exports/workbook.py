"""report.xlsx of one export area (openpyxl): what a regional team opens on Monday.

Sheets: **Summary** (the area and England, the definitions, and the 12-period chart),
**ICB**, **Provider**, **Trend** (% of type-05 clocks met per period against the 70% line,
table and chart), **Open at end** (open and breached clocks at the period end by provider)
and, with `--detail` only, **Detail** (one row per clock: referral id and codes, no patient
data). Counts are the ones of summary.csv (rounded in publication mode); percentages are
computed from unrounded counts (`consumers.exports.figures.row_cells`).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from openpyxl import Workbook
from openpyxl.chart import LineChart, Reference
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from consumers.exports.figures import (
    COLUMNS,
    TARGET_PCT,
    Cell,
    Report,
    Row,
    minutes,
    pct,
    publication_count,
    row_cells,
)
from streams.engine import format_instant

__all__ = ["SHEETS", "write_workbook"]

SHEETS: Final = ("Summary", "ICB", "Provider", "Trend", "Open at end")
DETAIL_SHEET: Final = "Detail"

_LABELS: Final = {
    "level": "Level",
    "code": "Code",
    "name": "Name",
    "referrals_received": "2h referrals received (05)",
    "clocks_stopped": "2h clocks stopped",
    "clocks_met": "2h clocks met",
    "pct_met": "2h % met",
    "clocks_excluded": "Not subject to standard (07)",
    "open_at_end": "2h open at end",
    "breached_at_end": "2h breached at end",
    "median_wait_minutes": "Median wait (min)",
    "p90_wait_minutes": "90th centile wait (min)",
    "reablement_received": "2d referrals received (06)",
    "reablement_stopped": "2d clocks stopped",
    "reablement_met": "2d clocks met",
    "reablement_pct_met": "2d % met",
    "reablement_open_at_end": "2d open at end",
    "reablement_breached_at_end": "2d breached at end",
    "contacts": "Contacts (05/07)",
}
_DECIMAL_COLUMNS: Final = frozenset(
    {"pct_met", "reablement_pct_met", "median_wait_minutes", "p90_wait_minutes"}
)
_HEADER_FONT: Final = Font(bold=True, color="FFFFFF")
_HEADER_FILL: Final = PatternFill("solid", fgColor="005EB8")  # NHS blue
_TITLE_FONT: Final = Font(bold=True, size=14)
_TREND_COLOUR: Final = "005EB8"
_TARGET_COLOUR: Final = "DA291C"  # NHS emergency red
_TARGET_LABEL: Final = f"Target {TARGET_PCT}%"
_SUMMARY_FIRST_ROW: Final = 7  # header row of the Summary sheet's table


def write_workbook(report: Report, path: Path) -> dict[str, int]:
    """Write report.xlsx to `path`; returns the data rows of each sheet."""
    book = Workbook()
    summary = book.active
    assert summary is not None
    summary.title = "Summary"
    rows: dict[str, int] = {}
    rows["Summary"] = _summary_sheet(summary, report)
    rows["ICB"] = _table(book.create_sheet("ICB"), report.icbs, report.publication)
    rows["Provider"] = _table(book.create_sheet("Provider"), report.providers, report.publication)
    trend = book.create_sheet("Trend")
    rows["Trend"] = _trend_sheet(trend, report)
    # Below the measures (one row each after the header) and the chart's caption.
    summary.add_chart(_trend_chart(trend, report), f"A{_SUMMARY_FIRST_ROW + len(COLUMNS) + 1}")
    rows["Open at end"] = _open_sheet(book.create_sheet("Open at end"), report)
    if report.detail is not None:
        rows[DETAIL_SHEET] = _detail_sheet(book.create_sheet(DETAIL_SHEET), report)
    for sheet in book.worksheets:
        _landscape(sheet)
    summary.page_setup.fitToHeight = 1  # the front page: figures and chart on one page
    book.active = 0
    book.save(path)
    return rows


# -- sheets -----------------------------------------------------------------------------------


def _summary_sheet(sheet: Worksheet, report: Report) -> int:
    """Headline figures, one column per organisation (the area and England); the chart below."""
    period = report.period
    kind = "ISO week" if period.kind == "week" else "Month"
    sheet["A1"] = f"2-hour urgent community response and 2-day reablement: {report.name}"
    sheet["A1"].font = _TITLE_FONT
    sheet["A2"] = f"{kind} {period.label}: {period.describe()} ({period.zone.key})"
    sheet["A3"] = (
        "Publication: counts rounded to the nearest 5 (1-7 shown as 5), organisations with no "
        "data omitted; percentages from unrounded counts."
        if report.publication
        else "Management information: unrounded counts. Not for publication."
    )
    sheet["A4"] = (
        "2h: type-05 clocks; % met = clocks stopped in the period within 120:00 / clocks "
        "stopped in the period. Open and breached: at the period end."
    )
    sheet["A5"] = (
        "2d: type-06 reablement clocks, met when the first visit is no later than two local "
        "days after the referral. Codes and counts only: no patient data."
    )
    top = _SUMMARY_FIRST_ROW
    _header(sheet, ["Measure", *(_heading(row) for row in report.summary)], top)
    sheet.row_dimensions[top].height = 30  # two lines: "North East and Yorkshire (Y63)"
    cells = [row_cells(row, report.publication) for row in report.summary]
    measures = COLUMNS[3:]  # after level, code, name
    for offset, name in enumerate(measures, 1):
        sheet.cell(top + offset, 1, _LABELS[name]).font = Font(bold=True)
        for column, values in enumerate(cells, 2):
            cell = sheet.cell(top + offset, column, _value(values[offset + 2]))
            if name in _DECIMAL_COLUMNS:
                cell.number_format = "0.0"
    _widths(sheet, [30] + [14] * len(report.summary))
    sheet.freeze_panes = sheet.cell(top + 1, 2)
    caption = sheet.cell(
        top + len(measures) + 2, 1, f"% of 2h clocks met, last {len(report.trend)} periods"
    )
    caption.font = Font(bold=True)
    return len(measures)


def _heading(row: Row) -> str:
    if row.level == "england" or not row.name:
        return row.name or row.code
    return f"{row.name} ({row.code})"


def _table(sheet: Worksheet, rows: Sequence[Row], publication: bool, *, first_row: int = 1) -> int:
    """A summary-style table (COLUMNS) starting at `first_row`; returns its data rows."""
    _header(sheet, [_LABELS[c] for c in COLUMNS], first_row)
    for offset, row in enumerate(rows, 1):
        for column, (name, value) in enumerate(
            zip(COLUMNS, row_cells(row, publication), strict=True), 1
        ):
            cell = sheet.cell(first_row + offset, column, _value(value))
            if name in _DECIMAL_COLUMNS:
                cell.number_format = "0.0"
    _widths(sheet, [8, 10, 44] + [14] * (len(COLUMNS) - 3))
    sheet.freeze_panes = sheet.cell(first_row + 1, 4)
    return len(rows)


def _trend_sheet(sheet: Worksheet, report: Report) -> int:
    n = publication_count if report.publication else int
    _header(sheet, ["Period", "2h clocks stopped", "2h clocks met", "% met", _TARGET_LABEL], 1)
    for number, point in enumerate(report.trend, 2):
        sheet.cell(number, 1, point.label)
        sheet.cell(number, 2, n(point.stopped))
        sheet.cell(number, 3, n(point.met))
        sheet.cell(number, 4, _value(pct(point.met, point.stopped))).number_format = "0.0"
        sheet.cell(number, 5, TARGET_PCT)
    _widths(sheet, [12, 18, 16, 10, 12])
    sheet.add_chart(_trend_chart(sheet, report), "G2")
    return len(report.trend)


def _trend_chart(trend: Worksheet, report: Report) -> LineChart:
    """% met per period (column D of Trend) against the target line (column E)."""
    last = len(report.trend) + 1
    chart = LineChart()
    chart.title = f"{report.name}: % of 2-hour clocks met"
    chart.y_axis.title = "% met"
    chart.x_axis.title = "ISO week" if report.period.kind == "week" else "Month"
    chart.y_axis.scaling.min = 0
    chart.y_axis.scaling.max = 100
    chart.y_axis.majorUnit = 10
    chart.y_axis.number_format = "0"
    # openpyxl >= 3.1 marks axes deleted unless told otherwise; then no viewer draws them.
    chart.x_axis.delete = False
    chart.y_axis.delete = False
    chart.height = 9
    chart.width = 20
    chart.add_data(
        Reference(trend, min_col=4, max_col=5, min_row=1, max_row=last), titles_from_data=True
    )
    chart.set_categories(Reference(trend, min_col=1, min_row=2, max_row=last))
    measured, target = chart.series
    measured.graphicalProperties.line.solidFill = _TREND_COLOUR
    measured.graphicalProperties.line.width = 28575  # EMU: 2.25 pt
    measured.smooth = False
    target.graphicalProperties.line.solidFill = _TARGET_COLOUR
    target.graphicalProperties.line.dashStyle = "dash"
    target.graphicalProperties.line.width = 19050  # 1.5 pt
    target.smooth = False
    chart.legend.position = "b"
    return chart


def _open_sheet(sheet: Worksheet, report: Report) -> int:
    n = publication_count if report.publication else int
    _header(
        sheet,
        ["Region", "ICB", "Provider", "2h open", "2h breached", "2d open", "2d breached"],
        1,
    )
    for number, row in enumerate(report.open_rows, 2):
        values: list[Any] = [
            row.region, row.icb, row.provider,
            n(row.open_2h), n(row.breached_2h), n(row.open_2d), n(row.breached_2d),
        ]  # fmt: skip
        for column, value in enumerate(values, 1):
            sheet.cell(number, column, value)
    _widths(sheet, [10, 10, 10, 10, 12, 10, 12])
    sheet.freeze_panes = "A2"
    return len(report.open_rows)


def _detail_sheet(sheet: Worksheet, report: Report) -> int:
    assert report.detail is not None
    _header(
        sheet,
        [
            "Referral id", "Clock type", "Region", "ICB", "Provider", "Received (UTC)",
            "Clock start (UTC)", "Clock stop (UTC)", "Wait (min)", "Status in period",
        ],
        1,
    )  # fmt: skip
    for number, row in enumerate(report.detail, 2):
        values: list[Any] = [
            row.referral_id, row.clock_type, row.region, row.icb, row.provider,
            format_instant(row.received_at) or None, format_instant(row.clock_start) or None,
            format_instant(row.clock_stop) or None, _value(minutes(row.wait_seconds)),
            row.status,
        ]  # fmt: skip
        for column, value in enumerate(values, 1):
            sheet.cell(number, column, value)
    _widths(sheet, [24, 10, 10, 10, 10, 22, 22, 22, 10, 16])
    sheet.freeze_panes = "A2"
    return len(report.detail)


# -- helpers ----------------------------------------------------------------------------------


def _header(sheet: Worksheet, labels: Sequence[str], row: int) -> None:
    for column, label in enumerate(labels, 1):
        cell = sheet.cell(row, column, label)
        cell.font = _HEADER_FONT
        cell.fill = _HEADER_FILL
        cell.alignment = Alignment(wrap_text=True, vertical="top")


def _widths(sheet: Worksheet, widths: Sequence[int]) -> None:
    for column, width in enumerate(widths, 1):
        sheet.column_dimensions[get_column_letter(column)].width = width


def _landscape(sheet: Worksheet) -> None:
    """Print (and render) landscape, one page wide."""
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A4
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0


def _value(cell: Cell) -> Any:
    """An xlsx cell value: Decimal as float (shown with one decimal), None as empty."""
    if isinstance(cell, Decimal):
        return float(cell)
    return cell
