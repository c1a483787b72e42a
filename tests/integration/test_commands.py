"""`crisiswatch topics`, `db`, `publish` and `simulate` (CONTRACT section 3).

The commands run as subprocesses of the installed entry point, as an operator runs them,
against the embedded broker (Tansu) and the PostgreSQL test server. Messages are read back
from every partition by assignment (no consumer group), counting what is read: Tansu's high
watermark is not trustworthy after multi-record batches.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from consumers.kafka.admin import create_topics, describe_partitions, list_topics
from consumers.kafka.publisher import EventPublisher, PublishReport, publish_lines
from consumers.local.embedded import EmbeddedBroker, free_port
from consumers.store import migrations
from streams.codec import Codec
from streams.engine import Event
from streams.errors import ServiceError
from streams.simulation import SimulatedLine, SimulationConfig, simulate
from tests.support import crisiswatch

SERVER = os.environ.get(
    "CRISISWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
GOLDEN_LINES = 2104
GOLDEN_SENT = 2103  # every line but one
BAD_LINE = 6  # the golden file's one line that is not JSON
#: Upper bound on reading messages back, in seconds.
READ_TIMEOUT_S = 20.0
SIM_START = "2026-02-03T08:00:00Z"


# -- helpers -----------------------------------------------------------------------------------


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRISISWATCH_")}
    clean.update(env or {})
    return clean


def run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [crisiswatch(), *map(str, args)],
        capture_output=True,
        text=True,
        env=environment(env),
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crisiswatch:"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@dataclass(frozen=True)
class Message:
    partition: int
    key: str | None
    value: bytes


def read_back(bootstrap: str, topic: str, count: int) -> list[Message]:
    """Every message of `topic` from the start of each partition: `count` of them, plus any
    extra that shows up within a second after (so duplicates are seen, not hidden)."""
    # Imported here, after consumers.kafka.admin has imported kafka-python with its import-time
    # DeprecationWarnings silenced (pytest turns warnings into errors).
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    received: list[Message] = []
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        assert partitions, f"no partitions for {topic}"
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + READ_TIMEOUT_S
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            for records in consumer.poll(timeout_ms=250).values():
                for record in records:
                    key = record.key.decode() if record.key is not None else None
                    received.append(Message(record.partition, key, record.value))
            if settle_until is None and len(received) >= count:
                settle_until = time.monotonic() + 1.0
    finally:
        consumer.close()
    return received


def expected_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client) gives a key."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def sent_count(stderr: str) -> int:
    match = re.search(r": (\d+) sent to ", stderr)
    assert match is not None, stderr
    return int(match.group(1))


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for integration tests ({SERVER}): {exc}")
    name = f"cw_test_{secrets.token_hex(4)}_commands"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            params = psycopg.conninfo.conninfo_to_dict(SERVER)
            params["dbname"] = name
            yield psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def golden_events(shared: Path) -> Path:
    return shared / "golden" / "events.ndjson"


# -- topics and db -----------------------------------------------------------------------------


@pytest.mark.integration
def test_topics_create_is_idempotent(broker: EmbeddedBroker) -> None:
    names = ["referral-events", "referral-outcomes", "referral-events-dlq"]

    first = ok(run("topics", "create", "--kafka", broker.bootstrap, "--partitions", "5"))
    # The partition count also comes from the environment; existing topics are not changed.
    second = ok(
        run("topics", "create", "--retention-hours", "24", env={
            "CRISISWATCH_KAFKA": broker.bootstrap, "CRISISWATCH_PARTITIONS": "7"
        })
    )  # fmt: skip

    assert first.stdout.splitlines() == [
        f"created {name} (5 partitions, retention 168 h)" for name in names
    ]
    assert second.stdout.splitlines() == [
        f"{name} already exists (5 partitions; not changed to 7)" for name in names
    ]
    assert set(names) <= list_topics(broker.bootstrap)
    assert [describe_partitions(broker.bootstrap, name) for name in names] == [5, 5, 5]


@pytest.mark.integration
def test_topics_create_with_unreachable_broker() -> None:
    started = time.monotonic()
    result = run("topics", "create", "--kafka", f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 15
    one_line_error(result, 1, "cannot reach Kafka")


@pytest.mark.integration
def test_db_migrate_twice(fresh_database: str) -> None:
    names = [m.name for m in migrations()]

    first = ok(run("db", "migrate", "--database-url", fresh_database))
    second = ok(run("db", "migrate", env={"CRISISWATCH_DATABASE_URL": fresh_database}))

    assert first.stdout == f"applied {len(names)} migration(s): {', '.join(names)}\n"
    assert second.stdout == "schema up to date\n"
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()
    assert [name for (name,) in rows] == names


# -- publish -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_publish_golden_file(broker: EmbeddedBroker, golden_events: Path) -> None:
    topic, partitions = "golden-events", 6
    create_topics(broker.bootstrap, {topic: partitions})
    lines = golden_events.read_bytes().splitlines()
    assert len(lines) == GOLDEN_LINES

    result = ok(run("publish", golden_events, "--kafka", broker.bootstrap, "--topic", topic))

    assert sent_count(result.stderr) == GOLDEN_SENT
    assert f"1 bad line not sent: invalid_json 1 (line {BAD_LINE})" in result.stderr
    messages = read_back(broker.bootstrap, topic, GOLDEN_SENT)
    assert len(messages) == GOLDEN_SENT
    # The original bytes of every line but the bad one, nothing re-serialised.
    good = [line for number, line in enumerate(lines, start=1) if number != BAD_LINE]
    assert Counter(m.value for m in messages) == Counter(good)
    partition_of: dict[str, set[int]] = {}
    for message in messages:
        assert message.key == json.loads(message.value)["data"]["referral_id"]
        partition_of.setdefault(message.key, set()).add(message.partition)
    # One partition per referral, the one any Kafka client's default partitioner picks.
    assert all(len(found) == 1 for found in partition_of.values())
    assert all(
        found == {expected_partition(key, partitions)} for key, found in partition_of.items()
    )
    assert len({m.partition for m in messages}) > 1


@pytest.mark.integration
def test_publish_to_a_missing_topic_fails_without_creating_it(
    broker: EmbeddedBroker, golden_events: Path
) -> None:
    result = run("publish", golden_events, "--kafka", broker.bootstrap, "--topic", "no-such")

    one_line_error(result, 1, "no topic 'no-such'", "crisiswatch topics create")
    assert "no-such" not in list_topics(broker.bootstrap)


def test_publish_with_unreachable_broker(golden_events: Path) -> None:
    started = time.monotonic()
    result = run("publish", golden_events, "--kafka", f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 15
    # ServiceUnavailableError: exit code 1, one line.
    one_line_error(result, 1, "cannot reach Kafka at 127.0.0.1:")


def test_publish_missing_file(tmp_path: Path) -> None:
    one_line_error(run("publish", tmp_path / "absent.ndjson"), 2, "cannot read", "absent.ndjson")


@pytest.mark.parametrize("kafka", ["", "host:port", "a:1,:2", "a:99999"])
def test_publish_bad_kafka_address(golden_events: Path, kafka: str) -> None:
    one_line_error(run("publish", golden_events, "--kafka", kafka), 2, "--kafka")


class FakeSink:
    """Records what `publish_lines` sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str | None, bytes]] = []
        self.flushed = 0

    def send(self, key: str | None, value: bytes) -> None:
        self.sent.append((key, value))

    def flush(self) -> None:
        self.flushed += 1


