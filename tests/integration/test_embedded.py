"""Integration tests of the embedded broker (Tansu) and embedded PostgreSQL (pgserver).

Nothing is skipped: a missing Tansu binary or pgserver wheel fails these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer

from consumers.kafka.admin import TopicAdminError, create_topics, describe_partitions, list_topics
from consumers.local.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    EmbeddedServiceError,
    free_port,
)

pytestmark = pytest.mark.integration

MESSAGES = 1000
PARTITIONS = 4
#: Upper bound on reading everything back, in seconds (takes well under 5 s here).
CONSUME_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="module")
def postgres() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as running:
        yield running


def test_create_topics_is_idempotent(broker: EmbeddedBroker) -> None:
    wanted = {"embedded-a": PARTITIONS, "embedded-b": 1}

    first = create_topics(broker.bootstrap, wanted, retention_ms=3_600_000)
    second = create_topics(broker.bootstrap, {**wanted, "embedded-c": 2})

    assert first == ["embedded-a", "embedded-b"]
    assert second == ["embedded-c"]  # existing ones skipped, not an error
    assert {"embedded-a", "embedded-b", "embedded-c"} <= list_topics(broker.bootstrap)
    assert describe_partitions(broker.bootstrap, "embedded-a") == PARTITIONS
    assert describe_partitions(broker.bootstrap, "embedded-c") == 2


def test_describe_unknown_topic_fails(broker: EmbeddedBroker) -> None:
    with pytest.raises(TopicAdminError, match="no topic"):
        describe_partitions(broker.bootstrap, "embedded-never-created")


def test_create_topics_rejects_zero_partitions(broker: EmbeddedBroker) -> None:
    # Tansu itself would accept it and create an unusable topic.
    with pytest.raises(ValueError, match="partition counts"):
        create_topics(broker.bootstrap, {"embedded-empty": 0})


def test_keyed_messages_round_trip(broker: EmbeddedBroker) -> None:
    # Imported after consumers.kafka.admin, which silences kafka-python's import-time warnings.
    from kafka import KafkaProducer

    topic = "embedded-roundtrip"
    create_topics(broker.bootstrap, {topic: PARTITIONS})
    keys = [f"ref-{i:04d}" for i in range(MESSAGES)]

    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        enable_idempotence=False,  # Tansu rejects the idempotent producer (kafka-python 3 default)
        linger_ms=5,
    )
    try:
        for i, key in enumerate(keys):
            value = json.dumps({"n": i, "referral_id": key}).encode()
            producer.send(topic, key=key.encode(), value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)

    received = asyncio.run(_consume(broker.bootstrap, topic, MESSAGES))

    assert len(received) == MESSAGES
    assert sorted(key for key, _, _ in received) == keys
    assert all(json.loads(value)["referral_id"] == key for key, _, value in received)
    partition_of: dict[str, set[int]] = {}
    for key, partition, _ in received:
        partition_of.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert len({p for parts in partition_of.values() for p in parts}) == PARTITIONS


async def _consume(bootstrap: str, topic: str, count: int) -> list[tuple[str, int, bytes]]:
    """Read ``count`` records as a group member; (key, partition, value) per record."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="embedded-test",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # Tansu holds a JoinGroup for half the session timeout: 6 s -> joined in ~3 s.
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    received: list[tuple[str, int, bytes]] = []
    try:
        async with asyncio.timeout(CONSUME_TIMEOUT_S):
            while len(received) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        assert record.key is not None
                        assert record.value is not None
                        received.append((record.key.decode(), record.partition, record.value))
    finally:
        await consumer.stop()
    return received


def test_postgres_answers_select_1(postgres: EmbeddedPostgres) -> None:
    assert postgres.url.startswith("postgresql://postgres@127.0.0.1:")

    with psycopg.connect(postgres.url) as conn:
        row = conn.execute("SELECT 1").fetchone()

    assert row == (1,)


def test_broker_stop_frees_port_and_reaps() -> None:
    broker = EmbeddedBroker().start()
    pid = broker.pid
    assert pid is not None

    broker.stop()
    broker.stop()  # idempotent

    assert not broker.running
    assert broker.pid is None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", broker.port))  # nobody listening any more
    with pytest.raises(ChildProcessError):  # already reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)


def test_broker_kill_then_restart_on_same_port() -> None:
    with EmbeddedBroker(free_port()) as broker:
        create_topics(broker.bootstrap, {"before-crash": 1})
        broker.kill()
        assert not broker.running

        broker.start()

        # memory storage: the restarted broker is empty
        assert "before-crash" not in list_topics(broker.bootstrap)


def test_postgres_given_data_dir_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    with EmbeddedPostgres(data_dir) as first, psycopg.connect(first.url) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (42)")
        conn.commit()

    with EmbeddedPostgres(data_dir) as second, psycopg.connect(second.url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchone() == (42,)
    assert (data_dir / "PG_VERSION").exists()


def test_temporary_postgres_dir_is_removed() -> None:
    with EmbeddedPostgres() as postgres:
        data_dir = postgres.data_dir
        assert data_dir.exists()

    assert not data_dir.parent.exists()


def test_missing_broker_binary_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))

    with pytest.raises(EmbeddedServiceError, match="CALF_TANSU_BIN"):
        EmbeddedBroker().start()
