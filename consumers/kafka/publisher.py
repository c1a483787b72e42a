"""Kafka producer adapter: referral-event lines onto `referral-events`, keyed by referral id.

`EventPublisher` wraps one kafka-python `KafkaProducer` tuned for bulk loads of small JSON
messages (acks=1, a short linger, large gzip batches) and turns kafka-python's errors into
crisiswatch's (`ServiceUnavailableError` when no broker answers, `ServiceError` otherwise).
Idempotence is off: kafka-python 3 turns it on by default and Tansu, the embedded broker, fails
idempotent producers; at-least-once is all the pipeline needs, since the engine ignores a
repeated event id (STANDARDS R8).

`publish_lines` is the one loop that checks and sends NDJSON lines, shared by `crisiswatch
publish`, `crisiswatch simulate` and the demo. Every line is decoded by the codec first, for
two reasons: a bad line is reported (reason and line number) rather than sent, and the message
key must be the event's `data.referral_id` so that all events of one referral land on one
partition, in order. The bytes sent are the *original* line, never a re-serialisation: what the
source system wrote is what the worker (and the audit log) sees.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self

from streams.codec import Codec, Rejection
from streams.errors import ConfigurationError, ServiceError
from streams.pseudonym import may_contain

if TYPE_CHECKING:
    from consumers.kafka.security import KafkaSecurity

__all__ = [
    "EventPublisher",
    "EventSink",
    "PublishReport",
    "publish_lines",
]

#: How long connecting to the broker may take, in seconds.
CONNECT_TIMEOUT_S: Final = 8.0
#: How long a `send` may block on a full buffer or missing metadata, in seconds.
MAX_BLOCK_S: Final = 10.0
#: Wait before a batch is sent, in milliseconds: short, so a live trickle is not held back.
LINGER_MS: Final = 10
#: Largest record batch, in bytes (an event is a few hundred bytes: ~1,500 a batch).
BATCH_SIZE: Final = 512 * 1024
#: Batch compression. gzip (zlib, in C) nearly doubles throughput: without a C CRC32C module
#: kafka-python checksums every batch in pure Python, and a compressed batch is several times
#: smaller. It also keeps the embedded broker's in-memory log small. Every Kafka client reads it.
COMPRESSION: Final = "gzip"
#: How long `flush` waits for outstanding messages by default, in seconds.
FLUSH_TIMEOUT_S: Final = 60.0
#: How many line numbers of rejected lines a report keeps.
REJECTED_LINES_KEPT: Final = 10


class EventSink(Protocol):
    """Where `publish_lines` sends: an `EventPublisher`, or a fake in tests."""

    def send(self, key: str | None, value: bytes) -> None: ...

    def flush(self) -> None: ...


@dataclass(slots=True)
class PublishReport:
    """What `publish_lines` did. `seconds` includes the final flush."""

    lines: int = 0  # non-blank lines read
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> lines
    rejected_lines: list[int] = field(default_factory=list)  # the first few, 1-based
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def rate(self) -> float:
        """Messages sent a second (0 when nothing was timed)."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def rejections_text(self) -> str:
        """`"bad_time 2, invalid_json 1 (lines 6, 9, 12)"`; empty when nothing was rejected."""
        if not self.rejected:
            return ""
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected.items()))
        numbers = ", ".join(str(n) for n in self.rejected_lines)
        more = ", ..." if self.rejected_total > len(self.rejected_lines) else ""
        plural = "s" if self.rejected_total > 1 else ""
        return f"{reasons} (line{plural} {numbers}{more})"


def publish_lines(
    lines: Iterable[bytes],
    publisher: EventSink,
    codec: Codec,
    *,
    send_rejected: bool = False,
    progress: Callable[[int], object] | None = None,
) -> PublishReport:
    """Check each NDJSON line with `codec` and send the valid ones, keyed by referral id.

    Lines may keep their line ends; blank lines are skipped (but count for line numbers).
    A rejected line is counted by reason and not sent -- unless `send_rejected` (the simulator,
    whose bad lines exist to exercise the dead-letter path), when it is sent without a key.
    `progress`, if given, is called with each line's size in bytes. Ends with a flush.
    """
    report = PublishReport()
    started = time.perf_counter()
    send = publisher.send
    decode = codec.decode
    try:
        for number, line in enumerate(lines, start=1):
            if progress is not None:
                progress(len(line))
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            report.lines += 1
            event = decode(raw)
            if isinstance(event, Rejection):
                report.rejected[event.reason] += 1
                if len(report.rejected_lines) < REJECTED_LINES_KEPT:
                    report.rejected_lines.append(number)
                if send_rejected:
                    send(None, raw)
                    report.sent += 1
                continue
            key = event.referral_id
            if may_contain(raw):
                # The codec may have replaced an NHS-number-shaped id by a pseudonym whose key
                # can change per process; partitioning must follow the id as sent.
                key = _sent_referral_id(raw, key)
            send(key, raw)
            report.sent += 1
        publisher.flush()
    finally:
        report.seconds = time.perf_counter() - started
    return report


def _sent_referral_id(raw: bytes, fallback: str) -> str:
    try:
        value = json.loads(raw)["data"]["referral_id"]
    except (ValueError, KeyError, TypeError):
        return fallback
    return value if isinstance(value, str) else fallback


