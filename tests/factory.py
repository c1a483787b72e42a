"""Engine events for tests, written the way a person reads them (times as RFC 3339)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from streams.codec import Codec, Rejection
from streams.engine import Change, Engine, Event, Outcome
from streams.engine.event import CANCELLED, CONTACT, RECEIVED, TRIAGED

_ids = itertools.count(1)


def at(text: str) -> int:
    """Epoch seconds of an RFC 3339 time with an offset (tests only)."""
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, text
    return int(parsed.timestamp())


def _id(event_id: str | None) -> str:
    return event_id if event_id is not None else f"e{next(_ids)}"


def received(
    ref: str,
    time: str | int,
    pathway: str = "ucr_2h",
    *,
    provider: str = "RY7",
    icb: str = "QYG",
    region: str = "Y62",
    id: str | None = None,
) -> Event:
    t = at(time) if isinstance(time, str) else time
    return Event(
        _id(id), RECEIVED, t, ref, pathway=pathway, provider=provider, icb=icb, region=region
    )


def contact(
    ref: str,
    time: str | int,
    mode: str = "face_to_face",
    *,
    attended: bool = True,
    id: str | None = None,
    contact_id: str = "c1",
) -> Event:
    t = at(time) if isinstance(time, str) else time
    return Event(_id(id), CONTACT, t, ref, contact_id=contact_id, mode=mode, attended=attended)


def triaged(
    ref: str,
    time: str | int,
    *,
    subject: bool | None = True,
    reason: str | None = None,
    pathway: str | None = None,
    id: str | None = None,
) -> Event:
    t = at(time) if isinstance(time, str) else time
    return Event(
        _id(id),
        TRIAGED,
        t,
        ref,
        pathway=pathway,
        subject_to_standard=subject,
        exclusion_reason=reason,
    )


def cancelled(
    ref: str, time: str | int, reason: str = "duplicate", *, id: str | None = None
) -> Event:
    t = at(time) if isinstance(time, str) else time
    return Event(_id(id), CANCELLED, t, ref, reason=reason)


def apply_many(engine: Engine, events: Iterable[Event], now: int) -> list[Change]:
    """Ingest a batch, then judge each touched referral once, as the live pipeline does
    (`consumers.live.pipeline`): one change per referral whose outcome moved."""
    touched = dict.fromkeys(
        clock.referral_id for event in events if (clock := engine.ingest(event)) is not None
    )
    return [change for r in touched if (change := engine.refresh(r, now)) is not None]


def outcome_of(engine: Engine, referral_id: str, now: int) -> Outcome | None:
    """One referral's outcome judged at `now` (None: unknown or not yet received)."""
    clock = engine.clock(referral_id)
    return clock.evaluate(engine.rules, now)[0] if clock is not None else None


def decode_document(codec: Codec, raw: bytes | str) -> tuple[Event, dict[str, Any]] | Rejection:
    """The codec's verdict on one message: the event and its (scrubbed) document, or why not."""
    result = codec.decode_record(raw)
    return result if isinstance(result, Rejection) else (result[0], result[1])
