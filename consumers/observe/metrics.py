"""Prometheus adapter: the pipeline's state as metrics (CONTRACT section 4), and the worker's
`/metrics`, `/health` and `/ready` endpoints.

Read at scrape time
-------------------
`PipelineCollector` is a custom collector (client_python's "custom collector" pattern): it
holds no metric objects the pipeline must remember to update. Every scrape reads

* open clocks from `Engine.open_counts()` (kept exact incrementally by the engine), so the
  gauge is never stale: a clock that turned at risk a second ago is counted as at risk now;
* counters from `Pipeline.stats` (`Stats`: monotonic counters the pipeline keeps anyway);
* the two histograms from `Stats.waits` and `Stats.write_seconds`, lists the pipeline appends
  to and this module *drains* into cumulative bucket counts. `MetricsServer` also drains them
  every few seconds, so the lists stay small when nobody scrapes.

Everything runs on the worker's asyncio loop (aiohttp handlers and Faust agents alike), so the
collector reads the pipeline's plain Python state without locks.

Labels and the series budget
----------------------------
No label carries a referral, event, contact or patient identifier. Every label value comes from
a closed set, so the number of series per worker is bounded whatever the input says:

* `pathway`: `ucr_2h`, `reablement_2d` (anything else: `unknown`);
* `region`: the 7 NHS England regions, or `unknown`;
* `icb`: the 42 ICBs of `streams.geography`, or `unknown`. An ICB is kept only with its own
  region: a code not in the reference list, or one sent with another region, is counted under
  `icb="unknown"` in the region the engine judged it in (regional totals stay exact and equal
  to the outcomes; only ICB detail of contradictory input is lost). Places are therefore the
  42 ICBs plus 8 (region-or-unknown, `unknown`) pairs: 50;
* `state`: `waiting`, `at_risk`, `breached`; `result`: `met`, `not_met`;
* `type`: the 4 event types; `reason`: the 7 codec rejection reasons (anything else would
  count as `unknown`).

Every valid label set is pre-set to 0 (Prometheus' "avoid missing metrics"): every family
has its samples from the first scrape of a fresh worker, whether or not it has seen an event,
so "zero" never looks like "absent" to a query or an alert, and `rate()` counts the first
increment. The valid sets are closed and small; the collector builds them once
(`_valid_places`). A label set outside them (an `unknown` pathway, type or reason) appears
once seen and stays.

Series (sample lines) per worker: the "valid" column is what every worker exports from its
first scrape; the cap holds for any input (3 pathway values instead of 2, `unknown` type and
reason):

    metric                                   labels                       valid   cap
    crisiswatch_open_clocks                  2 pathways x 50 places x 3     300   450
    crisiswatch_clocks_stopped_total         2 x 50 x 2 results             200   300
    crisiswatch_referrals_received_total     2 x 50                         100   150
    crisiswatch_clock_wait_seconds           2 x 8 regions x 14 samples     224   336
    crisiswatch_breaches_withdrawn_total     2 x 8                           16    24
    crisiswatch_events_total                 4 types                          4     5
    crisiswatch_events_rejected_total        7 reasons                        7     8
    crisiswatch_postgres_write_seconds       14 samples                      14    14
    5 process gauges (up, partitions, in flight, last event, last write)      5     5
    crisiswatch_process_* (client_python ProcessCollector, Linux)        <= 10   <= 10
    total                                                                 <= 880 <= 1,302

`SERIES_BUDGET` (1,500) is the stated budget; tests drive every valid combination and
adversarial codes and check the count stays within it. A series that falls to zero is still
exported (as 0), so backlog graphs do not break up.

Timestamps that are not known yet (no event accepted, nothing written) are absent rather than
0, so "age of the last event" alerts never see a 1970 timestamp; they are the only samples a
fresh worker lacks. A restarted worker knows the newest event at once: the pipeline reads the
newest stored event time of the partitions it is assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Final, Protocol, TypeVar

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from consumers.observe.stats import Stats
from streams import names
from streams.codec import REASONS
from streams.engine import Engine, Rules
from streams.engine.event import EVENT_TYPES, PATHWAYS, UNKNOWN
from streams.engine.outcome import MET, NOT_MET, OPEN_STATES
from streams.errors import ConfigurationError
from streams.geography import region_by_icb, regions

log = logging.getLogger("crisiswatch.metrics")

SERIES_BUDGET: Final = 1500  # sample lines per worker (module docstring)
# Upper bounds of one PostgreSQL batch transaction, in seconds (retries included).
POSTGRES_WRITE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DRAIN_INTERVAL: Final = 5.0  # seconds between drains of Stats' sample lists with no scrape

Key = TypeVar("Key", bound=tuple[str, ...])


class Watched(Protocol):
    """What the collector reads of a pipeline (`consumers.live.pipeline.Pipeline`)."""

    stats: Stats
    engine: Engine
    joined: bool  # has completed an assignment (possibly of no partitions)

    @property
    def partitions(self) -> frozenset[int]: ...

    @property
    def draining(self) -> bool: ...


class _Unwatched:
    """What the server's collector reads before the worker's pipeline exists (while it
    connects to PostgreSQL): no clocks, no counts, no partitions. Every family still has its
    samples, at 0, from the first scrape."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.engine = Engine(Rules())
        self.joined = False

    @property
    def partitions(self) -> frozenset[int]:
        return frozenset()

    @property
    def draining(self) -> bool:
        return False


