"""One period's figures arranged as the reports of each area (England and every region).

Without publication mode every reference region and ICB is listed even when it has no data
(zeros), so a regional pack always has its full set of ICBs; with it, organisations without
data are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from consumers.exports.figures import (
    ENGLAND,
    UNKNOWN,
    Figures,
    PeriodData,
    Report,
    Row,
    TrendPoint,
)
from streams.geography import icbs, regions

__all__ = ["build_reports", "region_codes"]


def region_codes(data: PeriodData) -> list[str]:
    """Areas below England: the seven reference regions, others with data, `unknown` last."""
    present = {code for code, figures in data.regions.items() if figures.has_data()}
    return _ordered(present | set(regions()))


def build_reports(
    data: PeriodData, *, areas: Sequence[str] | None = None, publication: bool = False
) -> list[Report]:
    """One `Report` per area (ENGLAND first, then regions); `areas` limits which."""
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
    if code == UNKNOWN:
        return "Unknown"
    region = regions().get(code)
    return region.name if region is not None else ""


def _icb_name(code: str) -> str:
    if code == UNKNOWN:
        return "Unknown"
    icb = icbs().get(code)
    return icb.name if icb is not None else ""
