"""Kafka topic administration: create the pipeline's topics, ask how many partitions one has.

A thin adapter over kafka-python's ``KafkaAdminClient`` (the 3.x API). Creation is
idempotent -- a topic that already exists is left alone, whatever its partition count (use
``describe_partitions`` to check) -- so ``crisiswatch topics``, ``crisiswatch demo`` and
tests can all call it unconditionally.

Broker notes (Tansu, the embedded broker): CreateTopics with configs such as
``retention.ms`` succeeds, but the memory store neither reports (DescribeConfigs returns no
entries) nor enforces them. Metadata for an unknown topic does not auto-create it. It also
accepts 0 partitions and a replication factor above the number of brokers, so those are
checked here.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

with warnings.catch_warnings():
    # kafka-python 3.0 loads its protocol schemas with importlib.resources.read_text /
    # open_text, which warn (DeprecationWarning) on Python >= 3.11 at import time.
    warnings.filterwarnings(
        "ignore", message=r"(read|open)_text is deprecated", category=DeprecationWarning
    )
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

if TYPE_CHECKING:
    from consumers.kafka.security import KafkaSecurity

__all__ = [
    "TopicAdminError",
    "create_topics",
    "describe_partitions",
    "list_topics",
]

#: Pause between metadata polls while waiting for new topics to appear, in seconds.
_POLL_S = 0.1


class TopicAdminError(RuntimeError):
    """The broker could not be reached, or refused or failed a topic operation."""


@contextmanager
def _admin(bootstrap: str, timeout_s: float, security: KafkaSecurity | None) -> Iterator[Any]:
    """A connected ``KafkaAdminClient`` that is always closed; errors become TopicAdminError.

    ``security``: TLS and SASL settings (``consumers.kafka.security``); PLAINTEXT when None.
    """
    timeout_ms = max(1, int(timeout_s * 1000))
    options = security.kafka_python() if security is not None else {}
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="crisiswatch-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            **options,
        )
    except KafkaError as exc:
        raise TopicAdminError(f"cannot reach Kafka at {bootstrap}: {exc!r}") from exc
    try:
        yield admin
    except KafkaError as exc:
        raise TopicAdminError(f"Kafka admin request to {bootstrap} failed: {exc!r}") from exc
    finally:
        admin.close()


def list_topics(
    bootstrap: str, *, timeout_s: float = 20, security: KafkaSecurity | None = None
) -> set[str]:
    """Names of the topics the broker knows (one metadata request)."""
    with _admin(bootstrap, timeout_s, security) as admin:
        return set(admin.list_topics())


def create_topics(
    bootstrap: str,
    names_partitions: Mapping[str, int],
    *,
    replication: int = 1,
    retention_ms: int | None = None,
    timeout_s: float = 20,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create each topic with its partition count unless it already exists.

    Args:
        bootstrap: Kafka bootstrap servers, ``"host:port[,host:port]"``.
        names_partitions: topic name -> number of partitions.
        replication: replication factor for new topics.
        retention_ms: ``retention.ms`` for new topics; broker default when None.
        timeout_s: bound on connecting, on each request, and on waiting for new topics to
            show up in metadata with a leader for every partition.
        security: TLS and SASL settings; PLAINTEXT when None.

    Returns:
        The names actually created by this call, in the order given (existing ones are
        skipped silently, including ones a concurrent caller created first).

    Raises:
        ValueError: a partition count or the replication factor is below 1 (checked here:
            Tansu accepts them and creates a topic nobody can use).
        TopicAdminError: the broker is unreachable, rejects a topic, or a new topic does
            not become visible in time.
    """
    bad = {name: n for name, n in names_partitions.items() if n < 1}
    if bad:
        raise ValueError(f"partition counts must be >= 1: {bad}")
    if replication < 1:
        raise ValueError(f"replication must be >= 1, got {replication}")
    if not names_partitions:
        return []
    configs = {} if retention_ms is None else {"retention.ms": str(retention_ms)}
    deadline = time.monotonic() + timeout_s
    created: list[str] = []
    with _admin(bootstrap, timeout_s, security) as admin:
        existing = set(admin.list_topics())
        for name, partitions in names_partitions.items():
            if name in existing:
                continue
            # One request per topic: an "already exists" then concerns exactly this name.
            topic = NewTopic(name, partitions, replication, topic_configs=configs)
            try:
                admin.create_topics([topic], timeout_ms=max(1, int(timeout_s * 1000)))
            except TopicAlreadyExistsError:
                continue  # lost a race with another creator: fine
            created.append(name)
        _wait_until_visible(admin, created, deadline, bootstrap)
    return created


def _wait_until_visible(admin: Any, names: list[str], deadline: float, bootstrap: str) -> None:
    """Poll metadata until every topic in ``names`` has all partitions led."""
    pending = set(names)
    while pending:
        for topic in admin.describe_topics(sorted(pending)):
            partitions = topic.get("partitions") or []
            if (
                topic.get("error_code", 0) == 0
                and partitions
                and all(
                    p.get("error_code", 0) == 0 and p.get("leader_id", -1) >= 0 for p in partitions
                )
            ):
                pending.discard(topic.get("name"))
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicAdminError(
                f"topics not ready on {bootstrap} in time: {', '.join(sorted(pending))}"
            )
        time.sleep(_POLL_S)


def describe_partitions(
    bootstrap: str,
    topic: str,
    *,
    timeout_s: float = 20,
    security: KafkaSecurity | None = None,
) -> int:
    """Number of partitions of ``topic``.

    Raises:
        TopicAdminError: the topic does not exist or the broker cannot be reached.
    """
    with _admin(bootstrap, timeout_s, security) as admin:
        try:
            described = admin.describe_topics([topic])
        except UnknownTopicOrPartitionError as exc:
            raise TopicAdminError(f"no topic {topic!r} on {bootstrap}") from exc
    for entry in described:
        if entry.get("name") != topic:
            continue
        if entry.get("error_code", 0) != 0 or not entry.get("partitions"):
            raise TopicAdminError(
                f"no topic {topic!r} on {bootstrap} (error code {entry.get('error_code')})"
            )
        return len(entry["partitions"])
    raise TopicAdminError(f"no topic {topic!r} on {bootstrap}")
