"""Weekly and monthly regional exports from PostgreSQL (CONTRACT section 5): the writer.

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

One pass, record-level counts: see `consumers.exports.query`.

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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from consumers.exports.figures import COLUMNS, ENGLAND, ExportResult, Report, row_cells
from consumers.exports.query import fetch
from consumers.exports.report import build_reports, region_codes
from consumers.exports.workbook import write_workbook
from consumers.store import blocking_session
from streams.atomic import write_text_atomic, write_via
from streams.errors import InputError

if TYPE_CHECKING:
    from streams.engine import Rules
    from streams.period import Period

__all__ = ["export_period", "write_summary_csv"]

_SAFE_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")
# Staging directories left by a crashed run are removed once older than this (seconds).
_STALE_STAGING_S: Final = 3600


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
            entries.update(_write_area(report, folder))
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
        write_text_atomic(
            staging / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n"
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


def _write_area(report: Report, folder: Path) -> dict[str, dict[str, Any]]:
    """An area's two files, each written atomically; their manifest entries."""
    summary = folder / "summary.csv"
    rows = write_via(summary, lambda tmp: write_summary_csv(report, tmp))
    workbook = folder / "report.xlsx"
    sheets = write_via(workbook, lambda tmp: write_workbook(report, tmp))
    return {
        f"{folder.name}/summary.csv": _entry(summary, rows),
        f"{folder.name}/report.xlsx": _entry(workbook, sheets),
    }


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
