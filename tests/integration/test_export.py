"""`crisiswatch export` against a national-shaped data set loaded through the real pipeline.

Five weeks of England-shaped referrals (the simulator at a quarter of England's rate) spanning
the end of British Summer Time (Sunday 25 October 2026, 02:00 BST -> 01:00 GMT, in ISO week
2026-W43) go through the live pipeline (codec -> engine -> one transaction per batch into a
fresh migrated PostgreSQL, with a fake outcome sink and a simulated wall clock). Every figure
of the week and month exports is then checked against an independent computation in Python:
the same events through a separate engine, each referral's final clock judged by the engine
(at the period end, with any later stop hidden, for what was open or breached), aggregated
here with plain loops and exact fractions, never with the export's SQL or formatting.

Needs PostgreSQL (CRISISWATCH_TEST_POSTGRES) and LibreOffice (`soffice`): missing = failure.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import re
import shutil
import subprocess
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import psycopg
import pytest
from click.testing import CliRunner

from consumers.cli.export import export
from consumers.exports.figures import COLUMNS
from consumers.exports.workbook import SHEETS
from consumers.exports.writer import export_period
from consumers.live.pipeline import DeadLetter, Message, Pipeline
from consumers.store import Store, migrate
from streams.codec import Codec, Rejection
from streams.engine import Clock, Engine, Outcome, Rules
from streams.engine.event import CONTACT
from streams.geography import icbs, regions
from streams.period import Period, parse_month, parse_week
from streams.simulation import SimulatedLine, SimulationConfig, simulate

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "export"  # ignored by git (/artifacts/)
LONDON = ZoneInfo("Europe/London")
RULES = Rules()
# Monday 28 September 2026 (ISO week 40) to Sunday 1 November (week 44), local midnights.
SIM_START = datetime(2026, 9, 28, tzinfo=LONDON)
SIM_DAYS = 35
SPEED = 0.25
WEEKS = ("2026-W40", "2026-W41", "2026-W42", "2026-W43", "2026-W44")
CLOCK_CHANGE_WEEK = "2026-W43"
MONTH = "2026-10"
PARTITIONS = 4
BATCH = 2000
OPEN = ("waiting", "at_risk", "breached")
# The simulator's patient references (p-<hex>, and 999-range NHS numbers) and the audit log's
# pseudonyms of NHS numbers (nhs-<32 letters a-p>).
PATIENT_REF = re.compile(r"p-[0-9a-f]{16}|nhs-[a-p]{32}|(?<!\d)999\d{7}(?!\d)")


# -- the data set --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One referral with a clock, as the independent computation sees it."""

    referral_id: str
    clock_type: str
    region: str
    icb: str
    provider: str
    received: int
    outcome: Outcome  # final
    clock: Clock  # final facts (to judge at a period end)


@dataclass(slots=True)
class Dataset:
    url: str
    records: list[Record]
    contacts: set[tuple[str, str, int]]  # (referral id, contact id, time)
    patient_refs: set[str]
    rejected: int
    dead_letters: int
    by_id: dict[str, Record] = field(default_factory=dict)


class ListSink:
    """The pipeline's outcome sink: counts what it is given (Kafka in production)."""

    def __init__(self) -> None:
        self.outcomes = 0
        self.dead: list[DeadLetter] = []

    async def publish(self, outcomes: Sequence[Outcome], dead: Sequence[DeadLetter]) -> None:
        self.outcomes += len(outcomes)
        self.dead.extend(dead)


def simulated_lines() -> list[SimulatedLine]:
    config = SimulationConfig(
        start=SIM_START, duration=timedelta(days=SIM_DAYS), speed=SPEED, seed=6
    )
    return list(simulate(config))


def load_through_pipeline(url: str, lines: Sequence[SimulatedLine]) -> ListSink:
    """The lines, in arrival order, through the worker's pipeline into PostgreSQL."""
    migrate(url)
    sink = ListSink()
    now = [0.0]

    async def run() -> None:
        async with await Store.connect(url, rules=RULES) as store:
            pipeline = Pipeline(
                engine=Engine(RULES), codec=Codec(), store=store, sink=sink,
                topic="referral-events", clock=lambda: now[0],
            )  # fmt: skip
            await pipeline.assign(range(PARTITIONS))
            offsets = [0] * PARTITIONS
            for first in range(0, len(lines), BATCH):
                batch = []
                for line in lines[first : first + BATCH]:
                    key = line.key.encode() if line.key is not None else None
                    partition = zlib.crc32(key or b"") % PARTITIONS
                    batch.append(Message(partition, offsets[partition], key, line.line.encode()))
                    offsets[partition] += 1
                now[0] = lines[min(first + BATCH, len(lines)) - 1].arrival.timestamp()
                assert await pipeline.process(batch) == {}

    asyncio.run(run())
    return sink