# -- closed label sets ---------------------------------------------------------------------------


def _closed(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else UNKNOWN


@lru_cache(maxsize=256)
def _region(region: str) -> str:
    return region if region in regions() else UNKNOWN


@lru_cache(maxsize=4096)  # bounded: input may carry any number of bogus codes
def _place(region: str, icb: str) -> tuple[str, str]:
    """(region, icb) label values: known codes only, an ICB only with its own region."""
    region = _region(region)
    return region, icb if region_by_icb().get(icb) == region else UNKNOWN


@lru_cache(maxsize=1)
def _valid_places() -> tuple[tuple[str, str], ...]:
    """Every valid (region, icb) label pair: each ICB in its own region, and each region (and
    `unknown`) with `icb="unknown"`."""
    own = {(region, icb) for icb, region in region_by_icb().items()}
    unplaced = {(region, UNKNOWN) for region in [*regions(), UNKNOWN]}
    return tuple(sorted(own | unplaced))


def _valid_regions() -> tuple[str, ...]:
    return (*sorted(regions()), UNKNOWN)


def _zeros(*dimensions: Iterable[tuple[str, ...]]) -> Counter[tuple[str, ...]]:
    """A counter holding 0 for every combination of the dimensions' label tuples."""
    keys = [sum(parts, ()) for parts in itertools.product(*dimensions)]
    return Counter(dict.fromkeys(keys, 0))


class _Histogram:
    """Cumulative bucket counts, sum and count per label set (client_python's semantics)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        le: list[str] = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self._le = [*le, "+Inf"]
        self._counts: dict[tuple[str, ...], list[int]] = {}  # per bucket, not cumulative
        self._sums: dict[tuple[str, ...], float] = {}

    def preset(self, labels: tuple[str, ...]) -> list[int]:
        """The bucket counts of `labels`, created at 0 if new."""
        counts = self._counts.get(labels)
        if counts is None:
            counts = self._counts[labels] = [0] * (len(self.bounds) + 1)
            self._sums[labels] = 0.0
        return counts

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts = self.preset(labels)
        counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self._sums[labels] += value

    def family(self, name: str, documentation: str, labels: Sequence[str]) -> Metric:
        family = HistogramMetricFamily(name, documentation, labels=list(labels))
        for key in sorted(self._counts):
            running = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(self._le, self._counts[key], strict=True):
                running += count
                buckets.append((le, running))
            family.add_metric(list(key), buckets, self._sums[key])
        return family


# -- the collector -------------------------------------------------------------------------------


class PipelineCollector(Collector):
    """The pipeline's metrics, read at scrape time (module docstring)."""

    def __init__(self, pipeline: Watched, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.pipeline = pipeline
        self._waits = _Histogram(names.CLOCK_WAIT_BUCKETS)
        self._writes = _Histogram(POSTGRES_WRITE_BUCKETS)
        pathways = [(p,) for p in PATHWAYS]
        regional = [(r,) for r in _valid_regions()]
        for pathway, region in itertools.product(PATHWAYS, _valid_regions()):
            self._waits.preset((pathway, region))
        self._writes.preset(())
        # Label sets pre-set to 0 (module docstring); label sets seen are added, never removed.
        self._open = _zeros(pathways, _valid_places(), [(s,) for s in OPEN_STATES])
        self._stopped = _zeros(pathways, _valid_places(), [(MET,), (NOT_MET,)])
        self._received = _zeros(pathways, _valid_places())
        self._withdrawn = _zeros(pathways, regional)
        if registry is not None:
            registry.register(self)

    def drain(self) -> None:
        """Move the samples the pipeline appended since the last call into the histograms."""
        stats = self.pipeline.stats
        # Slice-and-delete rather than swapping the list: an append made meanwhile (were the
        # pipeline ever on another thread) lands after the slice and waits for the next drain.
        waits = stats.waits
        taken = len(waits)
        for pathway, region, wait in waits[:taken]:
            self._waits.observe((_closed(pathway, PATHWAYS), _region(region)), wait)
        del waits[:taken]
        writes = stats.write_seconds
        taken = len(writes)
        for duration in writes[:taken]:
            self._writes.observe((), duration)
        del writes[:taken]

    def describe(self) -> Iterable[Metric]:
        # Families without samples: lets the registry check names without draining anything.
        return [
            GaugeMetricFamily(names.OPEN_CLOCKS, ""),
            CounterMetricFamily(names.CLOCKS_STOPPED, "", labels=[]),
            HistogramMetricFamily(names.CLOCK_WAIT, "", labels=[]),
            CounterMetricFamily(names.REFERRALS_RECEIVED, "", labels=[]),
            CounterMetricFamily(names.EVENTS, "", labels=[]),
            CounterMetricFamily(names.EVENTS_REJECTED, "", labels=[]),
            CounterMetricFamily(names.BREACHES_WITHDRAWN, "", labels=[]),
            GaugeMetricFamily(names.LAST_EVENT_TIMESTAMP, ""),
            GaugeMetricFamily(names.WORKER_UP, ""),
            GaugeMetricFamily(names.PARTITIONS_OWNED, ""),
            GaugeMetricFamily(names.LAST_POSTGRES_WRITE_TIMESTAMP, ""),
            GaugeMetricFamily(names.EVENTS_IN_FLIGHT, ""),
            HistogramMetricFamily(names.POSTGRES_WRITE, "", labels=[]),
        ]

    def collect(self) -> Iterator[Metric]:
        self.drain()
        pipeline = self.pipeline
        stats = pipeline.stats

        opened = Counter(dict.fromkeys(self._open, 0))
        for (pathway, region, icb, state), count in pipeline.engine.open_counts().items():
            opened[(_closed(pathway, PATHWAYS), *_place(region, icb), state)] += count
        self._open.update(dict.fromkeys(opened, 0))  # remember label sets seen
        yield _gauge(
            names.OPEN_CLOCKS,
            "Open clocks now, by live state (waiting, at_risk, breached).",
            ["pathway", "region", "icb", "state"],
            opened,
        )

        stopped = Counter(self._stopped)
        for (pathway, region, icb, state), count in stats.stopped.items():
            # The pipeline counts only met / not_met stops (clock types 05 and 06).
            stopped[(_closed(pathway, PATHWAYS), *_place(region, icb), state)] += count
        yield _counter(
            names.CLOCKS_STOPPED,
            "Clocks stopped, by result (met / not_met; clock types 05 and 06).",
            ["pathway", "region", "icb", "result"],
            stopped,
        )

        yield self._waits.family(
            names.CLOCK_WAIT, "Wait of stopped clocks (met / not_met).", ["pathway", "region"]
        )

        received = Counter(self._received)
        for (pathway, region, icb), count in stats.received.items():
            received[(_closed(pathway, PATHWAYS), *_place(region, icb))] += count
        yield _counter(
            names.REFERRALS_RECEIVED,
            "Referrals received.",
            ["pathway", "region", "icb"],
            received,
        )

        events: Counter[tuple[str]] = Counter(dict.fromkeys([(t,) for t in EVENT_TYPES], 0))
        for kind, count in stats.events.items():
            events[(_closed(kind, EVENT_TYPES),)] += count
        yield _counter(names.EVENTS, "Accepted events (repeats excluded).", ["type"], events)

        rejected: Counter[tuple[str]] = Counter(dict.fromkeys([(r,) for r in REASONS], 0))
        for reason, count in stats.rejected.items():
            rejected[(_closed(reason, REASONS),)] += count
        yield _counter(names.EVENTS_REJECTED, "Rejected events (to the DLQ).", ["reason"], rejected)

        withdrawn = Counter(self._withdrawn)
        for (pathway, region), count in stats.withdrawn.items():
            withdrawn[(_closed(pathway, PATHWAYS), _region(region))] += count
        yield _counter(
            names.BREACHES_WITHDRAWN,
            "Provisional breaches withdrawn by late-recorded contacts.",
            ["pathway", "region"],
            withdrawn,
        )

        if stats.last_event_time is not None:
            yield GaugeMetricFamily(
                names.LAST_EVENT_TIMESTAMP,
                "Event time of the newest accepted event (data freshness).",
                value=stats.last_event_time,
            )
        yield GaugeMetricFamily(names.WORKER_UP, "1 while the worker process runs.", value=1)
        yield GaugeMetricFamily(
            names.PARTITIONS_OWNED,
            "Partitions of the events topic this worker owns.",
            value=len(pipeline.partitions),
        )
        if stats.last_write is not None:
            yield GaugeMetricFamily(
                names.LAST_POSTGRES_WRITE_TIMESTAMP,
                "Wall-clock time of the last committed PostgreSQL transaction.",
                value=stats.last_write,
            )
        yield GaugeMetricFamily(
            names.EVENTS_IN_FLIGHT,
            "Events of the batch being processed now.",
            value=stats.in_flight,
        )
        yield self._writes.family(
            names.POSTGRES_WRITE, "Duration of one batch transaction (retries included).", []
        )


def _counter(name: str, documentation: str, labels: list[str], values: Counter[Key]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key in sorted(values):
        family.add_metric(list(key), values[key])
    return family


def _gauge(name: str, documentation: str, labels: list[str], values: Counter[Key]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key in sorted(values):
        family.add_metric(list(key), values[key])
    return family


def new_registry(pipeline: Watched | None = None) -> CollectorRegistry:
    """A worker's registry: process metrics (`crisiswatch_process_*`) and, given one, a
    pipeline's metrics. No default-registry globals: each worker serves its own."""
    registry = CollectorRegistry()
    ProcessCollector(namespace="crisiswatch", registry=registry)
    if pipeline is not None:
        PipelineCollector(pipeline, registry=registry)
    return registry


# -- the HTTP endpoints --------------------------------------------------------------------------


class MetricsServer:
    """`/metrics`, `/health` and `/ready` on one port, served by aiohttp on the running loop.

    `/health` is 200 while the process runs (liveness). `/ready` (readiness) is 200 from the
    pipeline's first assignment, whether it was given partitions (their clocks restored) or
    none (a standby, beyond the partition count), until it drains; 503 before (connecting,
    joining the group, restoring) and from the drain on. It stays 200 through later
    rebalances: a rebalance moves partitions, it does not make a worker less able to take
    them. `start()` binds (port 0: a free port) and returns the port; `watch(pipeline)`
    points the collector at the pipeline.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9464,
        registry: CollectorRegistry | None = None,
        *,
        drain_interval: float = DRAIN_INTERVAL,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry if registry is not None else new_registry()
        # Registered now, so the first scrape has every family, before any pipeline exists.
        self.collector = PipelineCollector(_Unwatched(), registry=self.registry)
        self.ready: Callable[[], bool] = lambda: False
        self._drain_interval = drain_interval
        self._runner: web.AppRunner | None = None
        self._drainer: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            # asyncio wraps bind errors in a long message; the errno says it plainly.
            reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror
            raise ConfigurationError(
                f"--metrics-host/--metrics-port: cannot listen on {self.host}:{self.port}: {reason}"
            ) from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._drainer = asyncio.get_running_loop().create_task(self._drain_forever())
        log.info("metrics on %s/metrics (also /health, /ready)", self.url)
        return self.port

    def watch(self, pipeline: Watched) -> PipelineCollector:
        """Export this pipeline's metrics; ready from its first assignment to its drain."""
        self.collector.pipeline = pipeline
        self.ready = lambda: pipeline.joined and not pipeline.draining
        return self.collector

    async def stop(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _drain_forever(self) -> None:
        while True:
            await asyncio.sleep(self._drain_interval)
            self.collector.drain()

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _ready(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")