class EventPublisher:
    """A kafka-python producer of raw messages to one topic; use it as a context manager.

    `start()` (or `with`) connects and checks that `topic` exists, within `connect_timeout_s`;
    a broker that does not answer raises `ServiceUnavailableError`, a missing topic
    `ServiceError`. `send` hands a message to the producer's buffer (counted in `sent`);
    delivery failures are counted in `failed` as they come back, and `flush` raises
    `ServiceError` if any message was not delivered.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        client_id: str = "crisiswatch-publisher",
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        linger_ms: int = LINGER_MS,
        batch_size: int = BATCH_SIZE,
        compression: str | None = COMPRESSION,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security  # None: PLAINTEXT
        self.topic = topic
        self.sent = 0
        self.failed = 0
        self._client_id = client_id
        self._connect_timeout_s = connect_timeout_s
        self._linger_ms = linger_ms
        self._batch_size = batch_size
        self._compression = compression
        self._producer: Any = None
        self._first_error: BaseException | None = None

    def start(self) -> Self:
        """Connect to the broker and check that the topic exists; idempotent."""
        if self._producer is not None:
            return self
        from consumers.kafka.admin import TopicAdminError, list_topics

        kafka, errors = _kafka()
        # kafka-python 3 says "no broker" with a timeout; 2.x had NoBrokersAvailable.
        unreachable = (
            errors.KafkaTimeoutError,
            errors.KafkaConnectionError,
            getattr(errors, "NoBrokersAvailable", errors.KafkaTimeoutError),
        )
        from consumers.kafka.diagnose import preflight

        if self.security is not None:
            preflight(self.bootstrap, self.security)
        # Ask which topics exist first: Tansu creates any topic a producer asks metadata for
        # (with its own partition count), so a typo would silently make a new topic.
        try:
            topics = list_topics(
                self.bootstrap, timeout_s=self._connect_timeout_s, security=self.security
            )
        except TopicAdminError as exc:
            if isinstance(exc.__cause__, unreachable):
                raise self._unavailable() from exc
            raise ServiceError(str(exc)) from exc
        except ValueError as exc:  # an unparsable bootstrap address
            raise ConfigurationError(f"--kafka {self.bootstrap!r}: {exc}") from exc
        if self.topic not in topics:
            raise ServiceError(
                f"no topic {self.topic!r} on Kafka at {self.bootstrap} "
                "(create it with 'crisiswatch topics create')"
            )
        try:
            self._producer = kafka.KafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=self._client_id,
                enable_idempotence=False,  # Tansu fails idempotent producers (module docstring)
                acks=1,
                linger_ms=self._linger_ms,
                batch_size=self._batch_size,
                compression_type=self._compression,
                bootstrap_timeout_ms=max(1, int(self._connect_timeout_s * 1000)),
                max_block_ms=int(MAX_BLOCK_S * 1000),
                **(self.security.kafka_python() if self.security is not None else {}),
            )
        except unreachable as exc:
            raise self._unavailable() from exc
        except errors.KafkaError as exc:
            raise ServiceError(f"Kafka at {self.bootstrap}: {exc}") from exc
        return self

    def _unavailable(self) -> ServiceError:
        from consumers.kafka.diagnose import connection_error

        return connection_error(self.bootstrap, self.security, self._connect_timeout_s)

    def send(self, key: str | None, value: bytes) -> None:
        """Queue one message (blocks only while the producer's buffer is full)."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("EventPublisher.send before start()")
        try:
            future = producer.send(
                self.topic, value=value, key=key.encode("utf-8") if key is not None else None
            )
        except Exception as exc:  # KafkaError subclasses, and AssertionError on bad arguments
            raise ServiceError(f"cannot send to {self.topic!r} on {self.bootstrap}: {exc}") from exc
        future.add_errback(self._on_error)
        self.sent += 1

    def _on_error(self, exc: BaseException) -> None:
        # Runs on the producer's I/O thread; the main thread only reads these after a flush.
        self.failed += 1
        if self._first_error is None:
            self._first_error = exc

    @property
    def delivered(self) -> int:
        """Messages sent and not failed (exact after `flush`)."""
        return self.sent - self.failed

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Wait for every queued message; `ServiceError` if any was not delivered."""
        producer = self._producer
        if producer is None:
            return
        _, errors = _kafka()
        try:
            producer.flush(timeout=timeout_s)
        except errors.KafkaTimeoutError as exc:
            raise ServiceError(
                f"Kafka at {self.bootstrap} did not take every message within {timeout_s:g} s"
            ) from exc
        if self.failed:
            raise ServiceError(
                f"{self.failed} of {self.sent} messages not delivered to {self.topic!r} on "
                f"{self.bootstrap}: {self._first_error}"
            ) from self._first_error

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the producer (sending what is queued, for at most `timeout_s`); idempotent."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # After an error or Ctrl-C, do not hang long on a broker that may be the problem.
        self.close(timeout_s=10.0 if exc_type is None else 2.0)


def _kafka() -> tuple[Any, Any]:
    """The `kafka` and `kafka.errors` modules, imported without their import-time warnings."""
    with warnings.catch_warnings():
        # kafka-python 3.0 loads protocol schemas with importlib.resources.read_text/open_text,
        # which warn (DeprecationWarning) on Python >= 3.11.
        warnings.filterwarnings(
            "ignore", message=r"(read|open)_text is deprecated", category=DeprecationWarning
        )
        import kafka
        import kafka.errors
    return kafka, kafka.errors
