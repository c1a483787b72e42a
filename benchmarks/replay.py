"""Replay benchmark: `crisiswatch replay` throughput against the cost of parsing alone.

    .venv/bin/python -m benchmarks.replay [--events 1000000] [--json FILE]

Generates (once, cached under the system temp directory) a national-scale NDJSON file from
the simulator, then measures in the same run, on the same lines, read from the same file:

* parse only: `json.loads` of every line (the floor any JSON consumer pays);
* replay: codec (schema check, times, NHS-number scan) + engine + outcomes, i.e. `replay()`.

The headline is replay time / parse-only time (target: within 5x).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.report import report
from streams.codec import Codec
from streams.pseudonym import Pseudonymiser
from streams.replay import replay
from streams.simulation import SimulationConfig, simulate

# England's real rate gives roughly 4.5 events an hour per ... see the simulator; a year at
# speed 1 is about 4 million events. Generating by duration and stopping at N keeps it simple.
_YEAR = timedelta(days=365)


def national_file(events: int, seed: int = 2024) -> Path:
    path = Path(tempfile.gettempdir()) / f"crisiswatch-bench-{events}-{seed}.ndjson"
    if path.is_file():
        return path
    tmp = path.with_suffix(".tmp")
    start = datetime(2024, 4, 1, tzinfo=UTC)
    written = 0
    with tmp.open("w", encoding="utf-8") as out:
        for line in simulate(SimulationConfig(start=start, duration=_YEAR * 2, seed=seed)):
            out.write(line.line + "\n")
            written += 1
            if written >= events:
                break
    tmp.replace(path)
    return path


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
    codec = Codec(Pseudonymiser(b"benchmark-key-not-a-secret"))
    began = time.perf_counter()
    with path.open("rb") as source:
        result = replay(source, codec=codec)
    return time.perf_counter() - began, result.lines, len(result.outcomes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs of each")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    path = national_file(args.events)
    generate_s = time.perf_counter() - began
    parse_s, lines = min(parse_only(path) for _ in range(args.repeat))
    gc.collect()
    replay_s, replay_lines, referrals = min(replay_once(path) for _ in range(args.repeat))
    assert replay_lines == lines
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "events": lines,
        "referrals": referrals,
        "file_bytes": path.stat().st_size,
        "generate_seconds": round(generate_s, 2),
        "parse_only_seconds": round(parse_s, 3),
        "replay_seconds": round(replay_s, 3),
        "parse_only_events_per_second": round(lines / parse_s),
        "replay_events_per_second": round(lines / replay_s),
        "replay_over_parse_only": round(replay_s / parse_s, 2),
    }
    report(result, args.json)


if __name__ == "__main__":
    main()
