"""`crisiswatch bench`: the whole harness end to end at tiny sizes, and its pure parts.

The end-to-end test runs the installed entry point as an operator would, against the test
PostgreSQL server, the embedded broker and real worker processes, with hidden `--size`
overrides small enough to finish in about half a minute. It checks the figures are there
and sane (not their values: this machine is shared), and that the table is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks.harness import QUICK, REQUIRED_KEYS, Sizes
from benchmarks.live import _attribute, lag_events_per_clock, lag_plan, percentile, warm_up_id
from streams.engine import Clock, Rules
from streams.engine.outcome import AT_RISK, BREACHED, CLOCK_UCR
from streams.pseudonym import Pseudonymiser, may_contain
from tests.conftest import SERVER
from tests.support import crisiswatch

TINY = (
    "throughput_events=2000",
    "batch_size=200",  # several batches, so the worker's rate can be timed
    "lag_clocks=1000",
    "lag_window_s=3",
    "lag_margin_s=3",
    "latency_duration_s=6",
    "latency_backlog_hours=0.1",
    "memory_clocks=20000",
    "sink_events=2000",
    "replay_days=1",
)


@pytest.mark.integration
def test_bench_end_to_end_at_tiny_sizes(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = [crisiswatch(), "bench", "--quick", "--json", str(out), "--database-url", SERVER]
    for size in TINY:
        args += ["--size", size]
    env = {**os.environ, "CRISISWATCH_BENCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=420, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))

    for key in REQUIRED_KEYS:
        assert result[key] > 0, key
    assert result["mode"] == "quick"
    assert result["sizes"]["lag_clocks"] == 1000
    assert result["sizes"]["memory_clocks"] == [20000]
    machine = result["machine"]
    assert machine["cores"] >= 1
    assert machine["ram_bytes"] > 0
    assert machine["cpu"]
    assert machine["python"].startswith("3.")
    assert machine["postgresql"][:2].isdigit()
    assert machine["broker"].startswith("Tansu ")

    # Throughput: the worker does far more per event than a bare consumer.
    assert result["throughput_events"] == 2000
    assert 0 < result["worker_events_per_second"] < result["raw_events_per_second"]
    assert 0 < result["throughput_ratio"] < 1

    # Breach lag: every clock ingested in time is measured; none is lost.
    assert result["lag_open_clocks"] == 1000
    assert result["lag_clocks_missing"] == 0
    assert result["lag_clocks_discarded"] < 500
    assert result["lag_clocks_measured"] + result["lag_clocks_discarded"] == 1000
    lag = (
        result["breach_lag_p50_seconds"],
        result["breach_lag_p99_seconds"],
        result["breach_lag_max_seconds"],
    )
    assert 0 <= lag[0] <= lag[1] <= lag[2] < 10

    # Latency at 10x the peak: the rate is what was asked, and outcomes came back.
    assert 0.1 < result["peak_events_per_second"] < 1  # England's busiest hour, ~0.2-0.4/s
    target = result["latency_target_events_per_second"]
    assert target == pytest.approx(10 * result["peak_events_per_second"], rel=0.01)
    assert result["latency_events_per_second"] == pytest.approx(target, rel=0.25)
    assert result["latency_samples"] >= 1
    assert 0 < result["latency_p50_seconds"] <= result["latency_p99_seconds"] < 10

    # Memory: a clock is hundreds of bytes, not tens or tens of thousands.
    assert 200 < result["memory_bytes_per_open_clock"] < 10_000
    assert result["memory_bytes_per_open_clock_20000"] == result["memory_bytes_per_open_clock"]
    assert result["memory_breakdown"]["total"] > 200

    # Sink and replay.
    assert result["sink_events"] == 2000
    assert 0 < result["sink_audit_rows"] <= 2000
    assert result["sink_rows_per_second"] > result["sink_events_per_second"] > 0
    assert result["replay_events"] > 5000
    assert result["replay_over_parse_only"] > 1

    # The Markdown table is printed, one row per measurement, and kept in the JSON.
    table = done.stdout
    assert "| measure | value | target / notes |" in table
    for row in (
        "worker throughput / raw consume",
        "breach-detection lag p50 / p99 / max (1,000 open clocks",
        "event -> outcome latency p50 / p99 at 10x England's peak",
        "memory per open clock, 20,000 open clocks",
        "PostgreSQL sink",
        "replay (",
    ):
        assert row in table, row
    assert result["markdown"] in table
    assert f"**{result['throughput_ratio']:.3f}**" in table


def test_bench_size_override_is_checked() -> None:
    done = subprocess.run(
        [crisiswatch(), "bench", "--size", "no_such_size=1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("crisiswatch: --size 'no_such_size=1'")
    assert "Traceback" not in done.stderr


def test_sizes_replace() -> None:
    sizes = QUICK.replace(["lag_clocks=5", "memory_clocks=10,20", "replay_start=2025-02-01"])
    assert isinstance(sizes, Sizes)
    assert sizes.lag_clocks == 5
    assert sizes.memory_clocks == (10, 20)
    assert sizes.replay_start.isoformat() == "2025-02-01"
    assert sizes.throughput_events == QUICK.throughput_events


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([3.0, 1.0, 2.0], 50, 2.0),  # nearest rank: the 2nd of 3
        ([float(v) for v in range(1, 101)], 99, 99.0),  # the 99th of 100
        ([float(v) for v in range(1, 101)], 100, 100.0),
        ([5.0], 99, 5.0),  # one value is every percentile
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_lag_plan_puts_each_threshold_in_the_window() -> None:
    rules = Rules()
    plan = lag_plan(100, t0=1_800_000_000, window_s=10, rules=rules)
    assert len(plan.lines) == lag_events_per_clock(100)
    instants = [instant for instant, _ in plan.thresholds.values()]
    assert min(instants) == 1_800_000_000
    assert max(instants) < 1_800_000_010
    targets = [target for _, target in plan.thresholds.values()]
    assert targets.count(AT_RISK) == targets.count(BREACHED) == 50
    # The received event's time is the clock start the engine derives the threshold from.
    first = json.loads(plan.lines[0][1])
    assert first["type"] == "referral.received"
    assert first["time"] == "2027-01-15T06:30:00Z"  # 90 minutes before t0
    start = 1_800_000_000 - rules.ucr_at_risk_seconds
    assert Clock.thresholds(rules, CLOCK_UCR, start)[0] == 1_800_000_000


def test_latency_attribution() -> None:
    sent = [(10.0, "A"), (11.0, "B"), (12.0, "A"), (20.0, "C")]
    records = [
        (9.0, "A", "waiting"),  # read before the window: not a sample
        (10.4, "A", "waiting"),  # A's first event: 0.4 s
        (11.2, "B", "waiting"),  # 0.2 s
        (11.5, "B", "waiting"),  # a second outcome after the same event: counted once
        (12.3, "A", "met"),  # A's second event: 0.3 s
        (20.5, "C", "at_risk"),  # C is excluded (a threshold in the window)
        (30.0, "D", "waiting"),  # no event of D was sent
    ]
    samples = _attribute(sent, records, excluded={"C"}, since=10.0)
    assert samples == pytest.approx([0.4, 0.2, 0.3])


def test_bench_ids_are_never_taken_for_nhs_numbers() -> None:
    # An id the codec pseudonymises comes back under another name: the bench would wait for
    # an outcome that never arrives under the id it knows. The warm-up id once held the epoch
    # second in decimal, a valid NHS number about one time in eleven.
    scrub = Pseudonymiser(b"k").scrub
    start = 1_795_493_000  # 2026-11-24; a day of seconds on either side
    decimal = [f"WARM-{t}" for t in range(start - 86_400, start + 86_400)]
    assert sum(scrub(rid) != rid for rid in decimal) > 10_000  # the old ids: the control
    for t in range(start - 86_400, start + 86_400):
        assert not may_contain(warm_up_id(t).encode())
    plan = lag_plan(3_000, t0=start, window_s=60, rules=Rules())
    for _, line in plan.lines:
        assert not may_contain(line), line