def event_line(referral_id: str, event_id: str, spacing: str = " ") -> bytes:
    document = {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:nhs:ods:RY7",
        "type": "referral.received",
        "time": "2026-02-03T14:00:00Z",
        "data": {"referral_id": referral_id, "pathway": "ucr_2h", "provider": "RY7"},
    }
    return json.dumps(document, separators=(",", ":" + spacing)).encode()


def test_publish_lines_sends_original_bytes_keyed_by_referral_id() -> None:
    nhs_shaped = "9434765919"  # a valid NHS number used as a referral id: scrubbed by the codec
    lines = [
        event_line("R-1", "e1", spacing="   ") + b"\r\n",  # odd spacing and CRLF
        b"\n",  # blank: skipped, but counted in line numbers
        b"{not json}\n",
        event_line(nhs_shaped, "e2") + b"\n",
        event_line("R-2", "e3"),  # no final newline
    ]
    sink = FakeSink()

    report = publish_lines(lines, sink, Codec())

    assert sink.sent == [
        ("R-1", event_line("R-1", "e1", spacing="   ")),
        (nhs_shaped, event_line(nhs_shaped, "e2")),  # keyed by the id as sent, not a pseudonym
        ("R-2", event_line("R-2", "e3")),
    ]
    assert sink.flushed == 1
    assert (report.lines, report.sent, dict(report.rejected)) == (4, 3, {"invalid_json": 1})
    assert report.rejected_lines == [3]
    assert report.rejections_text() == "invalid_json 1 (line 3)"


def test_publish_lines_can_send_rejected_lines_without_a_key() -> None:
    sink = FakeSink()
    report = publish_lines(
        [b"{not json}", event_line("R-1", "e1")], sink, Codec(), send_rejected=True
    )
    assert sink.sent == [(None, b"{not json}"), ("R-1", event_line("R-1", "e1"))]
    assert (report.sent, report.rejected_total) == (2, 1)


def test_report_lists_the_first_rejected_lines() -> None:
    report = PublishReport(rejected=Counter({"invalid_json": 11, "bad_time": 1}))
    report.rejected_lines = list(range(1, 11))
    assert report.rejections_text() == (
        "bad_time 1, invalid_json 11 (lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...)"
    )


