"""England's regions and ICBs (reference/*.csv, shipped as package data)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True, slots=True)
class Icb:
    code: str
    name: str
    region: str
    mean_referrals_per_month: int
    mean_pct_within_2h: float


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    name: str
    mean_referrals_per_month: int
    mean_pct_within_2h: float


def _rows(name: str) -> list[dict[str, str]]:
    text = (files("streams") / "data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@cache
def icbs() -> dict[str, Icb]:
    return {
        row["icb_code"]: Icb(
            row["icb_code"],
            row["icb_name"],
            row["region_code"],
            int(row["mean_referrals_per_month"]),
            float(row["mean_pct_within_2h"]),
        )
        for row in _rows("icbs.csv")
    }


@cache
def regions() -> dict[str, Region]:
    return {
        row["region_code"]: Region(
            row["region_code"],
            row["region_name"],
            int(row["mean_referrals_per_month"]),
            float(row["mean_pct_within_2h"]),
        )
        for row in _rows("regions.csv")
    }


@cache
def region_by_icb() -> dict[str, str]:
    return {code: icb.region for code, icb in icbs().items()}
