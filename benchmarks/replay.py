"""Replay benchmark: `crisiswatch replay` throughput against the cost of parsing alone.

    .venv/bin/python -m benchmarks.replay [--days 365 | --events N] [--json FILE]

Generates (once, cached: see `simulated_file`) an England-shaped NDJSON file from the
simulator at England's real rate, by default a national year from April 2024 (about 4
million events), then measures in the same run, on the same lines, read from the same file:

* parse only: `json.loads` of every line (the floor any JSON consumer pays);
* replay: codec (schema check, times, NHS-number scan) + engine + outcomes, i.e. `replay()`.

The headline is replay time / parse-only time (target: within 5x).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from benchmarks.report import report
from streams.codec import Codec
from streams.pseudonym import Pseudonymiser
from streams.replay import replay
from streams.runtime import tune_gc_for_batches
from streams.simulation import SimulationConfig, simulate

#: A national year: the financial year of the reference figures.
YEAR_START: Final = date(2024, 4, 1)
SEED: Final = 2024
#: Bump when the file format or its metadata change (the simulator's source is in the key).
_CACHE_VERSION: Final = 1


def cache_dir() -> Path:
    """Where generated files are kept between runs (`CRISISWATCH_BENCH_CACHE` overrides)."""
    override = os.environ.get("CRISISWATCH_BENCH_CACHE")
    path = Path(override) if override else Path(tempfile.gettempdir()) / "crisiswatch-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True, slots=True)
class SimulatedFile:
    """A cached simulator file and what was counted while writing it."""

    path: Path
    start: str  # first possible receipt, ISO 8601
    days: float
    lines: int
    bytes: int
    # The busiest clock hour by arrival time (when the events reach the broker) and its
    # events: England's peak hourly rate as the simulator models it.
    peak_hour: str
    peak_hour_events: int

    @property
    def peak_events_per_second(self) -> float:
        return self.peak_hour_events / 3600


def simulated_file(
    start: date = YEAR_START, days: float = 365, *, events: int | None = None, seed: int = SEED
) -> SimulatedFile:
    """England at its real rate for `days` from `start` (at most `events` lines), cached.

    The cache key holds the parameters and a digest of the simulator's source, so a changed
    simulator makes a new file rather than reusing a stale one.
    """
    from streams import simulation

    sources = hashlib.sha256()
    for module in sorted(Path(simulation.__file__).parent.glob("*.py")):
        sources.update(module.read_bytes())
    digest = sources.hexdigest()[:10]
    key = f"sim-v{_CACHE_VERSION}-{start:%Y%m%d}-{days:g}d-{events or 'all'}-s{seed}-{digest}"
    path = cache_dir() / f"{key}.ndjson"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return SimulatedFile(path=path, **meta)
    config = SimulationConfig(
        start=datetime.combine(start, datetime.min.time(), tzinfo=UTC),
        duration=timedelta(days=days),
        seed=seed,
    )
    hours: dict[int, int] = {}
    written = 0
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8", newline="\n") as out:
        for line in simulate(config):
            out.write(line.line + "\n")
            hour = int(line.arrival.timestamp()) // 3600
            hours[hour] = hours.get(hour, 0) + 1
            written += 1
            if events is not None and written >= events:
                break
    peak = max(hours, key=lambda h: (hours[h], -h))
    meta = {
        "start": start.isoformat(),
        "days": days,
        "lines": written,
        "bytes": tmp.stat().st_size,
        "peak_hour": datetime.fromtimestamp(peak * 3600, UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "peak_hour_events": hours[peak],
    }
    tmp.replace(path)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return SimulatedFile(path=path, **meta)


def parse_only(path: Path) -> tuple[float, int]:
    loads = json.loads
    count = 0
    began = time.perf_counter()
    with path.open("rb") as source:
        for line in source:
            try:  # noqa: SIM105 - contextlib.suppress costs more than the loop body
                loads(line)
            except ValueError:
                pass
            count += 1
    return time.perf_counter() - began, count


def replay_once(path: Path) -> tuple[float, int, int]:
    tune_gc_for_batches()  # as `crisiswatch replay` does
    codec = Codec(Pseudonymiser(b"benchmark-key-not-a-secret"))
    began = time.perf_counter()
    with path.open("rb") as source:
        result = replay(source, codec=codec)
    return time.perf_counter() - began, result.lines, len(result.outcomes)


def measure(file: SimulatedFile, repeat: int = 1) -> dict[str, Any]:
    """Parse-only and replay of `file`, best of `repeat` each."""
    parse_s, lines = min(parse_only(file.path) for _ in range(repeat))
    gc.collect()
    replay_s, replay_lines, referrals = min(replay_once(file.path) for _ in range(repeat))
    if replay_lines != lines:
        raise AssertionError(f"replay read {replay_lines} lines, parse-only {lines}")
    return {
        "replay_events": lines,
        "replay_referrals": referrals,
        "replay_file_bytes": file.bytes,
        "parse_only_seconds": round(parse_s, 3),
        "replay_seconds": round(replay_s, 3),
        "parse_only_events_per_second": round(lines / parse_s),
        "replay_events_per_second": round(lines / replay_s),
        "replay_over_parse_only": round(replay_s / parse_s, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--days", type=float, default=365, help="simulated days from April 2024")
    parser.add_argument("--events", type=int, default=None, help="stop the file at N lines")
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs of each")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    file = simulated_file(YEAR_START, args.days, events=args.events)
    result: dict[str, Any] = {
        "file": str(file.path),
        "generate_or_cache_seconds": round(time.perf_counter() - began, 2),
    }
    result.update(measure(file, args.repeat))
    report(result, args.json)


if __name__ == "__main__":
    main()
