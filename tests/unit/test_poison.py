"""No single message can stop a partition: tombstones and empty values are rejected as `empty`,
and an exception while decoding or merging one message rejects that message as `internal`
(its exception's type, never its text). The pipeline runs for real here, with an in-memory
store and sink; a codec and an engine that raise on one marked message stand in for a bug.
The live worker's side (real broker, PostgreSQL, restart) is tests/test_hostile_input.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.live.pipeline import Message, Pipeline
from consumers.live.testing import ListSink, MemoryStore
from streams.codec import EMPTY, INTERNAL, REASONS, Codec, Rejection
from streams.engine import Engine, Rules
from streams.engine.clock import Clock
from streams.engine.event import Event
from streams.pseudonym import Pseudonymiser
from streams.replay import replay

NOW = int(datetime(2026, 2, 10, 15, 0, tzinfo=UTC).timestamp())
SECRET = "do-not-echo-9434765919"  # text an exception's message could carry


class BuggyCodec(Codec):
    """The real codec, except that a message holding "CRASH-DECODE" raises inside it."""

    def _decode(self, raw: bytes | str) -> Any:
        if b"CRASH-DECODE" in (raw if isinstance(raw, bytes) else raw.encode()):
            raise KeyError(SECRET)
        return super()._decode(raw)


class BuggyEngine(Engine):
    """The real engine, except that merging an event of referral "CRASH-MERGE" raises."""

    def ingest(self, event: Event) -> Clock | None:
        if event.referral_id == "CRASH-MERGE":
            raise ZeroDivisionError(SECRET)
        return super().ingest(event)


def event(referral: str, n: int, instant: int = NOW - 600) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"ev-{n}",
            "source": "urn:nhs:ods:RY7",
            "type": "referral.received",
            "time": datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {"referral_id": referral, "pathway": "ucr_2h", "provider": "RY7"},
        }
    ).encode()


def test_tombstones_and_empty_values_are_rejected_as_empty() -> None:
    codec = Codec(Pseudonymiser(b"k" * 16))
    for raw in (None, b"", ""):
        result = codec.decode_record(raw)
        assert isinstance(result, Rejection)
        assert result.reason == EMPTY
    assert EMPTY in REASONS
    assert INTERNAL in REASONS


def test_an_exception_inside_the_codec_rejects_that_message_only() -> None:
    codec = BuggyCodec(Pseudonymiser(b"k" * 16))
    result = codec.decode_record(b'{"CRASH-DECODE": 1}')
    assert result == Rejection(INTERNAL, None, "KeyError")  # the type, not the message
    assert not isinstance(codec.decode_record(event("R-1", 1)), Rejection)


def test_poison_messages_are_dead_lettered_and_the_partition_moves_on() -> None:
    store, sink = MemoryStore(), ListSink()
    pipeline = Pipeline(
        engine=BuggyEngine(Rules()),
        codec=BuggyCodec(Pseudonymiser(b"k" * 16)),
        store=store,
        sink=sink,
        topic="referral-events",
        clock=lambda: float(NOW),
    )
    messages = [
        Message(0, 0, None, None),  # a tombstone without a key
        Message(0, 1, b"R-9", None),  # a tombstone with one
        Message(0, 2, b"R-9", b""),  # an empty value
        Message(0, 3, b"R-8", b'{"CRASH-DECODE": "' + SECRET.encode() + b'"}'),
        Message(0, 4, b"CRASH-MERGE", event("CRASH-MERGE", 4)),
        Message(0, 5, b"R-1", event("R-1", 5)),  # a normal event right after them
    ]
    assert asyncio.run(pipeline.process(messages)) == {}

    reasons = [(d.offset, d.reason, d.detail) for d in sink.dead]
    assert reasons == [
        (0, EMPTY, "no value (a tombstone)"),
        (1, EMPTY, "no value (a tombstone)"),
        (2, EMPTY, "empty value"),
        (3, INTERNAL, "KeyError"),
        (4, INTERNAL, "ZeroDivisionError"),
    ]
    assert all(SECRET not in repr(d) for d in sink.dead[:3] + sink.dead[4:])
    assert [d.value for d in sink.dead[:3]] == [b"", b"", b""]
    assert [o.referral_id for o in sink.outcomes] == ["R-1"]
    # The offsets of every message are committed with the batch; only R-1 is stored.
    assert store.writes == 1
    assert store.offsets == {("referral-events", 0): 6}
    assert list(store.events) == ["ev-5"]
    assert pipeline.stats.rejected == {EMPTY: 3, INTERNAL: 2}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
FIELDS = ["specversion", "id", "source", "type", "time", "datacontenttype", "data", "extra"]
DATA_FIELDS = ["referral_id", "pathway", "provider", "icb", "region", "contact_id", "mode",
               "attended", "subject_to_standard", "exclusion_reason", "reason", "extra"]  # fmt: skip
TYPES = ["referral.received", "referral.triaged", "referral.contact", "referral.cancelled"]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), st.sampled_from(DATA_FIELDS), json_values, st.sampled_from(TYPES))
def test_fuzzing_the_codec_and_engine_finds_nothing_that_raises(
    field: str, data_field: str, value: Any, kind: str
) -> None:
    # Any value in any field: the real codec names a reason (never `internal`), and what it
    # accepts merges and is judged without raising. (Fuzzing found only the tombstone.)
    doc = json.loads(event("R-1", 1))
    doc["type"] = kind
    if field == "data":
        doc["data"][data_field] = value
    else:
        doc[field] = value
    codec = Codec(Pseudonymiser(b"k" * 16))
    result = codec.decode_record(json.dumps(doc).encode())
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert result.reason != INTERNAL, result
        return
    engine = Engine(Rules())
    engine.ingest(result[0])
    engine.refresh(result[0].referral_id, NOW)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_fuzzing_the_codec_with_bytes_never_raises(raw: bytes) -> None:
    result = Codec(Pseudonymiser(b"k" * 16)).decode_record(raw)
    assert isinstance(result, Rejection)
    assert result.reason not in (INTERNAL,)


def test_replay_carries_on_past_a_line_that_raises() -> None:
    import io

    lines = b"\n".join([b'{"CRASH-DECODE": 1}', event("R-1", 1)])
    rejects = io.StringIO()
    result = replay(io.BytesIO(lines), codec=BuggyCodec(Pseudonymiser(b"k" * 16)), rejects=rejects)
    assert (result.accepted, result.rejected) == (1, 1)
    assert json.loads(rejects.getvalue())["reason"] == INTERNAL
