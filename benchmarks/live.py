"""A real worker, live: breach-detection lag with many open clocks, and event -> outcome latency.

    .venv/bin/python -m benchmarks.live [--clocks 100000] [--window 60] [--duration 120]

One `crisiswatch worker` process on an embedded broker (4 partitions) and a scratch
PostgreSQL database; an `OutcomeCollector` reads `referral-outcomes` on its own thread and
stamps every record with the wall clock when it is read. Two measurements, in order, on the
same worker:

Breach-detection lag
--------------------
N open 2-hour clocks are planned so that one threshold instant of each falls in a window
that starts at T0, after the backlog will have been ingested: half cross *at risk* (received
90:00 before their instant), half *breached* (received 120:01 before), spread evenly over
`window` seconds (N / window clocks a second: a stress test far beyond national rates, where a
few clocks a minute cross). Each clock is a `referral.received`, a `referral.triaged` and, for
a third, a telephone contact (which does not stop it). T0 is chosen from the ingest rate
measured by the throughput run (1.5x the expected ingest time, plus a margin); the events are
published, and the worker ingests them and publishes each clock's first outcome (waiting, or
at risk). Then nothing more is published: the worker's 250 ms timer alone must notice each
threshold and publish the changed outcome.

Lag = (wall time the changed outcome is read from `referral-outcomes`) - (threshold instant).
Ingest time cannot leak in: a clock whose first outcome was read at or after its own
threshold (ingested too late) is discarded and counted (`lag_clocks_discarded`), never
measured. Thresholds are whole seconds (the engine's unit, STANDARDS R3), so a tick a quarter
of a second apart bounds the lag from below at about 0-0.25 s.

Event -> outcome latency at 10x England's peak hourly rate
----------------------------------------------------------
England's peak rate is the busiest clock hour (by arrival at the broker) of the simulated
national file (`SimulatedFile.peak_hour_events`, about 960 events in an hour of a January).
The simulator is run at speed 10 from a couple of hours before that hour: the hours before it
are published first as a backlog (ingested before the window opens, so the worker holds the
open clocks of the morning), then the lines from the peak hour on are published live, paced
to their simulated arrival times scaled so that exactly 10x the peak rate goes out over
`duration` seconds. Event times are moved by the same affine map to the wall clock, so the
events are "now". Latency = (wall time an outcome is read) - (wall time the event that caused
it was sent), for every event that changed an outcome (a receipt, the stopping visit, an
exclusion, a cancellation). An outcome is attributed to the latest event of its referral sent
before it was read; referrals with a threshold inside the window (whose outcome may come from
the timer) are left out.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from benchmarks import DEFAULT_SERVER
from benchmarks.replay import SimulatedFile, simulated_file
from benchmarks.report import report
from benchmarks.services import (
    WORKER_START_TIMEOUT_S,
    OutcomeCollector,
    Worker,
    committed,
    scratch_database,
    wait_committed,
    worker_process,
)
from benchmarks.worker import BATCH_SIZE, PARTITIONS, create_bench_topics
from consumers.kafka.publisher import EventPublisher
from consumers.local.embedded import EmbeddedBroker
from streams.engine import Clock, Rules
from streams.engine.outcome import AT_RISK, BREACHED, CLOCK_REABLEMENT, CLOCK_UCR
from streams.errors import ServiceError
from streams.names import EVENTS_TOPIC
from streams.simulation import SimulationConfig, icb_profiles, simulate

#: Multiple of England's peak hourly rate for the latency measurement (issue 8).
PEAK_MULTIPLE: Final = 10
#: Seconds between the (expected) end of an ingest and the first threshold or live event.
MARGIN_S: Final = 10.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _time(instant: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instant))


def _line(event_id: str, source: str, kind: str, instant: int, data: dict[str, Any]) -> bytes:
    return json.dumps(
        {"specversion": "1.0", "id": event_id, "source": source, "type": kind,
         "time": _time(instant), "datacontenttype": "application/json", "data": data},
        separators=(",", ":"),
    ).encode()  # fmt: skip


class Publisher:
    """Sends lines to `referral-events` and counts them (for `wait_committed`)."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher
        self.sent = 0

    def send(self, key: str, value: bytes) -> None:
        self._publisher.send(key, value)
        self.sent += 1

    def flush(self) -> None:
        self._publisher.flush()


