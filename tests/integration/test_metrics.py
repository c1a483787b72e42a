"""Prometheus metrics: the collector over a real pipeline (fake store and sink), the series
budget, the absence of identifiers, the /metrics /health /ready server, and `promtool check
metrics` on a live worker's output (real broker, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumers.kafka.admin import create_topics
from consumers.live.pipeline import DeadLetter, Message, Pipeline
from consumers.local.embedded import EmbeddedBroker
from consumers.observe.metrics import SERIES_BUDGET, MetricsServer, PipelineCollector, new_registry
from consumers.store import Batch, migrate
from streams.codec import INTERNAL, REASONS, Codec
from streams.engine import Engine, Outcome, Rules
from streams.engine.event import EVENT_TYPES, PATHWAYS
from streams.errors import ConfigurationError
from streams.geography import icbs, regions
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from tests.support import crisiswatch, produce, wait_for

NOW = int(datetime(2026, 2, 10, 15, 0, tzinfo=UTC).timestamp())  # a Tuesday; London = UTC
MINUTE, HOUR, DAY = 60, 3600, 86400
ALLOWED_LABELS = {"pathway", "region", "icb", "state", "result", "reason", "type", "le"}


# -- fakes and a feed of CloudEvents -------------------------------------------------------------


class FakeStore:
    """PostgreSQL as the pipeline sees it: nothing stored before; writes kept in a list."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def acquire(self, topic: str, partitions: Sequence[int], owner: str) -> dict[int, int]:
        return dict.fromkeys(partitions, 1)

    async def leases(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        return dict.fromkeys(partitions, 1)

    async def positions(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        return {}

    async def open_clock_states(self, partitions: Sequence[int]) -> list[Any]:
        return []

    async def clock_states(self, referral_ids: Any) -> dict[str, Any]:
        return {}

    async def newest_event_time(self, partitions: Sequence[int]) -> int | None:
        return None

    async def write(self, batch: Batch) -> None:
        self.batches.append(batch)


class FakeSink:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.dead: list[DeadLetter] = []

    async def publish(self, outcomes: Sequence[Outcome], dead: Sequence[DeadLetter]) -> None:
        self.outcomes.extend(outcomes)
        self.dead.extend(dead)


class ManualClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def iso(instant: int) -> str:
    return datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Feed:
    """Builds CloudEvents and feeds them to a pipeline as consecutive Kafka offsets."""

    def __init__(self, pipeline: Pipeline, partitions: int = 2) -> None:
        self.pipeline = pipeline
        self.partitions = partitions
        self.offsets = [0] * partitions
        self.numbers = itertools.count(1)
        self.referrals: set[str] = set()
        self.event_ids: set[str] = set()
        self.contact_ids: set[str] = set()
        self.patient_refs: set[str] = set()
        self.pending: list[tuple[str | None, bytes]] = []

    def event(self, kind: str, referral: str, instant: int, **data: Any) -> bytes:
        event_id = f"ev-{next(self.numbers):06d}"
        self.event_ids.add(event_id)
        self.referrals.add(referral)
        if "contact_id" in data:
            self.contact_ids.add(data["contact_id"])
        if "patient_ref" in data:
            self.patient_refs.add(data["patient_ref"])
        document = {
            "specversion": "1.0",
            "id": event_id,
            "source": "urn:nhs:ods:RY7",
            "type": kind,
            "time": iso(instant),
            "data": {"referral_id": referral, **data},
        }
        raw = json.dumps(document).encode()
        self.pending.append((referral, raw))
        return raw

    def received(self, referral: str, instant: int, pathway: str, **place: str) -> None:
        self.event(
            "referral.received", referral, instant, pathway=pathway, provider="RY7",
            patient_ref=f"pt-{referral}", **place,
        )  # fmt: skip

    def contact(self, referral: str, instant: int) -> None:
        self.event(
            "referral.contact", referral, instant, contact_id=f"c-{referral}",
            mode="face_to_face", attended=True,
        )  # fmt: skip

    def raw(self, value: bytes) -> None:
        self.pending.append((None, value))

    def flush(self) -> None:
        messages = []
        for key, value in self.pending:
            partition = hash(key) % self.partitions if key is not None else 0
            messages.append(
                Message(partition, self.offsets[partition], key and key.encode(), value)
            )
            self.offsets[partition] += 1
        self.pending = []
        rewind = asyncio.run(self.pipeline.process(messages))
        assert rewind == {}


def new_pipeline(now: int = NOW) -> Pipeline:
    return Pipeline(
        engine=Engine(Rules()),
        codec=Codec(),
        store=FakeStore(),  # type: ignore[arg-type]
        sink=FakeSink(),
        topic=EVENTS_TOPIC,
        clock=ManualClock(now),
    )


@pytest.fixture
def pipeline() -> Pipeline:
    return new_pipeline()


@pytest.fixture
def registry(pipeline: Pipeline) -> CollectorRegistry:
    registry = CollectorRegistry()
    PipelineCollector(pipeline, registry=registry)
    return registry


def series(registry: CollectorRegistry) -> list[Any]:
    return [sample for family in registry.collect() for sample in family.samples]


# -- values ---------------------------------------------------------------------------------------

QYG = {"pathway": "ucr_2h", "region": "Y62", "icb": "QYG"}  # Cheshire and Merseyside, North West


def test_values_come_from_the_pipeline(pipeline: Pipeline, registry: CollectorRegistry) -> None:
    feed = Feed(pipeline)
    place = {"icb": "QYG"}  # the region is derived from the ICB
    feed.received("R-MET", NOW - 30 * MINUTE, "ucr_2h", **place)
    feed.contact("R-MET", NOW - 10 * MINUTE)  # 20 minutes: met
    feed.received("R-LATE", NOW - 5 * HOUR, "ucr_2h", **place)
    feed.contact("R-LATE", NOW - 5 * HOUR + 150 * MINUTE)  # 150 minutes: not met
    feed.received("R-RISK", NOW - 100 * MINUTE, "ucr_2h", **place)  # at risk
    feed.received("R-WAIT", NOW - 10 * MINUTE, "ucr_2h", **place)  # waiting
    feed.received("R-BREACH", NOW - 4 * HOUR, "ucr_2h", **place)  # provisionally breached
    repeat = feed.pending[-2][1]
    feed.raw(repeat)  # the same event id again: ignored, not counted
    feed.raw(b"this is not JSON")
    feed.flush()

    get = registry.get_sample_value
    assert get("crisiswatch_open_clocks", {**QYG, "state": "waiting"}) == 1
    assert get("crisiswatch_open_clocks", {**QYG, "state": "at_risk"}) == 1
    assert get("crisiswatch_open_clocks", {**QYG, "state": "breached"}) == 1
    assert get("crisiswatch_referrals_received_total", QYG) == 5
    assert get("crisiswatch_events_total", {"type": "referral.received"}) == 5
    assert get("crisiswatch_events_total", {"type": "referral.contact"}) == 2
    assert get("crisiswatch_events_total", {"type": "referral.cancelled"}) == 0
    assert get("crisiswatch_events_rejected_total", {"reason": "invalid_json"}) == 1
    assert get("crisiswatch_events_rejected_total", {"reason": "bad_time"}) == 0
    assert get("crisiswatch_clocks_stopped_total", {**QYG, "result": "met"}) == 1
    assert get("crisiswatch_clocks_stopped_total", {**QYG, "result": "not_met"}) == 1
    assert get("crisiswatch_breaches_withdrawn_total", {"pathway": "ucr_2h", "region": "Y62"}) == 0
    assert get("crisiswatch_last_event_timestamp_seconds") == NOW - 10 * MINUTE
    assert get("crisiswatch_worker_up") == 1
    assert get("crisiswatch_partitions_owned") == len(pipeline.partitions) > 0
    assert get("crisiswatch_events_in_flight") == 0
    assert get("crisiswatch_last_postgres_write_timestamp_seconds") == NOW
    assert get("crisiswatch_postgres_write_seconds_count") == 1

    # The breach is withdrawn by a contact recorded late (made at 100 minutes).
    feed.contact("R-BREACH", NOW - 4 * HOUR + 100 * MINUTE)
    feed.flush()
    wait = {"pathway": "ucr_2h", "region": "Y62"}
    assert get("crisiswatch_breaches_withdrawn_total", wait) == 1
    assert get("crisiswatch_clocks_stopped_total", {**QYG, "result": "met"}) == 2
    # A series that has existed stays, at 0, so graphs and sums do not break up.
    assert get("crisiswatch_open_clocks", {**QYG, "state": "breached"}) == 0
    # Waits 1200 s, 9000 s and 6000 s.
    assert get("crisiswatch_clock_wait_seconds_bucket", {**wait, "le": "1800.0"}) == 1
    assert get("crisiswatch_clock_wait_seconds_bucket", {**wait, "le": "5400.0"}) == 1
    assert get("crisiswatch_clock_wait_seconds_bucket", {**wait, "le": "6300.0"}) == 2
    assert get("crisiswatch_clock_wait_seconds_bucket", {**wait, "le": "7200.0"}) == 2
    assert get("crisiswatch_clock_wait_seconds_bucket", {**wait, "le": "9000.0"}) == 3
    assert get("crisiswatch_clock_wait_seconds_bucket", {**wait, "le": "+Inf"}) == 3
    assert get("crisiswatch_clock_wait_seconds_count", wait) == 3
    assert get("crisiswatch_clock_wait_seconds_sum", wait) == 1200 + 9000 + 6000
    assert get("crisiswatch_postgres_write_seconds_count") == 2


def test_open_clocks_are_read_at_scrape_time(
    pipeline: Pipeline, registry: CollectorRegistry
) -> None:
    feed = Feed(pipeline)
    feed.received("R-1", NOW - 80 * MINUTE, "ucr_2h", icb="QYG")
    feed.flush()
    get = registry.get_sample_value
    assert get("crisiswatch_open_clocks", {**QYG, "state": "waiting"}) == 1
    clock = pipeline.clock
    assert isinstance(clock, ManualClock)
    clock.now += 10 * MINUTE  # 90:00 elapsed: the deadline tick turns it at risk, no event
    assert asyncio.run(pipeline.tick()) == 1
    assert get("crisiswatch_open_clocks", {**QYG, "state": "waiting"}) == 0
    assert get("crisiswatch_open_clocks", {**QYG, "state": "at_risk"}) == 1


def test_histograms_drain_the_stats_lists_and_keep_cumulative_counts(
    pipeline: Pipeline, registry: CollectorRegistry
) -> None:
    stats = pipeline.stats
    wait = {"pathway": "ucr_2h", "region": "Y62"}
    stats.waits.extend([("ucr_2h", "Y62", 7200), ("ucr_2h", "Y62", 7201)])  # 120:00, 120:01
    stats.write_seconds.append(0.02)
    get = registry.get_sample_value
    assert get("crisiswatch_clock_wait_seconds_bucket", {**wait, "le": "6300.0"}) == 0
    assert get("crisiswatch_clock_wait_seconds_bucket", {**wait, "le": "7200.0"}) == 1  # le
    assert get("crisiswatch_clock_wait_seconds_bucket", {**wait, "le": "9000.0"}) == 2
    assert stats.waits == []
    assert stats.write_seconds == []
    stats.waits.append(("reablement_2d", "nowhere", 400_000))  # beyond 4 days; bogus region
    get("crisiswatch_worker_up")  # another scrape
    assert get("crisiswatch_clock_wait_seconds_count", wait) == 2  # still there
    far = {"pathway": "reablement_2d", "region": "unknown"}
    assert get("crisiswatch_clock_wait_seconds_bucket", {**far, "le": "345600.0"}) == 0
    assert get("crisiswatch_clock_wait_seconds_bucket", {**far, "le": "+Inf"}) == 1
    assert get("crisiswatch_postgres_write_seconds_bucket", {"le": "0.025"}) == 1
    assert get("crisiswatch_postgres_write_seconds_bucket", {"le": "0.01"}) == 0


def test_unrecognised_or_contradictory_places_count_as_unknown(
    pipeline: Pipeline, registry: CollectorRegistry
) -> None:
    feed = Feed(pipeline)
    feed.received("R-NEW-ICB", NOW - MINUTE, "ucr_2h", icb="QZZ", region="Y56")
    feed.received("R-WRONG-REGION", NOW - MINUTE, "ucr_2h", icb="QYG", region="Y56")
    feed.received("R-BOGUS", NOW - MINUTE, "ucr_2h", icb="QZZ", region="Y99")
    feed.received("R-NOWHERE", NOW - MINUTE, "ucr_2h")
    feed.flush()
    get = registry.get_sample_value
    london = {"pathway": "ucr_2h", "region": "Y56", "icb": "unknown"}
    nowhere = {"pathway": "ucr_2h", "region": "unknown", "icb": "unknown"}
    assert get("crisiswatch_referrals_received_total", london) == 2
    assert get("crisiswatch_referrals_received_total", nowhere) == 2
    assert get("crisiswatch_open_clocks", {**london, "state": "waiting"}) == 2
    values = {v for s in series(registry) for v in s.labels.values()}
    assert not values & {"QZZ", "Y99"}


#: Labelled families of CONTRACT section 4 and the series each has from the first scrape.
LABELLED = {
    "crisiswatch_open_clocks": 2 * 50 * 3,
    "crisiswatch_clocks_stopped_total": 2 * 50 * 2,
    "crisiswatch_clock_wait_seconds": 2 * 8 * 14,
    "crisiswatch_referrals_received_total": 2 * 50,
    "crisiswatch_events_total": 4,
    "crisiswatch_events_rejected_total": len(REASONS),
    "crisiswatch_breaches_withdrawn_total": 2 * 8,
}


def test_a_fresh_pipeline_exports_every_labelled_series_at_zero(
    pipeline: Pipeline, registry: CollectorRegistry
) -> None:
    samples = series(registry)
    by_family = {family.name: family for family in registry.collect()}
    for name, count in LABELLED.items():
        family = by_family[name.removesuffix("_total")]
        assert len(family.samples) == count, name
        assert {s.value for s in family.samples} == {0}, name
    get = registry.get_sample_value
    assert get("crisiswatch_open_clocks", {**QYG, "state": "breached"}) == 0
    assert get("crisiswatch_postgres_write_seconds_count") == 0
    # Unknown timestamps stay absent (module docstring): the only two samples not there.
    assert get("crisiswatch_last_event_timestamp_seconds") is None
    assert get("crisiswatch_last_postgres_write_timestamp_seconds") is None
    assert len(samples) == 872 - 2  # every labelled series; the two timestamps once known


# -- the series budget and identifiers -----------------------------------------------------------


def places() -> list[dict[str, str]]:
    """Every place a referral can be counted under: 42 ICBs, 7 regions alone, nowhere (50)."""
    found = [{"icb": code} for code in sorted(icbs())]
    found += [{"region": code} for code in sorted(regions())]
    return [*found, {}]


def drive_everything(feed: Feed) -> None:
    """Every pathway x place in every state, every rejection reason, and bogus codes."""
    withdrawals: list[tuple[str, int]] = []
    for pathway, (n, place) in itertools.product(PATHWAYS, enumerate(places())):
        ref = f"{pathway[:3].upper()}-{n:02d}"
        if pathway == "ucr_2h":
            waiting, at_risk, breached = NOW - 10 * MINUTE, NOW - 100 * MINUTE, NOW - 3 * HOUR
            met, not_met, late = 60 * MINUTE, 150 * MINUTE, 100 * MINUTE
        else:  # 2 days: at risk from noon on the last allowed day; NOW is 15:00
            waiting, at_risk, breached = NOW - HOUR, NOW - 2 * DAY, NOW - 4 * DAY
            met, not_met, late = DAY, 3 * DAY, DAY
        feed.received(f"{ref}-W", waiting, pathway, **place)
        feed.received(f"{ref}-R", at_risk, pathway, **place)
        feed.received(f"{ref}-B", breached, pathway, **place)
        feed.received(f"{ref}-M", NOW - 5 * DAY, pathway, **place)
        feed.contact(f"{ref}-M", NOW - 5 * DAY + met)
        feed.received(f"{ref}-N", NOW - 5 * DAY, pathway, **place)
        feed.contact(f"{ref}-N", NOW - 5 * DAY + not_met)
        feed.received(f"{ref}-X", breached, pathway, **place)
        withdrawals.append((f"{ref}-X", breached + late))
    good = feed.event("referral.received", "R-GOOD", NOW, pathway="ucr_2h", provider="RY7")
    feed.pending.pop()
    document = json.loads(good)
    feed.raw(b'{"a": "' + b"x" * 70_000 + b'"}')  # too_large
    feed.raw(b"not json")  # invalid_json
    feed.raw(b'{"specversion": "1.0"}')  # not_cloudevent
    feed.raw(json.dumps({**document, "type": "referral.unknown"}).encode())  # unknown_type
    feed.raw(json.dumps({**document, "data": {"referral_id": "R-GOOD"}}).encode())  # missing
    feed.raw(json.dumps({**document, "data": {**document["data"], "pathway": "x"}}).encode())
    feed.raw(json.dumps({**document, "time": "yesterday"}).encode())  # bad_time
    feed.raw(b"")  # empty (as a tombstone: tests/unit/test_poison.py)
    # Codes outside the reference lists fold into `unknown`: they add no series.
    for n, place in enumerate([{"icb": "QZZ"}, {"icb": "QAA", "region": "Y99"},
                               {"icb": "QYG", "region": "Y56"}, {"region": "Y00"}]):  # fmt: skip
        feed.received(f"BOGUS-{n}", NOW - 3 * HOUR, "ucr_2h", **place)
        feed.received(f"BOGUS-{n}-M", NOW - 3 * HOUR, "reablement_2d", **place)
        feed.contact(f"BOGUS-{n}-M", NOW - 2 * HOUR)
    feed.flush()
    for referral, instant in withdrawals:
        feed.contact(referral, instant)
    feed.flush()


def test_series_stay_within_the_budget_with_every_combination_driven() -> None:
    pipeline = new_pipeline()
    registry = new_registry(pipeline)
    drive_everything(Feed(pipeline, partitions=4))
    samples = series(registry)
    ours = [s for s in samples if not s.name.startswith("crisiswatch_process_")]

    get = registry.get_sample_value
    for reason in REASONS:  # `internal` needs a bug to raise: tests/unit/test_poison.py
        expected = 0 if reason == INTERNAL else 1
        assert get("crisiswatch_events_rejected_total", {"reason": reason}) == expected, reason
    for pathway, state in itertools.product(PATHWAYS, ["waiting", "at_risk", "breached"]):
        where = {"pathway": pathway, "region": "Y56", "icb": "QKK", "state": state}
        assert get("crisiswatch_open_clocks", where) == 1, where
    withdrawn = {"pathway": "reablement_2d", "region": "unknown"}
    assert get("crisiswatch_breaches_withdrawn_total", withdrawn) == 1

    places_n, regions_n = len(places()), len(regions()) + 1
    assert (places_n, regions_n) == (50, 8)
    expected = (
        2 * places_n * 3  # open clocks
        + 2 * places_n * 2  # stopped
        + 2 * places_n  # received
        + 2 * regions_n * 14  # wait histogram: 11 buckets, +Inf, sum, count
        + 2 * regions_n  # withdrawn
        + len(EVENT_TYPES)
        + len(REASONS)
        + 14  # postgres write histogram
        + 5  # up, partitions, in flight, last event, last write
    )
    assert len(ours) == expected == 872
    assert len(samples) <= SERIES_BUDGET, f"{len(samples)} series > budget {SERIES_BUDGET}"
    print(f"series: {len(ours)} crisiswatch + {len(samples) - len(ours)} process")


def test_no_label_carries_an_identifier() -> None:
    pipeline = new_pipeline()
    registry = new_registry(pipeline)
    feed = Feed(pipeline, partitions=4)
    drive_everything(feed)
    samples = series(registry)
    names = {name for s in samples for name in s.labels}
    assert names <= ALLOWED_LABELS
    values = {value for s in samples for value in s.labels.values()}
    identifiers = feed.referrals | feed.event_ids | feed.contact_ids | feed.patient_refs
    assert len(identifiers) > 1000
    assert not values & identifiers
    # Nor inside a value: every label value comes from a small closed vocabulary.
    assert not [v for v in values for i in identifiers if i in v]


# -- the HTTP server -------------------------------------------------------------------------------


async def _get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.headers["Content-Type"], await response.text()


def test_server_serves_metrics_health_and_ready_on_one_port() -> None:
    async def scenario() -> None:
        server = MetricsServer("127.0.0.1", 0, drain_interval=0.05)
        port = await server.start()
        try:
            assert port > 0
            assert server.url == f"http://127.0.0.1:{port}"
            assert (await _get(f"{server.url}/health"))[0] == 200
            assert (await _get(f"{server.url}/ready"))[0] == 503  # no pipeline yet
            # Every family from the first scrape, before a pipeline exists.
            body = (await _get(f"{server.url}/metrics"))[2]
            first = {f.name for f in text_string_to_metric_families(body) if f.samples}
            assert {name.removesuffix("_total") for name in LABELLED} <= first
            pipeline = new_pipeline()
            server.watch(pipeline)
            assert (await _get(f"{server.url}/ready"))[0] == 503  # no partitions, no batch
            await pipeline.assign([0, 1])
            assert (await _get(f"{server.url}/ready"))[0] == 200

            status, content_type, body = await _get(f"{server.url}/metrics")
            assert status == 200
            assert content_type.startswith("text/plain")
            values = {
                s.name: s.value
                for family in text_string_to_metric_families(body)
                for s in family.samples
            }
            assert values["crisiswatch_worker_up"] == 1
            assert values["crisiswatch_partitions_owned"] == 2
            assert "crisiswatch_process_resident_memory_bytes" in values

            # Prometheus asks for OpenMetrics; it gets it.
            _, content_type, body = await _get(
                f"{server.url}/metrics", "application/openmetrics-text; version=1.0.0"
            )
            assert content_type.startswith("application/openmetrics-text")
            assert body.endswith("# EOF\n")

            # Nobody scrapes: the samples lists are still drained.
            pipeline.stats.waits.append(("ucr_2h", "Y62", 60))
            await asyncio.sleep(0.2)
            assert pipeline.stats.waits == []
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_a_busy_port_is_a_one_line_configuration_error() -> None:
    async def scenario() -> None:
        first = MetricsServer("127.0.0.1", 0)
        port = await first.start()
        try:
            with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}"):
                await MetricsServer("127.0.0.1", port).start()
        finally:
            await first.stop()

    asyncio.run(scenario())


# -- a live worker ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def sample_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def promtool() -> str:
    """Prometheus's promtool: required (`apt-get install prometheus`), never skipped."""
    import shutil

    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is required: apt-get install -y prometheus")
    return found


@pytest.fixture
def live_worker(
    new_database: Callable[[], str], tmp_path: Path
) -> Iterator[tuple[EmbeddedBroker, str, Path]]:
    url = new_database()
    migrate(url)
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, {EVENTS_TOPIC: 4, OUTCOMES_TOPIC: 4, DLQ_TOPIC: 1})
        port = free_port()
        log = tmp_path / "worker.log"
        env = {**os.environ, "CRISISWATCH_PSEUDONYM_KEY": "test-key-0123456789abcdef"}
        with log.open("ab") as handle:
            process = subprocess.Popen(
                [crisiswatch(), "worker", "--kafka", broker.bootstrap, "--database-url", url,
                 "--metrics-port", str(port)],
                stdout=handle, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            yield broker, f"http://127.0.0.1:{port}", log
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            if process.returncode not in (0, -15):
                print(log.read_text(errors="replace"))


@pytest.mark.integration
def test_a_live_worker_serves_clean_metrics(
    live_worker: tuple[EmbeddedBroker, str, Path], shared: Path
) -> None:
    broker, base, log = live_worker
    wait_for(lambda: http(f"{base}/health")[0] == 200, 60, "/health")
    lines = (shared / "golden" / "events.ndjson").read_bytes().splitlines()
    produce(broker.bootstrap, lines)

    def events_counted_and_written() -> bool:
        # Events are counted when merged, before their batch's transaction commits: wait for
        # the commit too, or the write timestamp may not exist yet.
        status, text = http(f"{base}/metrics")
        values = sample_values(text) if status == 200 else {}
        counted = sum(v for (n, _), v in values.items() if n == "crisiswatch_events_total") > 0
        written = ("crisiswatch_last_postgres_write_timestamp_seconds", ()) in values
        return counted and written

    wait_for(lambda: http(f"{base}/ready")[0] == 200, 90, "/ready")
    wait_for(events_counted_and_written, 90, "events counted and a batch written")
    assert "metrics on http://127.0.0.1:" in log.read_text(errors="replace")

    status, text = http(f"{base}/metrics")
    assert status == 200
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""

    values = sample_values(text)
    assert values[("crisiswatch_worker_up", ())] == 1
    assert values[("crisiswatch_partitions_owned", ())] >= 1
    assert ("crisiswatch_last_postgres_write_timestamp_seconds", ()) in values
    assert ("crisiswatch_last_event_timestamp_seconds", ()) in values
    assert len(values) <= SERIES_BUDGET

    # No referral, event, contact or patient identifier in any series.
    identifiers: set[str] = set()
    for line in lines:
        try:
            document = json.loads(line)
        except ValueError:
            continue
        data = document.get("data") if isinstance(document, dict) else None
        found = [document.get("id")] if isinstance(document, dict) else []
        if isinstance(data, dict):
            found += [data.get(k) for k in ("referral_id", "contact_id", "patient_ref")]
        identifiers.update(v for v in found if isinstance(v, str) and v)
    assert len(identifiers) > 500
    label_values = {value for _, labels in values for _, value in labels}
    assert not label_values & identifiers


@pytest.mark.integration
def test_a_fresh_worker_has_every_family_from_the_first_scrape(
    live_worker: tuple[EmbeddedBroker, str, Path],
) -> None:
    """Empty database, no events: the first scrape that answers already has every labelled
    family of CONTRACT section 4 at 0, and `promtool check metrics` is clean."""
    _, base, _ = live_worker
    wait_for(lambda: http(f"{base}/metrics")[0] == 200, 60, "/metrics")
    status, text = http(f"{base}/metrics")
    assert status == 200
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""
    values = sample_values(text)
    for name, count in LABELLED.items():
        samples = {k: v for k, v in values.items() if k[0].startswith(name)}
        if name == "crisiswatch_clock_wait_seconds":
            assert len(samples) == count, name
        else:
            assert len([k for k in samples if k[0] == name]) == count, name
        assert set(samples.values()) == {0}, name
    assert values[("crisiswatch_worker_up", ())] == 1
    assert len(values) <= SERIES_BUDGET
