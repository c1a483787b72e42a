"""`crisiswatch worker`: the Faust app around `consumers.live.pipeline.Pipeline`.

Faust owns the consumer group (partition assignment, rebalances, fetching); the pipeline owns
correctness. Three pieces of glue:

* Faust's per-record fetch loop is replaced: every fetch from the events topic goes to
  `Pipeline.process` as one batch (at most `batch_size` records each), with no Faust event,
  stream or agent per record; a partition the pipeline asks to rewind is seeked back;
* a timer calls `Pipeline.tick` four times a second, so a clock turns at risk or breached
  within a second of its threshold with no event arriving;
* the consumer's `perform_seek` is wrapped: Faust seeks assigned partitions to the offsets
  *Kafka* has committed (after every assignment); the wrapper then seeks them again to the
  positions stored in PostgreSQL, loading those partitions' open clocks on the way. Kafka's
  committed offsets are never trusted (see the pipeline docstring).

A batch that fails for a reason retries cannot fix is fatal: the process exits non-zero and
its supervisor restarts it from PostgreSQL, rather than carrying on past a hole.

Starting and stopping
---------------------
Startup fails fast, with one line and no traceback (`consumers.cli.main.main` prints it): malformed
settings (a bootstrap address, database or Alertmanager URL that cannot be parsed) are
`ConfigurationError` (exit 2, checked by `check_settings` before anything connects); a broker
that does not answer one metadata request within `BROKER_CHECK_TIMEOUT_S`, or lacks the events
topic, a database that cannot be reached, and a database whose schema this code cannot run on
(not migrated, older, or migrated by a newer release: `consumers.store.check_schema`) are
`ServiceError` (exit 1), checked before Faust starts. A supervisor should restart on 1 (the
service may come back) and not on 2.

SIGTERM (and SIGINT) drain: Faust stops fetching, then `Pipeline.drain` waits for the batch in
flight to be published *and* written (the agent shields it from cancellation) and refuses
later ones; the consumer then leaves its group (so the partitions move at once, not after the
session timeout) and the process exits 0. Anything fetched but not processed is read again by
the next owner from the positions in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP
from pydantic import SecretStr

from consumers.kafka.address import bootstrap_servers
from consumers.kafka.security import KafkaSecurity
from consumers.live.pipeline import DeadLetter, Pipeline
from consumers.observe.alertmanager import AlertmanagerAccess, AlertmanagerNotifier
from consumers.observe.metrics import MetricsServer
from consumers.store import Store, check_schema, check_url
from streams.codec import Codec
from streams.engine import Engine, Outcome, Rules
from streams.errors import ConfigurationError, ServiceError
from streams.jsontext import dumps
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from streams.runtime import tune_gc_for_batches

log = logging.getLogger("crisiswatch.worker")

#: The interpreter's thread switch interval in a worker (see `run`), in seconds.
GIL_SWITCH_INTERVAL_S: Final = 0.0005
#: Largest record batch the sink builds (bytes); the broker takes up to max_request_size.
MAX_BATCH_BYTES: Final = 1024 * 1024
#: How long the startup metadata request to the broker may take, in seconds.
BROKER_CHECK_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    kafka: str
    database_url: str
    group_id: str = "crisiswatch"
    events_topic: str = EVENTS_TOPIC
    outcomes_topic: str = OUTCOMES_TOPIC
    dlq_topic: str = DLQ_TOPIC
    batch_size: int = 5000  # events per pipeline batch (one PostgreSQL transaction)
    tick_interval: float = 0.25  # seconds between deadline checks
    session_timeout: float = 6.0  # seconds; a dead worker's partitions move after this
    data_dir: str = "/tmp/crisiswatch-worker"
    metrics_port: int = 9464  # /metrics, /health, /ready (0: a free port, logged)
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in containers
    alertmanager_url: str | None = None  # per-referral pages; none when unset
    dashboard_url: str | None = None  # linked from alerts
    # TLS and SASL of every Kafka client of the worker (Faust's consumer, the sink, the check).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity.plaintext)
    # https CA file and basic-auth user of Alertmanager; the password, read from its file.
    alertmanager_access: AlertmanagerAccess | None = None
    alertmanager_password: SecretStr | None = field(default=None, repr=False)


#: (key, value, headers) of one record to produce.
Outgoing = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


class KafkaSink:
    """Outcome records and dead letters to Kafka (aiokafka; no idempotence: see README).

    A batch's records are grouped by partition into record batches (aiokafka's
    `create_batch`/`send_batch`) instead of one `send` each: one future per partition, not per
    record. Partitions are chosen as `send` would (the Java client's murmur2 of the key), so
    all outcomes of a referral stay on one partition, in order.
    """

    def __init__(
        self,
        bootstrap: str,
        outcomes_topic: str,
        dlq_topic: str,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._producer = AIOKafkaProducer(
            **(security or KafkaSecurity.plaintext()).aiokafka(),
            bootstrap_servers=bootstrap,
            acks=1,
            linger_ms=5,
            enable_idempotence=False,
            max_request_size=4 * 1024 * 1024,
            max_batch_size=MAX_BATCH_BYTES,
        )
        self._outcomes = outcomes_topic
        self._dlq = dlq_topic
        self._started = False
        self._partitioner = DefaultPartitioner()

    async def start(self) -> None:
        if not self._started:
            await self._producer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._producer.stop()
            self._started = False

    async def publish(self, outcomes: Sequence[Outcome], dead: Sequence[DeadLetter]) -> None:
        await self.start()
        futures = await self._send(
            self._outcomes,
            [(o.referral_id.encode(), dumps(o.to_record()), []) for o in outcomes],
        )
        letters: list[Outgoing] = []
        for letter in dead:
            headers = [
                ("reason", letter.reason.encode()),
                ("detail", letter.detail.encode()),
                ("source-partition", str(letter.partition).encode()),
                ("source-offset", str(letter.offset).encode()),
            ]
            if letter.field is not None:
                headers.append(("field", letter.field.encode()))
            headers += [(name, value.encode()) for name, value in letter.notes]
            letters.append((letter.key, letter.value, headers))
        futures += await self._send(self._dlq, letters)
        if futures:
            await asyncio.gather(*futures)

    async def _send(self, topic: str, records: Sequence[Outgoing]) -> list[asyncio.Future[Any]]:
        if not records:
            return []
        producer = self._producer
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[Outgoing]] = {}
        for record in records:
            partition = self._partitioner(record[0], partitions, partitions)
            by_partition.setdefault(partition, []).append(record)
        futures = []
        for partition, items in by_partition.items():
            batch = producer.create_batch()
            for key, value, headers in items:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise ValueError(f"a record of {len(value)} bytes exceeds a batch")
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures


class CrisiswatchApp(faust.App):  # type: ignore[misc]
    """faust.App whose consumer hands whole fetches to the pipeline (module docstring).

    Two changes to Faust's consumer, made when it is created:

    * `perform_seek` (after every assignment) re-seeks the events partitions to the positions
      stored in PostgreSQL, after Faust's own seek to Kafka's committed offsets;
    * `_drain_messages`, Faust's fetch loop, is replaced by `_drain_batches`: each fetch's
      records (aiokafka's, as they are) become one list for `Pipeline.process`, instead of
      one Faust event (and stream/agent dispatch) per record. Faust still owns the group, the
      subscription, rebalances and flow control (a paused or revoked partition is not fetched).
    """

    pipeline: Pipeline
    events_topic_name: str
    batch_size: int

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        original = consumer.perform_seek

        async def perform_seek() -> None:
            await original()
            mine = [tp for tp in consumer.assignment() if tp.topic == self.events_topic_name]
            if not mine:
                return
            positions = await self.pipeline.assign([tp.partition for tp in mine])
            # seek_wait runs the seeks on the consumer's own thread; `seek` would touch
            # aiokafka's fetch buffers from this one while that thread reads them, a race that
            # can stop a worker in a rebalance.
            await consumer.seek_wait({tp: positions[tp.partition] for tp in mine})

        async def drain_messages(fetcher: Any) -> None:
            await self._drain_batches(consumer, fetcher)

        consumer.perform_seek = perform_seek
        consumer._drain_messages = drain_messages
        return consumer

    async def _drain_batches(self, consumer: Any, fetcher: Any) -> None:
        """Fetch records and process them a batch at a time, until the consumer stops.

        Nothing fetched for a partition this worker owns is ever dropped (the consumer's
        position has moved past it, so it would not come again), except after asking for a
        rewind: the partition is seeked back and its later records in this fetch are left for
        the fetches that follow. Records of partitions no longer owned (a rebalance happened
        in between) are dropped: their next owner reads them from the positions in PostgreSQL.
        """
        topic = self.events_topic_name
        pipeline = self.pipeline
        size = self.batch_size
        while not (consumer.should_stop or fetcher.should_stop or pipeline.draining):
            records, _ = await consumer._wait_next_records(1.0)
            if not records or consumer.should_stop:
                await asyncio.sleep(0)
                continue
            batch = [
                record
                for tp, partition_records in records.items()
                if tp.topic == topic
                for record in partition_records
            ]
            rewound: set[int] = set()
            for start in range(0, len(batch), size):
                owned = {tp.partition for tp in consumer.assignment() if tp.topic == topic}
                chunk = [
                    m
                    for m in batch[start : start + size]
                    if m.partition in owned and m.partition not in rewound
                ]
                if not chunk:
                    continue
                try:
                    # Shielded: a shutdown cancels this loop, never a half-done batch (the
                    # drain waits for it).
                    rewind = await asyncio.shield(pipeline.process(chunk, wait=False))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    _exit_beyond_retry("batch")
                if rewind:
                    await consumer.seek_wait({TP(topic, p): o for p, o in rewind.items()})
                    rewound.update(rewind)
            await asyncio.sleep(0)  # let the timer and the metrics server in


def build_app(config: WorkerConfig, pipeline: Pipeline) -> CrisiswatchApp:
    app = CrisiswatchApp(
        config.group_id,
        broker=f"kafka://{config.kafka.split(',')[0]}",
        store="memory://",
        datadir=config.data_dir,
        broker_session_timeout=config.session_timeout,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=60.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=1,
        # Faust's commits are advisory only (positions live in PostgreSQL); nothing is acked.
        broker_commit_every=10_000,
        broker_commit_interval=2.8,
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        # TLS and SASL for Faust's consumer and producer: the same settings, built in the same
        # place (consumers.kafka.security), as the sink's and the tools' clients.
        broker_credentials=config.kafka_security.faust_credentials(),
    )
    app.pipeline = pipeline
    app.events_topic_name = config.events_topic
    app.batch_size = config.batch_size
    # Subscribe to the events topic without an agent: `_drain_batches` consumes it.
    app.topics.add(app.topic(config.events_topic, value_serializer="raw", key_serializer="raw"))

    @app.timer(interval=config.tick_interval)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        try:
            await pipeline.tick()
        except Exception:
            _exit_beyond_retry("deadline tick")

    @app.on_rebalance_complete.connect  # type: ignore[untyped-decorator]
    async def on_rebalanced(app: Any, **_: Any) -> None:
        # Faust seeks (and so assigns, in `perform_seek`) only when it was given partitions: a
        # worker given none of the events topic is told here that it is a standby.
        mine = [tp for tp in app.consumer.assignment() if tp.topic == config.events_topic]
        if not mine:
            await pipeline.assign([])

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def on_revoked(app: Any, revoked: set[Any], **_: Any) -> None:
        await pipeline.revoke(tp.partition for tp in revoked if tp.topic == config.events_topic)

    return app


def _exit_beyond_retry(what: str) -> NoReturn:
    """Log the exception being handled and exit 70 at once: the supervisor restarts the
    worker, which resumes from PostgreSQL, rather than carrying on past a hole."""
    log.exception("%s failed beyond retry; exiting so the worker restarts clean", what)
    logging.shutdown()
    os._exit(70)


def check_settings(config: WorkerConfig) -> None:
    """`ConfigurationError` (exit 2) for any address or URL that cannot be parsed."""
    bootstrap_servers(config.kafka)
    check_url(config.database_url)
    for name, value in (
        ("--alertmanager-url / CRISISWATCH_ALERTMANAGER_URL", config.alertmanager_url),
        ("--dashboard-url / CRISISWATCH_DASHBOARD_URL", config.dashboard_url),
    ):
        if value is None:
            continue
        try:
            parts = urlsplit(value)
        except ValueError as exc:
            raise ConfigurationError(f"{name}: {value!r} is not a URL ({exc})") from exc
        if "@" in parts.netloc:
            # Never quoted: the URL holds a password. Credentials come from files.
            raise ConfigurationError(
                f"{name}: credentials in the URL are refused (use "
                "CRISISWATCH_ALERTMANAGER_USERNAME and CRISISWATCH_ALERTMANAGER_PASSWORD_FILE)"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ConfigurationError(f"{name}: {value!r} is not a URL ({exc})") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"{name}: {value!r} is not an http(s)://HOST[:PORT] URL")


def check_broker(config: WorkerConfig, timeout_s: float = BROKER_CHECK_TIMEOUT_S) -> None:
    """One metadata request: `ServiceUnavailableError` if no broker answers in `timeout_s`,
    `ServiceError` if the events topic does not exist (Faust would otherwise wait forever)."""
    from consumers.kafka.admin import TopicAdminError, list_topics

    # kafka-python logs every failed attempt at INFO-ERROR; the outcome is our one line.
    library = logging.getLogger("kafka")
    level = library.level
    library.setLevel(logging.CRITICAL)
    from consumers.kafka.diagnose import preflight

    preflight(config.kafka, config.kafka_security)
    try:
        topics = list_topics(config.kafka, timeout_s=timeout_s, security=config.kafka_security)
    except TopicAdminError as exc:
        from consumers.kafka.diagnose import connection_error

        raise connection_error(config.kafka, config.kafka_security, timeout_s) from exc
    except ValueError as exc:  # kafka-python's own address check
        raise ConfigurationError(f"--kafka {config.kafka!r}: {exc}") from exc
    finally:
        library.setLevel(level)
    if config.events_topic not in topics:
        raise ServiceError(
            f"no topic {config.events_topic!r} on Kafka at {config.kafka} "
            "(create it with 'crisiswatch topics create')"
        )


async def leave_group(app: Any, timeout_s: float = 10.0) -> None:
    """Close the Kafka consumer now, which sends LeaveGroup (best effort).

    Faust closes its aiokafka consumer on its own thread at the very end of shutdown, and the
    process may exit before that thread gets there; the group would then wait a session
    timeout before moving the partitions. Closing it here, after the drain, is prompt.
    """
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    if thread is None or consumer is None:
        return

    async def stop() -> None:
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is not None and coordinator.generation == 0 and coordinator.member_id:
            # Tansu numbers the first generation 0, which aiokafka takes for "never joined"
            # and so skips LeaveGroup; Apache Kafka starts at 1. Send it ourselves.
            from aiokafka.protocol.group import LeaveGroupRequest

            await coordinator._send_req(
                LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
            )
            log.info("LeaveGroup request succeeded")
        await consumer.stop()

    try:
        await asyncio.wait_for(thread.call_thread(stop), timeout_s)
    except Exception as exc:  # the group then notices after the session timeout
        log.warning("could not leave the consumer group cleanly: %s", exc)
    else:
        log.info("left the consumer group")


async def make_pipeline(
    config: WorkerConfig, rules: Rules, codec: Codec
) -> tuple[Pipeline, Store, KafkaSink]:
    store = await Store.connect(config.database_url, rules=rules)
    sink = KafkaSink(
        config.kafka, config.outcomes_topic, config.dlq_topic, security=config.kafka_security
    )
    pipeline = Pipeline(
        engine=Engine(rules), codec=codec, store=store, sink=sink, topic=config.events_topic
    )
    return pipeline, store, sink


def run(config: WorkerConfig, rules: Rules, codec: Codec) -> None:
    """Run a worker until SIGTERM/SIGINT, which drain it (module docstring); exit code 0.

    Raises `ConfigurationError` or `ServiceError` before starting if a setting is malformed
    or the broker or database cannot be reached.
    """
    check_settings(config)
    check_broker(config)
    check_schema(config.database_url)  # before Faust: a wrong schema is one line, exit 1
    # The store's writer thread waits on PostgreSQL with the GIL released; when an answer
    # comes, it needs the GIL back promptly to send the next statement, not after the
    # default 5 ms slice of a busy event loop (docs/benchmarks.md has the figures).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    tune_gc_for_batches()  # batches' short-lived objects; see streams.runtime
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # Metrics first: /health answers (and a busy port fails fast) while PostgreSQL connects.
    metrics = MetricsServer(config.metrics_host, config.metrics_port)
    try:
        loop.run_until_complete(metrics.start())
        pipeline, store, sink = loop.run_until_complete(make_pipeline(config, rules, codec))
    except BaseException:
        loop.run_until_complete(metrics.stop())
        loop.close()
        raise
    metrics.watch(pipeline)
    notifier = None
    if config.alertmanager_url:
        access = config.alertmanager_access
        notifier = AlertmanagerNotifier(
            config.alertmanager_url,
            rules=rules,
            dashboard_url=config.dashboard_url,
            ssl_context=access.ssl_context() if access is not None else None,
            username=access.username if access is not None else None,
            password=config.alertmanager_password,
        )
        loop.run_until_complete(notifier.start())
        pipeline.listeners.append(notifier.on_changes)
        # After a restart or rebalance, take over (or let go of) the pages of the clocks
        # this worker now owns: the engine reports only changes, not restored states.
        pipeline.ownership_listeners.append(
            lambda: notifier.reconcile(pipeline.engine.published(), int(time.time()))
        )
    app = build_app(config, pipeline)
    # override_logging=False: keep the handler of `consumers.observe.logs` (JSON lines).
    worker = faust.Worker(app, loop=loop, quiet=True, override_logging=False)

    @app.on_before_shutdown.connect  # type: ignore[untyped-decorator]
    async def close(app: Any, **_: Any) -> None:
        await pipeline.drain()
        log.info(
            "leaving the consumer group %r (partitions %s move to the other workers now)",
            config.group_id,
            sorted(pipeline.partitions),
        )
        await leave_group(app)
        await sink.stop()
        await store.close()
        await metrics.stop()
        if notifier is not None:
            await notifier.stop()

    worker.execute_from_commandline()