class Tracker:
    """Outcome records read so far, folded per referral as they come in."""

    def __init__(self, collector: OutcomeCollector) -> None:
        self.collector = collector
        self.index = 0
        self.first: dict[str, tuple[float, str]] = {}  # referral -> (read at, state)
        self.reached: dict[tuple[str, str], float] = {}  # (referral, state) -> first read at

    def update(self) -> None:
        fresh = self.collector.records(self.index)
        self.index += len(fresh)
        first, reached = self.first, self.reached
        for read_at, referral_id, state in fresh:
            if referral_id not in first:
                first[referral_id] = (read_at, state)
            reached.setdefault((referral_id, state), read_at)

    def wait(self, done: Callable[[], bool], timeout_s: float, what: str, worker: Worker) -> bool:
        """Update until `done()`; False after `timeout_s` (the worker must stay up)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.update()
            if done():
                return True
            worker.check()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


# -- breach-detection lag --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LagPlan:
    t0: int
    thresholds: dict[str, tuple[int, str]]  # referral id -> (threshold instant, state after)
    lines: list[tuple[str, bytes]]  # (key, CloudEvent JSON)


def lag_events_per_clock(clocks: int) -> int:
    """How many events `lag_plan` makes for `clocks` clocks (2 each, 3 for every third)."""
    return 2 * clocks + (clocks + 2) // 3


def lag_plan(clocks: int, t0: int, window_s: float, rules: Rules) -> LagPlan:
    """Open 2-hour clocks with one threshold each in [t0, t0 + window) (module docstring)."""
    providers = [(p.code, p.icb) for icb in icb_profiles() for p in icb.providers]
    thresholds: dict[str, tuple[int, str]] = {}
    lines: list[tuple[str, bytes]] = []
    for number in range(clocks):
        instant = t0 + int(number * window_s / clocks)
        if number % 2 == 0:
            target, start = AT_RISK, instant - rules.ucr_at_risk_seconds
        else:
            target, start = BREACHED, instant - rules.ucr_limit_seconds - 1
        at_risk_at, breach_at = Clock.thresholds(rules, CLOCK_UCR, start)
        if (at_risk_at if target == AT_RISK else breach_at) != instant:
            raise AssertionError("lag plan disagrees with the engine's thresholds")
        rid = f"LAG-{number:07d}"
        thresholds[rid] = (instant, target)
        provider, icb = providers[number % len(providers)]
        source = f"urn:nhs:ods:{provider}"
        received = {"referral_id": rid, "pathway": "ucr_2h", "provider": provider, "icb": icb,
                    "referral_source": "gp", "condition": "falls"}  # fmt: skip
        lines.append((rid, _line(f"lag-{number}-r", source, "referral.received", start, received)))
        triage = {"referral_id": rid, "subject_to_standard": True}
        triaged_at = start + 60 + number % 240
        lines.append(
            (rid, _line(f"lag-{number}-t", source, "referral.triaged", triaged_at, triage))
        )
        if number % 3 == 0:
            call = {"referral_id": rid, "contact_id": f"{rid}-C1", "mode": "telephone",
                    "attended": True}  # fmt: skip
            lines.append(
                (rid, _line(f"lag-{number}-c", source, "referral.contact", start + 600, call))
            )
    return LagPlan(t0, thresholds, lines)


def breach_lag(
    publisher: Publisher,
    tracker: Tracker,
    url: str,
    worker: Worker,
    *,
    clocks: int,
    window_s: float,
    margin_s: float,
    ingest_rate_hint: float,
    rules: Rules,
) -> dict[str, Any]:
    """The lag measurement of the module docstring; figures as a dict."""
    events = lag_events_per_clock(clocks)
    expected_ingest_s = events / max(ingest_rate_hint, 100.0)
    # Building the lines takes about a second per 50,000 clocks.
    t0 = math.ceil(time.time() + margin_s + 1.5 * expected_ingest_s + clocks / 50_000)
    plan = lag_plan(clocks, t0, window_s, rules)
    began = time.time()
    for key, value in plan.lines:
        publisher.send(key, value)
    publisher.flush()
    published = time.time()
    end = t0 + window_s
    grace = 60 + window_s
    wanted = plan.thresholds
    # Ingest: every clock has its first outcome (and every event is committed).
    tracker.wait(
        lambda: all(rid in tracker.first for rid in wanted),
        max(30.0, end + grace - time.time()),
        "the first outcome of every lag clock",
        worker,
    )
    ingested = wait_committed(url, publisher.sent, worker, max(30.0, end + grace - time.time()))
    valid = {
        rid: threshold
        for rid, threshold in wanted.items()
        if rid in tracker.first and tracker.first[rid][0] < threshold[0]
    }
    tracker.wait(
        lambda: all((rid, target) in tracker.reached for rid, (_, target) in valid.items()),
        max(1.0, end + grace - time.time()),
        "every threshold outcome",
        worker,
    )
    lags: dict[str, list[float]] = {AT_RISK: [], BREACHED: []}
    for rid, (instant, target) in valid.items():
        read_at = tracker.reached.get((rid, target))
        if read_at is not None:
            lags[target].append(read_at - instant)
    every = lags[AT_RISK] + lags[BREACHED]
    if not every:
        raise ServiceError("breach lag: no clock was ingested before its threshold")
    return {
        "lag_open_clocks": clocks,
        "lag_window_seconds": window_s,
        "lag_crossings_per_second": round(clocks / window_s, 1),
        "lag_publish_seconds": round(published - began, 1),
        "lag_ingest_done_before_t0_seconds": round(t0 - ingested, 1),
        "lag_clocks_measured": len(every),
        "lag_clocks_discarded": len(wanted) - len(valid),
        "lag_clocks_missing": len(valid) - len(every),
        "breach_lag_p50_seconds": round(percentile(every, 50), 3),
        "breach_lag_p99_seconds": round(percentile(every, 99), 3),
        "breach_lag_max_seconds": round(max(every), 3),
        "lag_at_risk_p99_seconds": round(percentile(lags[AT_RISK], 99), 3)
        if lags[AT_RISK]
        else None,
        "lag_breached_p99_seconds": round(percentile(lags[BREACHED], 99), 3)
        if lags[BREACHED]
        else None,
    }


# -- event -> outcome latency ----------------------------------------------------------------


@dataclass(slots=True)
class LiveLine:
    arrival: float  # simulated arrival, epoch seconds
    time: float  # simulated event time
    key: str
    referral_id: str
    document: dict[str, Any]


@dataclass(slots=True)
class LatencyPlan:
    backlog: list[LiveLine] = field(default_factory=list)
    window: list[LiveLine] = field(default_factory=list)
    peak_start: float = 0.0


def latency_plan(peak: SimulatedFile, events: int, backlog_hours: float, seed: int) -> LatencyPlan:
    """Simulated lines at `PEAK_MULTIPLE`x England from `backlog_hours` before the peak hour."""
    peak_start = datetime.strptime(peak.peak_hour, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
    config = SimulationConfig(
        start=peak_start - timedelta(hours=backlog_hours),
        duration=timedelta(hours=backlog_hours + 3),
        speed=PEAK_MULTIPLE,
        seed=seed,
        bad_rate=0,
        duplicate_rate=0,
    )
    plan = LatencyPlan(peak_start=peak_start.timestamp())
    for line in simulate(config):
        document = json.loads(line.line)
        arrival = line.arrival.timestamp()
        item = LiveLine(
            arrival=arrival,
            time=datetime.fromisoformat(document["time"]).timestamp(),
            key=line.key or "",
            referral_id=document["data"]["referral_id"],
            document=document,
        )
        (plan.backlog if arrival < plan.peak_start else plan.window).append(item)
        if len(plan.window) >= events:
            break
    if len(plan.window) < events:
        raise AssertionError(f"the simulation gave {len(plan.window)} live lines of {events}")
    return plan


def _moved(line: LiveLine, origin: float, scale: float, to: float) -> bytes:
    """The line with its event time moved by the affine map origin -> to (scale)."""
    document = dict(line.document)
    document["time"] = _time(int(to + (line.time - origin) * scale))
    return json.dumps(document, separators=(",", ":")).encode()


def latency(
    publisher: Publisher,
    tracker: Tracker,
    url: str,
    worker: Worker,
    *,
    peak: SimulatedFile,
    duration_s: float,
    backlog_hours: float,
    margin_s: float,
    ingest_rate_hint: float,
    rules: Rules,
) -> dict[str, Any]:
    """The latency measurement of the module docstring; figures as a dict."""
    rate = peak.peak_events_per_second * PEAK_MULTIPLE
    count = max(2, round(rate * duration_s))
    plan = latency_plan(peak, count, backlog_hours, seed=808)
    origin = plan.peak_start
    scale = duration_s / max(plan.window[-1].arrival - origin, 1e-3)
    # The window opens once the backlog is in (1.5x its expected ingest, plus a margin).
    opens = time.time() + margin_s / 2 + 1.5 * len(plan.backlog) / max(ingest_rate_hint, 100.0)
    for line in plan.backlog:
        publisher.send(line.key, _moved(line, origin, scale, opens))
    publisher.flush()
    wait_committed(url, publisher.sent, worker, 60 + 10 * len(plan.backlog) / ingest_rate_hint)
    tracker.update()
    start = max(opens, time.time())
    payloads = [(line, _moved(line, origin, scale, opens)) for line in plan.window]
    sent: list[tuple[float, str]] = []  # (sent at, referral id)
    for line, value in payloads:
        due = start + (line.arrival - origin) * scale
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        sent.append((time.time(), line.referral_id))
        publisher.send(line.key, value)
        publisher.flush()
    finished = time.time()
    wait_committed(url, publisher.sent, worker, 120)
    time.sleep(1.0)  # outcomes are published before the commit; let the reader catch up
    excluded = _near_threshold(plan, origin, scale, opens, start - 2, finished + 5, rules)
    samples = _attribute(sent, tracker.collector.records(), excluded, since=start)
    if not samples:
        raise ServiceError("latency: no event changed an outcome during the window")
    return {
        "peak_hour": peak.peak_hour,
        "peak_hour_events": peak.peak_hour_events,
        "peak_events_per_second": round(peak.peak_events_per_second, 3),
        "latency_target_events_per_second": round(rate, 2),
        "latency_events_per_second": round(len(sent) / max(finished - start, 1e-3), 2),
        "latency_duration_seconds": duration_s,
        "latency_backlog_events": len(plan.backlog),
        "latency_events": len(sent),
        "latency_samples": len(samples),
        "latency_p50_seconds": round(percentile(samples, 50), 3),
        "latency_p99_seconds": round(percentile(samples, 99), 3),
        "latency_max_seconds": round(max(samples), 3),
    }


def _near_threshold(
    plan: LatencyPlan,
    origin: float,
    scale: float,
    to: float,
    low: float,
    high: float,
    rules: Rules,
) -> set[str]:
    """Referrals with any live threshold in [low, high]: their outcomes may be the timer's."""
    out: set[str] = set()
    for line in plan.backlog + plan.window:
        if line.document["type"] != "referral.received":
            continue
        start = int(to + (line.time - origin) * scale)
        instants = Clock.thresholds(rules, CLOCK_UCR, start) + Clock.thresholds(
            rules, CLOCK_REABLEMENT, start
        )
        if any(low <= instant <= high for instant in instants):
            out.add(line.referral_id)
    return out