def independent(
    lines: Sequence[SimulatedLine],
) -> tuple[list[Record], set[tuple[str, str, int]], int]:
    """The same events through a separate codec and engine: final clocks and contacts."""
    codec = Codec()
    engine = Engine(RULES)
    contacts: set[tuple[str, str, int]] = set()
    rejected = 0
    for line in lines:
        event = codec.decode(line.line)
        if isinstance(event, Rejection):
            rejected += 1
            continue
        engine.ingest(event)
        if event.type == CONTACT:
            assert event.contact_id is not None
            contacts.add((event.referral_id, event.contact_id, event.time))
    watermark = engine.watermark
    assert watermark is not None
    records = []
    for outcome in engine.outcomes(watermark):
        if outcome.clock_type is None:
            continue  # cancelled: no clock, counted nowhere
        clock = engine.clock(outcome.referral_id)
        assert clock is not None
        assert clock.received is not None
        records.append(
            Record(
                outcome.referral_id, outcome.clock_type, outcome.region, outcome.icb,
                outcome.provider, clock.received[0], outcome, clock,
            )
        )  # fmt: skip
    return records, contacts, rejected


@pytest.fixture(scope="module")
def dataset(new_database: Callable[[], str]) -> Dataset:
    lines = simulated_lines()
    url = new_database()
    sink = load_through_pipeline(url, lines)
    records, contacts, rejected = independent(lines)
    refs = set()
    for line in lines:
        if line.valid and '"patient_ref"' in line.line:
            refs.add(json.loads(line.line)["data"]["patient_ref"])
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT DISTINCT document -> 'data' ->> 'patient_ref' FROM events"
            " WHERE document -> 'data' ? 'patient_ref'"
        ).fetchall()
    refs |= {row[0] for row in stored}  # and their pseudonyms, as stored
    data = Dataset(url, records, contacts, refs, rejected, len(sink.dead))
    data.by_id = {r.referral_id: r for r in records}
    return data


# -- the independent computation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """One clock in one period, decided here from the engine's judgement."""

    record: Record
    received: bool
    stopped: bool
    met: bool
    open: bool
    breached: bool
    contacts: int


def judged_at_end(record: Record, end: int) -> Outcome:
    """The engine's outcome at the period end, knowing no stop at or after it."""
    state = record.clock.to_state()
    if state["stop"] is not None and state["stop"][0] >= end:
        state["stop"] = None
    outcome, _ = Clock.from_state(state).evaluate(RULES, end)
    assert outcome is not None
    return outcome


def statuses(data: Dataset, period: Period) -> list[Status]:
    start, end = period.start, period.end
    contacts: dict[str, set[str]] = defaultdict(set)
    for referral_id, contact_id, instant in data.contacts:
        if start <= instant < end:
            contacts[referral_id].add(contact_id)
    out = []
    for record in data.records:
        final = record.outcome
        at_end = judged_at_end(record, end)
        is_open = (
            at_end.state in OPEN and at_end.clock_start is not None and at_end.clock_start < end
        )
        stop = final.clock_stop
        out.append(
            Status(
                record,
                received=start <= record.received < end,
                stopped=final.state in ("met", "not_met")
                and stop is not None
                and start <= stop < end,
                met=final.state == "met",
                open=is_open,
                breached=is_open and at_end.state == "breached",
                contacts=len(contacts.get(record.referral_id, ())),
            )
        )
    return out


def tenths(numerator: int, denominator: int) -> str:
    """numerator / denominator to one decimal, half up, exactly."""
    scaled = math.floor(Fraction(10 * numerator, denominator) + Fraction(1, 2))
    return f"{scaled // 10}.{scaled % 10}"