@pytest.mark.integration
def test_event_publisher_counts_and_refuses_to_send_before_start(broker: EmbeddedBroker) -> None:
    create_topics(broker.bootstrap, {"publisher-unit": 2})
    publisher = EventPublisher(broker.bootstrap, "publisher-unit")
    with pytest.raises(RuntimeError, match="before start"):
        publisher.send("R-1", b"{}")
    with publisher:
        for i in range(10):
            publisher.send(f"R-{i}", b"{}")
        publisher.flush()
        assert (publisher.sent, publisher.failed, publisher.delivered) == (10, 0, 10)
    assert len(read_back(broker.bootstrap, "publisher-unit", 10)) == 10


@pytest.mark.integration
def test_event_publisher_missing_topic_is_a_service_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(ServiceError, match="no topic"), EventPublisher(broker.bootstrap, "nope"):
        pass


# -- simulate ----------------------------------------------------------------------------------


def simulated(duration_s: float, speed: float, seed: int) -> list[SimulatedLine]:
    config = SimulationConfig(
        start=datetime.fromisoformat(SIM_START),
        duration=timedelta(seconds=duration_s),
        speed=speed,
        seed=seed,
    )
    return list(simulate(config))


def test_simulate_out_is_deterministic_ndjson(tmp_path: Path) -> None:
    args = ("--duration", "600", "--speed", "5", "--seed", "11", "--start", SIM_START)
    first, second = tmp_path / "a.ndjson", tmp_path / "b.ndjson"

    result = ok(run("simulate", "--out", first, *args))
    ok(run("simulate", "--out", second, *args))

    expected = simulated(600, 5, 11)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_text(encoding="utf-8").splitlines() == [item.line for item in expected]
    assert f"simulate: {len(expected)} lines to {first}" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ndjson", "b.ndjson"]  # no temp left
    codec = Codec()
    decoded = [codec.decode(item.line) for item in expected if item.valid]
    assert decoded
    assert all(isinstance(event, Event) for event in decoded)


def test_simulate_bad_start_is_a_usage_error(tmp_path: Path) -> None:
    result = run("simulate", "--out", tmp_path / "x.ndjson", "--start", "2026-02-03T08:00:00")
    one_line_error(result, 2, "--start", "offset")
    assert not (tmp_path / "x.ndjson").exists()


@pytest.mark.integration
def test_simulate_to_kafka_as_fast_as_possible(broker: EmbeddedBroker) -> None:
    topic = "sim-events"
    create_topics(broker.bootstrap, {topic: 4})
    expected = simulated(600, 5, 3)
    assert any(not item.valid for item in expected) or len(expected) > 100

    result = ok(
        run(
            "simulate", "--kafka", broker.bootstrap, "--topic", topic, "--no-realtime",
            "--duration", "600", "--speed", "5", "--seed", "3", "--start", SIM_START,
        )
    )  # fmt: skip

    assert sent_count(result.stderr) == len(expected)
    messages = read_back(broker.bootstrap, topic, len(expected))
    assert Counter(m.value for m in messages) == Counter(i.line.encode() for i in expected)
    key_of = {item.line.encode(): item.key for item in expected if item.valid}
    for message in messages:
        if message.value in key_of:
            assert message.key == key_of[message.value]


@pytest.mark.integration
def test_simulate_in_real_time_paces_by_arrival(broker: EmbeddedBroker) -> None:
    topic = "sim-realtime"
    create_topics(broker.bootstrap, {topic: 2})
    window = 4.0  # seconds of event time, run in as many seconds of wall time
    start = datetime.fromisoformat(SIM_START)
    due = [i for i in simulated(window, 200, 5) if (i.arrival - start).total_seconds() <= window]
    assert 5 < len(due) < 200

    started = time.monotonic()
    result = ok(
        run(
            "simulate", "--kafka", broker.bootstrap, "--topic", topic, "--duration", str(window),
            "--speed", "200", "--seed", "5", "--start", SIM_START,
        )
    )  # fmt: skip
    elapsed = time.monotonic() - started

    last_due = (due[-1].arrival - start).total_seconds()
    assert elapsed >= last_due - 0.5, (elapsed, last_due)  # paced, not all at once
    assert sent_count(result.stderr) == len(due)
    messages = read_back(broker.bootstrap, topic, len(due))
    assert Counter(m.value for m in messages) == Counter(i.line.encode() for i in due)


@pytest.mark.integration
def test_simulate_stops_cleanly_on_ctrl_c(broker: EmbeddedBroker) -> None:
    topic = "sim-interrupted"
    create_topics(broker.bootstrap, {topic: 2})
    proc = subprocess.Popen(
        [
            crisiswatch(), "simulate", "--kafka", broker.bootstrap, "--topic", topic,
            "--duration", "3600", "--speed", "3000", "--seed", "9", "--start", SIM_START,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )  # fmt: skip
    try:
        time.sleep(4.0)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "stopped by Ctrl-C" in stderr
    sent = sent_count(stderr)
    assert sent > 0
    assert len(read_back(broker.bootstrap, topic, sent)) == sent  # everything sent was flushed