def _attribute(
    sent: list[tuple[float, str]],
    records: Iterable[tuple[float, str, str]],
    excluded: set[str],
    since: float,
) -> list[float]:
    """Latencies: each outcome read after `since`, minus the latest send of its referral
    before it (once per send)."""
    by_referral: dict[str, list[float]] = {}
    for sent_at, rid in sent:
        by_referral.setdefault(rid, []).append(sent_at)
    used: set[tuple[str, int]] = set()
    samples: list[float] = []
    for read_at, rid, _ in records:
        if read_at < since or rid in excluded or rid not in by_referral:
            continue
        times = by_referral[rid]
        index = bisect.bisect_right(times, read_at) - 1
        if index < 0 or (rid, index) in used:
            continue
        used.add((rid, index))
        samples.append(read_at - times[index])
    return samples


# -- the run ---------------------------------------------------------------------------------


def warm_up_id(now: int) -> str:
    """The warm-up referral's id: the time in hex. (In decimal, a 10-digit epoch second is a
    valid NHS number about one time in eleven: the codec then pseudonymised the id, and the
    warm-up's outcome never came back under it: a "stall" of the whole timeout.)"""
    return f"WARM-{now:x}"


def measure(
    server: str,
    peak: SimulatedFile,
    *,
    clocks: int,
    window_s: float,
    duration_s: float,
    backlog_hours: float,
    ingest_rate_hint: float,
    margin_s: float = MARGIN_S,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """Both measurements on one worker (module docstring)."""
    rules = Rules()
    with (
        scratch_database(server, "live") as url,
        EmbeddedBroker() as broker,
    ):
        create_bench_topics(broker.bootstrap)
        with (
            OutcomeCollector(broker.bootstrap, PARTITIONS) as collector,
            EventPublisher(broker.bootstrap, EVENTS_TOPIC, linger_ms=1) as events,
            worker_process(broker.bootstrap, url, batch_size=batch_size, label="live") as worker,
        ):
            publisher = Publisher(events)
            tracker = Tracker(collector)
            # Warm-up: one referral through the whole path proves the worker is consuming.
            now = int(time.time())
            warm = warm_up_id(now)
            data = {"referral_id": warm, "pathway": "ucr_2h", "provider": "RX1"}
            publisher.send(
                warm, _line(f"warm-{now:x}", "urn:bench", "referral.received", now, data)
            )
            publisher.flush()
            if not tracker.wait(
                lambda: warm in tracker.first, WORKER_START_TIMEOUT_S, "warm-up", worker
            ):
                raise ServiceError(
                    f"no outcome of the warm-up event within {WORKER_START_TIMEOUT_S:g} s: the "
                    f"worker committed {committed(url)} event(s), the outcomes reader has read "
                    f"{len(collector)} record(s); see {worker.log}"
                )
            result = breach_lag(
                publisher, tracker, url, worker,
                clocks=clocks, window_s=window_s, margin_s=margin_s,
                ingest_rate_hint=ingest_rate_hint, rules=rules,
            )  # fmt: skip
            result.update(
                latency(
                    publisher,
                    tracker,
                    url,
                    worker,
                    peak=peak,
                    duration_s=duration_s,
                    backlog_hours=backlog_hours,
                    margin_s=margin_s,
                    ingest_rate_hint=ingest_rate_hint,
                    rules=rules,
                )
            )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clocks", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=60, help="seconds of thresholds")
    parser.add_argument("--duration", type=float, default=120, help="seconds of live events")
    parser.add_argument("--backlog-hours", type=float, default=2.25)
    parser.add_argument("--days", type=float, default=31, help="simulated days for the peak")
    parser.add_argument("--ingest-rate", type=float, default=3000, help="events/s expected")
    parser.add_argument("--database-url", default=DEFAULT_SERVER)
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args(argv)
    peak = simulated_file(date(2025, 1, 1), args.days)
    result = measure(
        args.database_url, peak,
        clocks=args.clocks, window_s=args.window, duration_s=args.duration,
        backlog_hours=args.backlog_hours, ingest_rate_hint=args.ingest_rate,
    )  # fmt: skip
    report(result, args.json)


if __name__ == "__main__":
    main()