def percentile_disc(values: list[int], fraction: float) -> int | None:
    """The first value whose cumulative share reaches `fraction` (PostgreSQL's definition)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def rounded(count: int) -> int:
    """Publication rounding as STANDARDS words it, written independently of the export."""
    if count == 0:
        return 0
    if count <= 7:
        return 5
    down = count - count % 5
    return down if count % 5 < 2.5 else down + 5


def figures(group: Iterable[Status]) -> dict[str, Any]:
    counts: dict[str, Any] = defaultdict(int)
    waits: list[int] = []
    for s in group:
        kind = s.record.clock_type
        if kind == "05":
            counts["referrals_received"] += s.received
            counts["clocks_stopped"] += s.stopped
            counts["clocks_met"] += s.stopped and s.met
            counts["open_at_end"] += s.open
            counts["breached_at_end"] += s.breached
            if s.stopped:
                assert s.record.outcome.wait_seconds is not None
                waits.append(s.record.outcome.wait_seconds)
        elif kind == "06":
            counts["reablement_received"] += s.received
            counts["reablement_stopped"] += s.stopped
            counts["reablement_met"] += s.stopped and s.met
            counts["reablement_open_at_end"] += s.open
            counts["reablement_breached_at_end"] += s.breached
        else:
            counts["clocks_excluded"] += s.received
        if kind in ("05", "07"):
            counts["contacts"] += s.contacts
    counts["median"] = percentile_disc(waits, 0.5)
    counts["p90"] = percentile_disc(waits, 0.9)
    return counts


COUNTS = [
    "referrals_received", "clocks_stopped", "clocks_met", "clocks_excluded", "open_at_end",
    "breached_at_end", "reablement_received", "reablement_stopped", "reablement_met",
    "reablement_open_at_end", "reablement_breached_at_end", "contacts",
]  # fmt: skip


def has_data(counts: dict[str, Any]) -> bool:
    return any(counts[name] for name in COUNTS)


def csv_row(
    level: str, code: str, name: str, c: dict[str, Any], publication: bool
) -> dict[str, str]:
    shown = {k: str(rounded(c[k]) if publication else c[k]) for k in COUNTS}
    stopped, reablement = c["clocks_stopped"], c["reablement_stopped"]
    return {
        "level": level,
        "code": code,
        "name": name,
        **shown,
        "pct_met": tenths(100 * c["clocks_met"], stopped) if stopped else "",
        "median_wait_minutes": "" if c["median"] is None else tenths(c["median"], 60),
        "p90_wait_minutes": "" if c["p90"] is None else tenths(c["p90"], 60),
        "reablement_pct_met": tenths(100 * c["reablement_met"], reablement) if reablement else "",
    }


def order(codes: Iterable[str]) -> list[str]:
    return sorted(codes, key=lambda code: (code == "unknown", code))


def grouped(items: Iterable[Status], key: Callable[[Status], str]) -> dict[str, list[Status]]:
    groups: dict[str, list[Status]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups


def region_name(code: str) -> str:
    return "Unknown" if code == "unknown" else regions()[code].name if code in regions() else ""


def icb_name(code: str) -> str:
    return "Unknown" if code == "unknown" else icbs()[code].name if code in icbs() else ""


def expected_areas(all_status: list[Status]) -> list[str]:
    by_region = grouped(all_status, lambda s: s.record.region)
    with_data = {code for code, group in by_region.items() if has_data(figures(group))}
    return ["england", *order(with_data | set(regions()))]


def expected_summary(
    all_status: list[Status], area: str, publication: bool
) -> list[dict[str, str]]:
    """summary.csv of one area, row by row."""
    england = figures(all_status)
    rows = [("england", "england", "England", england)]
    if area == "england":
        mine = all_status
        by_region = {
            k: figures(v) for k, v in grouped(all_status, lambda s: s.record.region).items()
        }
        for code in expected_areas(all_status)[1:]:
            counts = by_region.get(code) or figures([])
            rows.append(("region", code, region_name(code), counts))
        reference_icbs = set(icbs())
    else:
        mine = [s for s in all_status if s.record.region == area]
        rows.append(("region", area, region_name(area), figures(mine)))
        reference_icbs = {code for code, icb in icbs().items() if icb.region == area}
    by_icb = {k: figures(v) for k, v in grouped(mine, lambda s: s.record.icb).items()}
    icb_codes = {k for k, v in by_icb.items() if has_data(v)}
    if not publication:
        icb_codes |= reference_icbs
    for code in order(icb_codes):
        rows.append(("icb", code, icb_name(code), by_icb.get(code) or figures([])))
    by_provider = {k: figures(v) for k, v in grouped(mine, lambda s: s.record.provider).items()}
    for code in order(k for k, v in by_provider.items() if has_data(v)):
        rows.append(("provider", code, "", by_provider[code]))
    if publication:
        rows = [row for row in rows if has_data(row[3])]
    return [csv_row(level, code, name, c, publication) for level, code, name, c in rows]


def expected_trend(data: Dataset, period: Period, area: str) -> list[tuple[str, int, int]]:
    out = []
    for p in period.trailing(12):
        stopped = met = 0
        for r in data.records:
            stop = r.outcome.clock_stop
            if (
                r.clock_type == "05"
                and (area in ("england", r.region))
                and r.outcome.state in ("met", "not_met")
                and stop is not None
                and p.start <= stop < p.end
            ):
                stopped += 1
                met += r.outcome.state == "met"
        out.append((p.label, stopped, met))
    return out


def expected_open(all_status: list[Status], area: str) -> list[tuple[Any, ...]]:
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for s in all_status:
        r = s.record
        if s.open and r.clock_type in ("05", "06") and area in ("england", r.region):
            slot = counts[(r.region, r.icb, r.provider)]
            base = 0 if r.clock_type == "05" else 2
            slot[base] += 1
            slot[base + 1] += s.breached
    return [(*key, *value) for key, value in sorted(counts.items())]


# -- helpers ------------------------------------------------------------------------------------


def run_export(data: Dataset, period: Period, out: Path, **options: Any) -> dict[str, Any]:
    result = export_period(data.url, period, out, rules=RULES, **options)
    manifest: dict[str, Any] = json.loads((result.directory / "manifest.json").read_text())
    return manifest


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def sheet_rows(path: Path, sheet: str) -> list[tuple[Any, ...]]:
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        return list(book[sheet].iter_rows(min_row=2, values_only=True))
    finally:
        book.close()


def tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def assert_exports_match(data: Dataset, period: Period, out: Path, publication: bool) -> None:
    """Every figure of every file of the period against the independent computation."""
    all_status = statuses(data, period)
    areas = expected_areas(all_status)
    directory = out / period.label
    assert sorted(p.name for p in directory.iterdir() if p.is_dir()) == sorted(areas)
    for area in areas:
        actual = read_csv(directory / area / "summary.csv")
        expected = expected_summary(all_status, area, publication)
        assert [(r["level"], r["code"]) for r in actual] == [
            (r["level"], r["code"]) for r in expected
        ], area
        for got, want in zip(actual, expected, strict=True):
            assert got == want, (area, want["level"], want["code"])
        report = directory / area / "report.xlsx"
        n = rounded if publication else int
        trend = [
            (label, n(stopped), n(met))
            for label, stopped, met in expected_trend(data, period, area)
        ]
        assert [row[:3] for row in sheet_rows(report, "Trend")] == trend, area
        opened = [(*row[:3], *(n(v) for v in row[3:])) for row in expected_open(all_status, area)]
        assert sheet_rows(report, "Open at end") == opened, area
        csv_rows = [tuple(r.values()) for r in actual]
        for sheet, level in (("ICB", "icb"), ("Provider", "provider")):
            cells = [
                tuple(as_text(v, name) for v, name in zip(row, COLUMNS, strict=True))
                for row in sheet_rows(report, sheet)
            ]
            assert cells == [r for r in csv_rows if r[0] == level], (area, sheet)
        summary = sheet_rows(report, "Summary")
        header_row = next(i for i, row in enumerate(summary) if row and row[0] == "Measure")
        measures = summary[header_row + 1 : header_row + 1 + len(COLUMNS) - 3]
        columns = [
            tuple(as_text(row[i], name) for row, name in zip(measures, COLUMNS[3:], strict=True))
            for i in range(1, len(measures[0]))
        ]
        top = [r[3:] for r in csv_rows if r[0] in ("england", "region")]
        assert columns == top, area


DECIMALS = ("pct_met", "median_wait_minutes", "p90_wait_minutes", "reablement_pct_met")


def as_text(value: Any, name: str) -> str:
    """An xlsx cell of column `name` as summary.csv writes it."""
    if value is None:
        return ""
    if name in DECIMALS:
        return f"{value:.1f}"
    return str(value)


# -- tests: figures -------------------------------------------------------------------------------


def test_the_data_set_exercises_what_the_exports_must_get_right(dataset: Dataset) -> None:
    """Guard the premises: a clock change inside a week, clocks open across week ends, etc."""
    week = parse_week(CLOCK_CHANGE_WEEK, LONDON)
    assert week.end - week.start == 169 * 3600  # 25 October 2026: one hour longer
    assert dataset.rejected > 0
    assert dataset.dead_letters == dataset.rejected
    kinds = {r.clock_type for r in dataset.records}
    assert kinds == {"05", "06", "07"}
    assert any(r.region == "unknown" for r in dataset.records)
    # Re-triaged referrals: the final pathway differs from the one received.
    assert any(r.clock.retriage is not None for r in dataset.records)
    for label in WEEKS[:-1]:
        end = parse_week(label, LONDON).end
        across = [
            r for r in dataset.records
            if r.received < end and r.outcome.clock_stop is not None and r.outcome.clock_stop >= end
        ]  # fmt: skip
        assert len([r for r in across if r.clock_type == "05"]) > 5, label
        assert len([r for r in across if r.clock_type == "06"]) > 5, label
    # Clocks stopped in the hour that happens twice (01:00-02:00 local, 25 October).
    twice = datetime(2026, 10, 25, 0, 0, tzinfo=UTC).timestamp()
    assert any(
        r.outcome.clock_stop is not None and twice <= r.outcome.clock_stop < twice + 7200
        for r in dataset.records
    )


@pytest.mark.parametrize("label", WEEKS)
def test_week_export_matches_the_independent_computation(
    dataset: Dataset, tmp_path: Path, label: str
) -> None:
    period = parse_week(label, LONDON)
    run_export(dataset, period, tmp_path)
    assert_exports_match(dataset, period, tmp_path, publication=False)
    england = read_csv(tmp_path / label / "england" / "summary.csv")[0]
    assert int(england["open_at_end"]) > 0
    assert int(england["breached_at_end"]) > 0
    assert int(england["reablement_open_at_end"]) > 0


def test_month_export_matches_the_independent_computation(dataset: Dataset, tmp_path: Path) -> None:
    period = parse_month(MONTH, LONDON)
    assert (period.start, period.end) == (
        int(datetime(2026, 9, 30, 23, tzinfo=UTC).timestamp()),  # 1 October 00:00 BST
        int(datetime(2026, 11, 1, 0, tzinfo=UTC).timestamp()),  # 1 November 00:00 GMT
    )
    manifest = run_export(dataset, period, tmp_path)
    assert manifest["kind"] == "month"
    assert manifest["period"] == MONTH
    assert_exports_match(dataset, period, tmp_path, publication=False)
    trend = sheet_rows(tmp_path / MONTH / "england" / "report.xlsx", "Trend")
    assert [row[0] for row in trend] == [f"2025-{m:02d}" for m in range(11, 13)] + [
        f"2026-{m:02d}" for m in range(1, 11)
    ]


def test_publication_export_rounds_counts_and_omits_empty_organisations(
    dataset: Dataset, tmp_path: Path
) -> None:
    period = parse_week(CLOCK_CHANGE_WEEK, LONDON)
    manifest = run_export(dataset, period, tmp_path, publication=True)
    assert manifest["publication"] is True
    assert_exports_match(dataset, period, tmp_path, publication=True)
    for path in (tmp_path / CLOCK_CHANGE_WEEK).rglob("summary.csv"):
        for row in read_csv(path):
            for name in COUNTS:
                assert int(row[name]) % 5 == 0, (path, row["code"], name)


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, 0),  # nothing stays nothing
        (1, 5),  # 1-7 are all shown as 5 ...
        (2, 5),
        (3, 5),
        (4, 5),
        (5, 5),
        (6, 5),
        (7, 5),  # ... the top of the small range
        (8, 10),  # nearest 5 from here on
        (12, 10),  # rounds down
        (13, 15),  # rounds up
        (10_003, 10_005),
    ],
)
def test_publication_rounding(count: int, shown: int) -> None:
    from consumers.exports.figures import publication_count

    assert publication_count(count) == shown
    assert rounded(count) == shown  # the test's own reading agrees


def test_percentages_come_from_unrounded_counts() -> None:
    from consumers.exports.figures import Figures, Row, row_cells

    row = Row("provider", "RXX", "", Figures(clocks_stopped=13, clocks_met=9))
    cells = dict(zip(COLUMNS, row_cells(row, publication=True), strict=True))
    assert (cells["clocks_stopped"], cells["clocks_met"]) == (15, 10)
    assert str(cells["pct_met"]) == "69.2"  # 9/13, not 10/15 (66.7)


# -- tests: periods -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "start", "hours"),
    [
        ("2026-W43", "2026-10-18T23:00:00+00:00", 169),  # BST ends on its Sunday
        ("2026-W44", "2026-10-26T00:00:00+00:00", 168),  # GMT throughout
        ("2027-W12", "2027-03-22T00:00:00+00:00", 167),  # BST starts on Sunday 28 March 2027
        ("2026-W53", "2026-12-28T00:00:00+00:00", 168),  # 2026 has 53 ISO weeks
        ("2027-W01", "2027-01-04T00:00:00+00:00", 168),  # ... so 2027 starts on 4 January
        ("2026-W27", "2026-06-28T23:00:00+00:00", 168),  # BST throughout: Monday 00:00 local
    ],
)
def test_iso_week_bounds_are_local_midnights(label: str, start: str, hours: int) -> None:
    period = parse_week(label, LONDON)
    assert period.start == int(datetime.fromisoformat(start).timestamp())
    assert period.end - period.start == hours * 3600
    assert period.first_day.isoweekday() == 1
    assert period.last_day.isoweekday() == 7


@pytest.mark.parametrize(
    "text", ["2026-43", "2026-W54", "2025-W53", "26-W01", "2026-W1", "2026-13"]
)
def test_bad_periods_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"ISO week|has no ISO week|calendar month"):
        (parse_month if text == "2026-13" else parse_week)(text, LONDON)


def test_trailing_periods() -> None:
    week = parse_week("2027-W02", LONDON)
    assert [p.label for p in week.trailing(4)] == ["2026-W52", "2026-W53", "2027-W01", "2027-W02"]
    month = parse_month("2027-02", LONDON)
    assert [p.label for p in month.trailing(3)] == ["2026-12", "2027-01", "2027-02"]
    assert month.first_day == date(2027, 2, 1)
    assert month.end_day == date(2027, 3, 1)


# -- tests: the workbook --------------------------------------------------------------------------


def test_workbook_has_the_sheets_the_chart_and_the_target_line(
    dataset: Dataset, tmp_path: Path
) -> None:
    period = parse_week(CLOCK_CHANGE_WEEK, LONDON)
    run_export(dataset, period, tmp_path)
    report = tmp_path / CLOCK_CHANGE_WEEK / "Y62" / "report.xlsx"
    book = openpyxl.load_workbook(report)
    assert book.sheetnames == list(SHEETS)
    assert book.active is not None
    assert book.active.title == "Summary"
    trend = book["Trend"]
    assert [c.value for c in trend[1]] == [
        "Period",
        "2h clocks stopped",
        "2h clocks met",
        "% met",
        "Target 70%",
    ]
    rows = list(trend.iter_rows(min_row=2, values_only=True))
    assert len(rows) == 12
    assert rows[-1][0] == CLOCK_CHANGE_WEEK
    assert all(row[4] == 70 for row in rows)  # the target line's data
    # A line chart on Trend and on Summary, each with two series: % met and the 70% line.
    for sheet in ("Trend", "Summary"):
        charts = book[sheet]._charts
        assert [type(chart).__name__ for chart in charts] == ["LineChart"], sheet
        series = charts[0].series
        assert [(s.tx.strRef.f, s.val.numRef.f) for s in series] == [
            ("'Trend'!D1", "'Trend'!$D$2:$D$13"),  # % met
            ("'Trend'!E1", "'Trend'!$E$2:$E$13"),  # Target 70%
        ]
        assert series[0].cat.numRef.f == "'Trend'!$A$2:$A$13"  # the weeks
        assert series[1].spPr.ln.prstDash == "dash"  # the target drawn dashed
    for sheet in ("ICB", "Provider", "Open at end"):
        assert not book[sheet]._charts
    book.close()


def test_summary_sheet_renders_to_png_with_libreoffice(dataset: Dataset, tmp_path: Path) -> None:
    """The front page as a person sees it: artifacts/export/report-<area>.png (look at it)."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        pytest.fail(
            "LibreOffice (soffice) is required: apt-get install libreoffice-calc-nogui libreoffice-draw-nogui"
        )
    period = parse_week(CLOCK_CHANGE_WEEK, LONDON)
    run_export(dataset, period, tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for area in ("england", "Y62"):
        source = ARTIFACTS / f"report-{area}.xlsx"
        shutil.copyfile(tmp_path / CLOCK_CHANGE_WEEK / area / "report.xlsx", source)
        png = source.with_suffix(".png")
        png.unlink(missing_ok=True)
        profile = tmp_path / "lo-profile"  # a private profile: no clash with a running office
        result = subprocess.run(
            [soffice, f"-env:UserInstallation={profile.as_uri()}", "--headless",
             "--convert-to", "png", "--outdir", str(ARTIFACTS), str(source)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert png.is_file(), result.stdout + result.stderr
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 600
        assert height > 400
        assert len(data) > 30_000  # text, a table and a chart, not a blank page


# -- tests: privacy, detail, files ----------------------------------------------------------------


def all_text(directory: Path) -> Iterator[tuple[str, str]]:
    """(name, text) of every file, xlsx parts included."""
    for path in directory.rglob("*"):
        if path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    yield f"{path}:{name}", archive.read(name).decode("utf-8", "replace")
        elif path.is_file():
            yield str(path), path.read_text(encoding="utf-8")


def test_detail_sheet_lists_clocks_by_referral_id_and_nothing_about_patients(
    dataset: Dataset, tmp_path: Path
) -> None:
    period = parse_week(CLOCK_CHANGE_WEEK, LONDON)
    manifest = run_export(dataset, period, tmp_path, detail=True)
    assert manifest["detail"] is True
    all_status = statuses(dataset, period)

    def expected(s: Status) -> str | None:
        r = s.record
        if r.outcome.state == "invalid":
            return "invalid" if s.received else None
        if r.clock_type == "07":
            return "excluded" if s.received else None
        if s.stopped:
            return r.outcome.state
        if s.open:
            return "breached" if s.breached else "open"
        return "received" if s.received else None

    want = {s.record.referral_id: expected(s) for s in all_status}
    want = {k: v for k, v in want.items() if v is not None}
    report = tmp_path / CLOCK_CHANGE_WEEK / "england" / "report.xlsx"
    book = openpyxl.load_workbook(report, read_only=True)
    header = next(book["Detail"].iter_rows(max_row=1, values_only=True))
    book.close()
    assert header[0] == "Referral id"
    assert not any("patient" in str(h).lower() for h in header)
    rows = sheet_rows(report, "Detail")
    assert {row[0]: row[9] for row in rows} == want
    assert len(rows) == len(want)
    sample = rows[len(rows) // 2]
    record = dataset.by_id[sample[0]]
    assert sample[1:5] == (record.clock_type, record.region, record.icb, record.provider)
    # Regional files hold their own region's clocks only.
    london = sheet_rows(tmp_path / CLOCK_CHANGE_WEEK / "Y56" / "report.xlsx", "Detail")
    assert {row[0] for row in london} == {k for k in want if dataset.by_id[k].region == "Y56"}
    # No patient reference (as sent, or as pseudonymised in the audit log) in any file: each
    # of the data set's contains one of these shapes, and no file holds any of them.
    assert len(dataset.patient_refs) > 100
    assert all(PATIENT_REF.search(ref) for ref in dataset.patient_refs)
    for name, text in all_text(tmp_path):
        assert PATIENT_REF.search(text) is None, (name, PATIENT_REF.search(text))
        assert "patient_ref" not in text, name


def test_detail_is_refused_with_publication(dataset: Dataset, tmp_path: Path) -> None:
    from streams.errors import InputError

    with pytest.raises(InputError, match="--publication"):
        run_export(dataset, parse_week("2026-W42", LONDON), tmp_path, detail=True, publication=True)
    assert not (tmp_path / "2026-W42").exists()


def test_manifest_checksums_and_a_rerun_replaces_the_period(
    dataset: Dataset, tmp_path: Path
) -> None:
    import hashlib

    period = parse_week("2026-W42", LONDON)
    first = run_export(dataset, period, tmp_path)
    directory = tmp_path / "2026-W42"
    files = tree(directory)
    assert sorted(first["files"]) == [f for f in files if f != "manifest.json"]
    for name, entry in first["files"].items():
        data = (directory / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        if name.endswith(".csv"):
            assert entry["rows"] == len(read_csv(directory / name))
        else:
            assert set(entry["rows"]) == set(SHEETS)
            assert entry["rows"]["Provider"] == len(sheet_rows(directory / name, "Provider"))
    (directory / "stray.txt").write_text("from an older run")
    (directory / "england" / "old.csv").write_text("x")
    second = run_export(dataset, period, tmp_path)
    assert tree(directory) == files  # replaced whole: strays gone
    assert [p.name for p in tmp_path.iterdir()] == ["2026-W42"]  # no staging left behind
    csvs = {k: v["sha256"] for k, v in second["files"].items() if k.endswith(".csv")}
    assert csvs == {k: v["sha256"] for k, v in first["files"].items() if k.endswith(".csv")}


def test_a_failed_run_leaves_the_previous_export_untouched(
    dataset: Dataset, tmp_path: Path
) -> None:
    period = parse_week("2026-W42", LONDON)
    run_export(dataset, period, tmp_path)
    before = {
        name: (tmp_path / "2026-W42" / name).read_bytes() for name in tree(tmp_path / "2026-W42")
    }

    def fail_midway(message: str) -> None:
        if "(4/" in message:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export_period(dataset.url, period, tmp_path, rules=RULES, progress=fail_midway)
    after = {
        name: (tmp_path / "2026-W42" / name).read_bytes() for name in tree(tmp_path / "2026-W42")
    }
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["2026-W42"]


def test_region_option_limits_the_areas(dataset: Dataset, tmp_path: Path) -> None:
    from streams.errors import InputError

    period = parse_week("2026-W41", LONDON)
    manifest = run_export(dataset, period, tmp_path, areas=["Y56", "unknown"])
    assert manifest["areas"] == ["Y56", "unknown"]
    assert sorted(p.name for p in (tmp_path / "2026-W41").iterdir()) == [
        "Y56",
        "manifest.json",
        "unknown",
    ]
    with pytest.raises(InputError, match="no such region"):
        run_export(dataset, period, tmp_path, areas=["Y99"])


# -- tests: the command and the schedule ----------------------------------------------------------


def test_command_writes_the_week_and_reports_progress(dataset: Dataset, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        export,
        ["--week", "2026-w44", "--region", "y63", "--region", "England", "--out", str(tmp_path),
         "--database-url", dataset.url, "--publication"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "export 2026-W44: Y63 (1/2)" in result.stderr
    assert "wrote 4 files" in result.stderr
    assert sorted(p.name for p in (tmp_path / "2026-W44").iterdir()) == [
        "Y63",
        "england",
        "manifest.json",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--week", "2026-W54"], "2026 has no ISO week 54"),
        (["--week", "2026-W43", "--month", "2026-10"], "exactly one of"),
        ([], "exactly one of"),
        (["--month", "2026-13"], "not a calendar month"),
        (
            ["--week", "2026-W43", "--publication", "--detail"],
            "--detail cannot go with --publication",
        ),
    ],
)
def test_command_refuses_bad_usage(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(export, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("today", "week"),
    [
        ("2026-10-26", "2026-W43"),  # the Monday after BST ends: the 169-hour week
        ("2026-11-01", "2026-W43"),  # any day of a week gives the week before it
        ("2027-01-04", "2026-W53"),  # across a year end, into a 53-week year
        ("2026-01-05", "2026-W01"),  # 2026-W01 began on Monday 29 December 2025
        ("2027-03-29", "2027-W12"),  # the Monday after BST starts
    ],
)
def test_export_last_week_helper_picks_the_previous_iso_week(
    tmp_path: Path, today: str, week: str
) -> None:
    fake = tmp_path / "crisiswatch"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "CRISISWATCH_BIN": str(fake), "CRISISWATCH_EXPORT_TODAY": today}
    result = subprocess.run(
        [REPO / "scripts" / "export-last-week", "--out", str(tmp_path / "x"), "--publication"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "export",
        "--week",
        week,
        "--out",
        str(tmp_path / "x"),
        "--publication",
    ]
    (tmp_path / "x" / week).mkdir(parents=True)
    (tmp_path / "x" / week / "manifest.json").write_text("{}")
    again = subprocess.run(
        [REPO / "scripts" / "export-last-week", "--if-missing", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert again.returncode == 0
    assert again.stdout == ""
    assert "nothing to do" in again.stderr


def test_schedules_run_monday_0600_london_and_never_overlap() -> None:
    cron = (REPO / "deploy" / "cron" / "crisiswatch-export.cron").read_text()
    assert "\nCRON_TZ=Europe/London\n" in cron
    jobs = [line.split(None, 6) for line in cron.splitlines() if line[:1].isdigit()]
    assert jobs[0][:5] == ["0", "6", "*", "*", "1"]
    assert all("flock -n" in job[6] and "scripts/export-last-week" in job[6] for job in jobs)
    assert all("--if-missing" in job[6] for job in jobs[1:])  # catch-ups only fill a gap
    cronjob = (REPO / "deploy" / "kubernetes" / "export-cronjob.yaml").read_text()
    for line in (
        'schedule: "0 6 * * 1"',
        "timeZone: Europe/London",
        "concurrencyPolicy: Forbid",
        "secretKeyRef:",
        "name: CRISISWATCH_DATABASE_URL",
        "scripts/export-last-week",
    ):
        assert line in cronjob, line
