"""The CloudEvents codec (CONTRACT section 1): rejections with reasons, acceptance, and the
fast check proved against the `jsonschema` reference validator.

The reference is `jsonschema.Draft7Validator` over `streams.codec.schema()`. JSON Schema
patterns are ECMA-262 regular expressions, where `$` matches only at the very end of the
string; Python's `re` (which `jsonschema` uses as is) also lets `$` match before a trailing
newline, so plain `Draft7Validator` accepts e.g. a provider `"RY7\\n"` that the schema means to
refuse (and that `fastjsonschema`, the codec's full validator, refuses). `REFERENCE` is
therefore `Draft7Validator` with ECMA-262 `$`; the fast check is checked against both.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streams.codec import (
    BAD_TIME,
    BAD_VALUE,
    DEFAULT_MAX_BYTES,
    EMPTY,
    INVALID_JSON,
    MAX_DEPTH,
    MISSING_FIELD,
    NOT_CLOUDEVENT,
    REASONS,
    TOO_LARGE,
    UNKNOWN_TYPE,
    Codec,
    Rejection,
    _unstorable,
    schema,
)
from streams.engine.event import (
    CANCEL_REASONS,
    CONTACT_MODES,
    EXCLUSION_REASONS,
    PATHWAYS,
    Event,
)
from streams.pseudonym import Pseudonymiser
from tests.factory import decode_document

SHARED = Path(__file__).resolve().parents[3] / "shared"
GOLDEN_EVENTS = SHARED / "golden" / "events.ndjson"
GOLDEN_BAD_LINE = 6  # the golden README: exactly one line is not JSON

CODEC = Codec(Pseudonymiser(b"test-key-for-the-codec-suite-0123"))


# -- reference validators ----------------------------------------------------------------------

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, _schema: Any
) -> Iterator[jsonschema.ValidationError]:
    if isinstance(instance, str) and not re.search(
        _UNESCAPED_DOLLAR.sub(r"\\Z", pattern), instance
    ):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


PLAIN_REFERENCE = jsonschema.Draft7Validator(schema())
REFERENCE = jsonschema.validators.extend(jsonschema.Draft7Validator, {"pattern": _ecma_pattern})(
    schema()
)


def test_the_reference_validators_accept_the_schema() -> None:
    jsonschema.Draft7Validator.check_schema(schema())


def test_the_ecma_reference_refuses_a_trailing_newline_that_python_re_lets_through() -> None:
    # Why REFERENCE exists: the two differ exactly on `$` before a final newline.
    doc = received_doc(provider="RY7\n")
    assert PLAIN_REFERENCE.is_valid(doc)
    assert not REFERENCE.is_valid(doc)
    assert REFERENCE.is_valid(received_doc())


# -- documents ---------------------------------------------------------------------------------

T0 = "2026-02-03T14:00:00Z"
T0_EPOCH = int(datetime(2026, 2, 3, 14, tzinfo=UTC).timestamp())


def envelope(kind: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "ev-1",
        "source": "urn:nhs:ods:RYX",
        "type": kind,
        "time": T0,
        "datacontenttype": "application/json",
        "data": data,
        **extra,
    }


def received_doc(**data: Any) -> dict[str, Any]:
    base = {"referral_id": "R-1", "pathway": "ucr_2h", "provider": "RY7", "icb": "QYG"}
    return envelope("referral.received", {**base, **data})


def triaged_doc(**data: Any) -> dict[str, Any]:
    return envelope("referral.triaged", {"referral_id": "R-1", **data})


def contact_doc(**data: Any) -> dict[str, Any]:
    base = {"referral_id": "R-1", "contact_id": "C-1", "mode": "face_to_face", "attended": True}
    return envelope("referral.contact", {**base, **data})


def cancelled_doc(**data: Any) -> dict[str, Any]:
    return envelope("referral.cancelled", {"referral_id": "R-1", "reason": "withdrawn", **data})


DROP = object()


def edit(doc: dict[str, Any], path: str, value: Any = DROP) -> dict[str, Any]:
    """A copy of `doc` with the dotted `path` set to `value`, or removed (DROP)."""
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    target = doc
    for part in parents:
        target = target[part]
    if value is DROP:
        del target[last]
    else:
        target[last] = value
    return doc


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def deep(levels: int, leaf: bytes) -> bytes:
    """A valid received event with `leaf` under `levels` nested arrays in an unknown field."""
    return raw(received_doc(deep="MARK")).replace(b'"MARK"', b"[" * levels + leaf + b"]" * levels)


def padded(doc: dict[str, Any], size: int) -> bytes:
    """`doc` as exactly `size` bytes, by an unknown extra field of spaces."""
    doc = {**doc, "padding": ""}
    short = size - len(raw(doc))
    assert short >= 0
    return raw({**doc, "padding": " " * short})


# -- rejections --------------------------------------------------------------------------------

REJECTIONS = [
    # not JSON at all
    pytest.param(b"this line is not JSON", INVALID_JSON, None, id="not-json"),
    # JSON cut short
    pytest.param(raw(received_doc())[:-5], INVALID_JSON, None, id="truncated-json"),
    # a byte that is not UTF-8 inside a string
    pytest.param(raw(received_doc()).replace(b"R-1", b"R-\xff"), INVALID_JSON, None, id="bad-utf8"),
    # a lone continuation byte before the document
    pytest.param(b"\x80" + raw(received_doc()), INVALID_JSON, None, id="bad-utf8-lead"),
    # UTF-16 is not the contract's UTF-8 (and would hide digits from the NHS-number scan)
    pytest.param(json.dumps(received_doc()).encode("utf-16-le"), INVALID_JSON, None, id="utf16-le"),
    # UTF-16 with its byte-order mark
    pytest.param(json.dumps(received_doc()).encode("utf-16"), INVALID_JSON, None, id="utf16-bom"),
    # NaN is Python's JSON extension, not JSON (RFC 8259), even in an unknown extra field
    pytest.param(
        raw(received_doc()).replace(b'"data":', b'"x": NaN, "data":'),
        INVALID_JSON,
        None,
        id="nan",
    ),
    # Infinity likewise
    pytest.param(
        raw(received_doc()).replace(b'"data":', b'"x": -Infinity, "data":'),
        INVALID_JSON,
        None,
        id="infinity",
    ),
    # a number beyond a double would be re-encoded as Infinity, which jsonb refuses
    pytest.param(
        raw(received_doc()).replace(b'"data":', b'"x": -1.5e400, "data":'),
        INVALID_JSON,
        None,
        id="float-overflow",
    ),
    # nesting deeper than the parser's recursion limit, within the size limit: no crash
    pytest.param(b"[" * 60_000, INVALID_JSON, None, id="deep-nesting"),
    # nested past MAX_DEPTH, within the parser's limit: scrubbing an NHS number at the bottom
    # recursed past Python's stack (a RecursionError stopped the worker)
    pytest.param(deep(500, b'"943 476 5919"'), INVALID_JSON, None, id="deep-nesting-nhs-number"),
    # likewise through the NUL/surrogate screen that any JSON escape triggers
    pytest.param(deep(340, b'"\\u0041"'), INVALID_JSON, None, id="deep-nesting-escape"),
    # one level past MAX_DEPTH (envelope, data, then 63 arrays)
    pytest.param(deep(MAX_DEPTH - 1, b"1"), INVALID_JSON, None, id="deep-nesting-limit"),
    # 100000 '[' is over the 64 KiB size limit before any parsing
    pytest.param(b"[" * 100_000, TOO_LARGE, None, id="deep-nesting-oversized"),
    # empty message
    # no bytes at all (a tombstone is the same: tests/unit/test_poison.py)
    pytest.param(b"", EMPTY, None, id="empty"),
    # a JSON array
    pytest.param(b"[1, 2]", NOT_CLOUDEVENT, None, id="array"),
    # a JSON number
    pytest.param(b"42", NOT_CLOUDEVENT, None, id="number"),
    # a JSON string
    pytest.param(b'"referral.received"', NOT_CLOUDEVENT, None, id="string"),
    # JSON null
    pytest.param(b"null", NOT_CLOUDEVENT, None, id="null"),
    # an empty object
    pytest.param(b"{}", NOT_CLOUDEVENT, "specversion", id="empty-object"),
    # no specversion
    pytest.param(
        raw(edit(received_doc(), "specversion")), NOT_CLOUDEVENT, "specversion", id="no-specversion"
    ),
    # no id
    pytest.param(raw(edit(received_doc(), "id")), NOT_CLOUDEVENT, "id", id="no-id"),
    # no source
    pytest.param(raw(edit(received_doc(), "source")), NOT_CLOUDEVENT, "source", id="no-source"),
    # no type (every type's data rules then apply in the schema: the reason must still be this)
    pytest.param(raw(edit(received_doc(), "type")), NOT_CLOUDEVENT, "type", id="no-type"),
    # no type, on a contact
    pytest.param(raw(edit(contact_doc(), "type")), NOT_CLOUDEVENT, "type", id="no-type-contact"),
    # CloudEvents 0.3
    pytest.param(
        raw(edit(received_doc(), "specversion", "0.3")),
        NOT_CLOUDEVENT,
        "specversion",
        id="specversion-0.3",
    ),
    # specversion as a number
    pytest.param(
        raw(edit(received_doc(), "specversion", 1.0)),
        NOT_CLOUDEVENT,
        "specversion",
        id="specversion-number",
    ),
    # a type nobody defined
    pytest.param(
        raw(edit(received_doc(), "type", "referral.discharged")),
        UNKNOWN_TYPE,
        "type",
        id="unknown-type",
    ),
    # a type that is not a string
    pytest.param(raw(edit(received_doc(), "type", 7)), UNKNOWN_TYPE, "type", id="type-number"),
    # no time
    pytest.param(raw(edit(received_doc(), "time")), MISSING_FIELD, "time", id="no-time"),
    # no data
    pytest.param(raw(edit(received_doc(), "data")), MISSING_FIELD, "data", id="no-data"),
    # data that is not an object
    pytest.param(raw(edit(received_doc(), "data", "R-1")), BAD_VALUE, "data", id="data-string"),
    # received without referral_id
    pytest.param(
        raw(edit(received_doc(), "data.referral_id")),
        MISSING_FIELD,
        "data.referral_id",
        id="received-no-referral-id",
    ),
    # triaged without referral_id
    pytest.param(
        raw(edit(triaged_doc(), "data.referral_id")),
        MISSING_FIELD,
        "data.referral_id",
        id="triaged-no-referral-id",
    ),
    # contact without referral_id
    pytest.param(
        raw(edit(contact_doc(), "data.referral_id")),
        MISSING_FIELD,
        "data.referral_id",
        id="contact-no-referral-id",
    ),
    # cancelled without referral_id
    pytest.param(
        raw(edit(cancelled_doc(), "data.referral_id")),
        MISSING_FIELD,
        "data.referral_id",
        id="cancelled-no-referral-id",
    ),
    # received without pathway
    pytest.param(
        raw(edit(received_doc(), "data.pathway")), MISSING_FIELD, "data.pathway", id="no-pathway"
    ),
    # received without provider
    pytest.param(
        raw(edit(received_doc(), "data.provider")), MISSING_FIELD, "data.provider", id="no-provider"
    ),
    # contact without contact_id
    pytest.param(
        raw(edit(contact_doc(), "data.contact_id")),
        MISSING_FIELD,
        "data.contact_id",
        id="no-contact-id",
    ),
    # contact without mode
    pytest.param(raw(edit(contact_doc(), "data.mode")), MISSING_FIELD, "data.mode", id="no-mode"),
    # contact without attended
    pytest.param(
        raw(edit(contact_doc(), "data.attended")), MISSING_FIELD, "data.attended", id="no-attended"
    ),
    # cancelled without reason
    pytest.param(
        raw(edit(cancelled_doc(), "data.reason")), MISSING_FIELD, "data.reason", id="no-reason"
    ),
    # not subject to the standard, but no reason why
    pytest.param(
        raw(triaged_doc(subject_to_standard=False)),
        MISSING_FIELD,
        "data.exclusion_reason",
        id="excluded-no-reason",
    ),
    # a pathway that does not exist
    pytest.param(raw(received_doc(pathway="ucr_4h")), BAD_VALUE, "data.pathway", id="pathway-enum"),
    # pathway as a number
    pytest.param(raw(received_doc(pathway=3)), BAD_VALUE, "data.pathway", id="pathway-3"),
    # re-triage to an unknown pathway
    pytest.param(
        raw(triaged_doc(pathway="ucr")), BAD_VALUE, "data.pathway", id="triage-pathway-enum"
    ),
    # a contact mode that does not exist
    pytest.param(raw(contact_doc(mode="home_visit")), BAD_VALUE, "data.mode", id="mode-enum"),
    # a cancel reason that does not exist
    pytest.param(
        raw(cancelled_doc(reason="lost")), BAD_VALUE, "data.reason", id="cancel-reason-enum"
    ),
    # an exclusion reason that does not exist
    pytest.param(
        raw(triaged_doc(subject_to_standard=False, exclusion_reason="busy")),
        BAD_VALUE,
        "data.exclusion_reason",
        id="exclusion-enum",
    ),
    # attended as a word
    pytest.param(raw(contact_doc(attended="yes")), BAD_VALUE, "data.attended", id="attended-yes"),
    # attended as 1 (not a JSON boolean)
    pytest.param(raw(contact_doc(attended=1)), BAD_VALUE, "data.attended", id="attended-1"),
    # subject_to_standard as a string
    pytest.param(
        raw(triaged_doc(subject_to_standard="false", exclusion_reason="other")),
        BAD_VALUE,
        "data.subject_to_standard",
        id="subject-string",
    ),
    # subject_to_standard as 0 (not false)
    pytest.param(
        raw(triaged_doc(subject_to_standard=0, exclusion_reason="other")),
        BAD_VALUE,
        "data.subject_to_standard",
        id="subject-0",
    ),
    # time without a UTC offset
    pytest.param(
        raw(edit(received_doc(), "time", "2026-02-03T14:00:00")),
        BAD_TIME,
        "time",
        id="time-no-offset",
    ),
    # time that is not a time
    pytest.param(
        raw(edit(received_doc(), "time", "yesterday")), BAD_TIME, "time", id="time-garbage"
    ),
    # time as a number
    pytest.param(raw(edit(received_doc(), "time", 1770127200)), BAD_TIME, "time", id="time-number"),
    # month 13 (right shape, impossible date)
    pytest.param(
        raw(edit(received_doc(), "time", "2026-13-03T14:00:00Z")),
        BAD_TIME,
        "time",
        id="time-month-13",
    ),
    # 30 February
    pytest.param(
        raw(edit(received_doc(), "time", "2026-02-30T14:00:00Z")),
        BAD_TIME,
        "time",
        id="time-feb-30",
    ),
    # 24:00:00 is not an RFC 3339 time of day
    pytest.param(
        raw(edit(received_doc(), "time", "2026-02-03T24:00:00Z")), BAD_TIME, "time", id="time-24h"
    ),
    # an offset of 25 hours
    pytest.param(
        raw(edit(received_doc(), "time", "2026-02-03T14:00:00+25:00")),
        BAD_TIME,
        "time",
        id="time-offset-25h",
    ),
    # a trailing newline after a good time
    pytest.param(raw(edit(received_doc(), "time", T0 + "\n")), BAD_TIME, "time", id="time-newline"),
    # year 1900: history, not data
    pytest.param(
        raw(edit(received_doc(), "time", "1900-02-03T14:00:00Z")), BAD_TIME, "time", id="time-1900"
    ),
    # year 2150: a plan, not data
    pytest.param(
        raw(edit(received_doc(), "time", "2150-02-03T14:00:00Z")), BAD_TIME, "time", id="time-2150"
    ),
    # one second before 2000 in UTC
    pytest.param(
        raw(edit(received_doc(), "time", "1999-12-31T23:59:59Z")), BAD_TIME, "time", id="time-1999"
    ),
    # 2000 on the wall clock but 1999 as an instant
    pytest.param(
        raw(edit(received_doc(), "time", "2000-01-01T00:30:00+01:00")),
        BAD_TIME,
        "time",
        id="time-2000-local",
    ),
    # the first second of 2100
    pytest.param(
        raw(edit(received_doc(), "time", "2100-01-01T00:00:00Z")), BAD_TIME, "time", id="time-2100"
    ),
    # an offset's minutes run 00-59 (RFC 3339); fromisoformat reads +05:60 as +06:00
    pytest.param(
        raw(edit(received_doc(), "time", "2026-02-03T14:00:00+05:60")),
        BAD_TIME,
        "time",
        id="time-offset-minute-60",
    ),
    # year 0 does not exist
    pytest.param(
        raw(edit(received_doc(), "time", "0000-01-01T00:00:00Z")),
        BAD_TIME,
        "time",
        id="time-year-0",
    ),
    # one byte over 64 KiB (padding in an unknown field)
    pytest.param(padded(received_doc(), DEFAULT_MAX_BYTES + 1), TOO_LARGE, None, id="too-large"),
    # a megabyte of anything
    pytest.param(b" " * (1 << 20), TOO_LARGE, None, id="megabyte"),
    # the wrong content type
    pytest.param(
        raw(edit(received_doc(), "datacontenttype", "text/plain")),
        BAD_VALUE,
        "datacontenttype",
        id="content-type",
    ),
    # provider with a space
    pytest.param(
        raw(received_doc(provider="RY 7")), BAD_VALUE, "data.provider", id="provider-space"
    ),
    # provider of 13 characters (limit 12)
    pytest.param(
        raw(received_doc(provider="R" * 13)), BAD_VALUE, "data.provider", id="provider-long"
    ),
    # provider ending in a newline (ECMA-262 `$` is the end of the string)
    pytest.param(
        raw(received_doc(provider="RY7\n")), BAD_VALUE, "data.provider", id="provider-newline"
    ),
    # empty provider
    pytest.param(raw(received_doc(provider="")), BAD_VALUE, "data.provider", id="provider-empty"),
    # icb with a hyphen
    pytest.param(raw(received_doc(icb="Q-G")), BAD_VALUE, "data.icb", id="icb-hyphen"),
    # region as a number
    pytest.param(raw(received_doc(region=62)), BAD_VALUE, "data.region", id="region-number"),
    # referral_id with a control character
    pytest.param(
        raw(received_doc(referral_id="R-\x01")),
        BAD_VALUE,
        "data.referral_id",
        id="referral-id-control",
    ),
    # referral_id with DEL
    pytest.param(
        raw(received_doc(referral_id="R-\x7f")), BAD_VALUE, "data.referral_id", id="referral-id-del"
    ),
    # referral_id ending in a newline
    pytest.param(
        raw(contact_doc(referral_id="R-1\n")),
        BAD_VALUE,
        "data.referral_id",
        id="referral-id-newline",
    ),
    # empty referral_id
    pytest.param(
        raw(cancelled_doc(referral_id="")), BAD_VALUE, "data.referral_id", id="referral-id-empty"
    ),
    # contact_id of 129 characters (limit 128)
    pytest.param(
        raw(contact_doc(contact_id="c" * 129)), BAD_VALUE, "data.contact_id", id="contact-id-long"
    ),
    # event id as a number
    pytest.param(raw(edit(received_doc(), "id", 17)), BAD_VALUE, "id", id="id-number"),
    # empty source
    pytest.param(raw(edit(received_doc(), "source", "")), BAD_VALUE, "source", id="source-empty"),
    # condition over 256 characters
    pytest.param(
        raw(received_doc(condition="x" * 257)), BAD_VALUE, "data.condition", id="condition-long"
    ),
    # patient_ref as a number
    pytest.param(
        raw(received_doc(patient_ref=123)), BAD_VALUE, "data.patient_ref", id="patient-ref-number"
    ),
]


@pytest.mark.parametrize(("message", "reason", "field"), REJECTIONS)
def test_rejections_name_reason_and_field(message: bytes, reason: str, field: str | None) -> None:
    result = CODEC.decode(message)
    assert isinstance(result, Rejection), result
    assert (result.reason, result.field) == (reason, field), result.detail
    assert result.reason in REASONS
    assert result.detail
    assert "\n" not in result.detail
    assert len(result.detail) <= 300
    assert result.to_record() == {"reason": reason, "field": field, "detail": result.detail}


def _as_text(message: bytes) -> str | None:
    """The row's message as text, where that is the same message (not for bad UTF-8, UTF-16,
    or size rows: sizes are counted in the input's units)."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text or len(message) > DEFAULT_MAX_BYTES else text


TEXT_REJECTIONS = [
    pytest.param(text, *row.values[1:], id=row.id)
    for row in REJECTIONS
    if (text := _as_text(row.values[0])) is not None  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("message", "reason", "field"), TEXT_REJECTIONS)
def test_rejections_are_the_same_for_text(message: str, reason: str, field: str | None) -> None:
    result = CODEC.decode(message)
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == (reason, field)


def test_most_rejection_rows_also_run_as_text() -> None:
    assert len(TEXT_REJECTIONS) > len(REJECTIONS) - 8


def test_nesting_up_to_max_depth_is_accepted_and_kept() -> None:
    result = decode_document(CODEC, deep(MAX_DEPTH - 2, b'"943 476 5919"'))
    assert not isinstance(result, Rejection), result
    leaf = result[1]["data"]["deep"]
    for _ in range(MAX_DEPTH - 2):
        (leaf,) = leaf
    assert leaf == CODEC.pseudonymiser.scrub("943 476 5919") != "943 476 5919"


@pytest.mark.parametrize(
    "message",
    [
        # an unknown field named by an NHS number, with a value no store can hold: the field
        # path and the validator's message both name the key
        raw(received_doc(extra="MARK")).replace(b'"extra": "MARK"', b'"9434765919": "\\u0000"'),
        # the same, hyphenated, with a lone surrogate
        raw(received_doc(extra="MARK")).replace(b'"extra": "MARK"', b'"943-476-5919": "\\ud800"'),
        # a number out of range whose digits spell an NHS number (the detail quotes it)
        raw(received_doc(extra="MARK")).replace(b'"MARK"', b"9434765919e999"),
    ],
)
def test_a_rejections_field_and_detail_never_carry_an_nhs_number(message: bytes) -> None:
    result = CODEC.decode(message)
    assert isinstance(result, Rejection), result
    record = json.dumps(result.to_record())
    assert not re.search(r"943\D?476\D?5919", record), record
    assert CODEC.pseudonymiser.pseudonym("9434765919") in record  # still says where


def test_the_size_limit_is_inclusive_and_configurable() -> None:
    assert isinstance(CODEC.decode(padded(received_doc(), DEFAULT_MAX_BYTES)), Event)
    small = Codec(max_bytes=300)
    assert isinstance(small.decode(padded(received_doc(), 300)), Event)
    rejected = small.decode(padded(received_doc(), 301))
    assert isinstance(rejected, Rejection)
    assert rejected.reason == TOO_LARGE


# -- acceptance --------------------------------------------------------------------------------


def golden_lines() -> list[bytes]:
    if not GOLDEN_EVENTS.is_file():
        pytest.fail(f"golden events missing: {GOLDEN_EVENTS}")
    return GOLDEN_EVENTS.read_bytes().splitlines()


def test_every_golden_line_but_one_decodes() -> None:
    lines = golden_lines()
    assert len(lines) > 2000
    for number, line in enumerate(lines, start=1):
        result = CODEC.decode(line)
        if number == GOLDEN_BAD_LINE:
            assert isinstance(result, Rejection)
            assert result.reason == INVALID_JSON
        else:
            assert isinstance(result, Event), (number, result)
            doc = json.loads(line)
            assert result.id == doc["id"]
            assert result.type == doc["type"]
            assert result.referral_id == doc["data"]["referral_id"]


def test_event_fields_by_type() -> None:
    assert CODEC.decode(raw(received_doc(region="Y56"))) == Event(
        "ev-1",
        "referral.received",
        T0_EPOCH,
        "R-1",
        pathway="ucr_2h",
        provider="RY7",
        icb="QYG",
        region="Y56",
    )
    assert CODEC.decode(raw(triaged_doc())) == Event("ev-1", "referral.triaged", T0_EPOCH, "R-1")
    assert CODEC.decode(
        raw(
            triaged_doc(
                pathway="reablement_2d", subject_to_standard=False, exclusion_reason="other"
            )
        )
    ) == Event(
        "ev-1",
        "referral.triaged",
        T0_EPOCH,
        "R-1",
        pathway="reablement_2d",
        subject_to_standard=False,
        exclusion_reason="other",
    )
    assert CODEC.decode(raw(contact_doc(mode="video", attended=False))) == Event(
        "ev-1",
        "referral.contact",
        T0_EPOCH,
        "R-1",
        contact_id="C-1",
        mode="video",
        attended=False,
    )
    assert CODEC.decode(raw(cancelled_doc())) == Event(
        "ev-1", "referral.cancelled", T0_EPOCH, "R-1", reason="withdrawn"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # UTC with Z
        ("2026-02-03T14:00:00Z", T0_EPOCH),
        # the same instant written in BST-style +01:00
        ("2026-02-03T15:00:00+01:00", T0_EPOCH),
        # the same instant with a negative offset
        ("2026-02-03T09:30:00-04:30", T0_EPOCH),
        # -00:00 ("offset unknown", RFC 3339) is still UTC
        ("2026-02-03T14:00:00-00:00", T0_EPOCH),
        # +00:00 as the golden file writes it
        ("2026-02-03T14:00:00+00:00", T0_EPOCH),
        # lowercase t and z
        ("2026-02-03t14:00:00z", T0_EPOCH),
        # a fraction is truncated, not rounded
        ("2026-02-03T14:00:00.999Z", T0_EPOCH),
        # nine fractional digits (nanoseconds) are allowed and truncated
        ("2026-02-03T14:00:00.999999999Z", T0_EPOCH),
        # a fraction with an offset
        ("2026-02-03T15:00:59.5+01:00", T0_EPOCH + 59),
        # the first second accepted
        ("2000-01-01T00:00:00Z", 946_684_800),
        # the last second accepted
        ("2099-12-31T23:59:59Z", 4_102_444_799),
        # a leap day
        ("2028-02-29T00:00:00Z", int(datetime(2028, 2, 29, tzinfo=UTC).timestamp())),
    ],
)
def test_times(text: str, expected: int) -> None:
    event = CODEC.decode(raw(edit(received_doc(), "time", text)))
    assert isinstance(event, Event), event
    assert event.time == expected


def test_unknown_extra_fields_are_accepted_and_kept() -> None:
    doc = received_doc(ward="7B", extra={"nested": [1, "two", None]})
    doc["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    doc["x-count"] = 3
    result = decode_document(CODEC, raw(doc))
    assert not isinstance(result, Rejection), result
    event, document = result
    assert event.referral_id == "R-1"
    assert document == doc


def test_document_is_the_parsed_message() -> None:
    doc = contact_doc()
    result = decode_document(CODEC, json.dumps(doc))
    assert not isinstance(result, Rejection)
    assert result[1] == doc


@pytest.mark.parametrize(
    ("data", "icb", "region"),
    [
        # region derived from the reference: Cheshire and Merseyside is in the North West
        ({"icb": "QYG"}, "QYG", "Y62"),
        # Staffordshire and Stoke-on-Trent is in the Midlands
        ({"icb": "QNC"}, "QNC", "Y60"),
        # an explicit region is kept even when the reference says otherwise
        ({"icb": "QYG", "region": "Y56"}, "QYG", "Y56"),
        # a region alone
        ({"region": "Y58"}, "unknown", "Y58"),
        # an icb the reference does not know
        ({"icb": "QZZ9"}, "QZZ9", "unknown"),
        # neither
        ({}, "unknown", "unknown"),
    ],
)
def test_region_and_icb(data: dict[str, str], icb: str, region: str) -> None:
    doc = envelope(
        "referral.received",
        {"referral_id": "R-1", "pathway": "reablement_2d", "provider": "RY7", **data},
    )
    event = CODEC.decode(raw(doc))
    assert isinstance(event, Event), event
    assert (event.icb, event.region) == (icb, region)


def test_region_by_icb_can_be_injected() -> None:
    codec = Codec(region_by_icb={"ABC": "Y99"})
    event = codec.decode(raw(received_doc(icb="ABC")))
    assert isinstance(event, Event)
    assert event.region == "Y99"
    other = codec.decode(raw(received_doc(icb="QYG")))
    assert isinstance(other, Event)
    assert other.region == "unknown"


def test_a_utf8_byte_order_mark_is_tolerated() -> None:
    # RFC 8259 lets a parser ignore a BOM; a file saved by a Windows editor starts with one.
    event = CODEC.decode(b"\xef\xbb\xbf" + raw(received_doc()))
    assert isinstance(event, Event)


def test_non_ascii_text_in_utf8_is_accepted() -> None:
    doc = received_doc(referral_id="R-ÿ-✓-𝄞", condition="chute à domicile")
    result = decode_document(CODEC, json.dumps(doc, ensure_ascii=False).encode())
    assert not isinstance(result, Rejection), result
    assert result[0].referral_id == "R-ÿ-✓-𝄞"
    assert result[1]["data"]["condition"] == "chute à domicile"


# -- property: the fast check and the codec agree with the reference --------------------------

_CONTROL = "".join(chr(c) for c in range(0x20)) + "\x7f"
identifiers = st.text(
    st.characters(exclude_characters=_CONTROL, exclude_categories=["Cs"]),
    min_size=1,
    max_size=40,
) | st.text("abcXYZ-_:/. 0123456789", min_size=1, max_size=128)
codes = st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12
)
# Strings a UTF-8 store can hold: the schema refuses NUL and lone surrogates anywhere.
storable = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
free_text = st.text(storable, max_size=256)


@st.composite
def times(draw: st.DrawFn) -> str:
    instant = draw(
        st.datetimes(
            min_value=datetime(2000, 1, 2),  # naive bounds: the strategy adds UTC
            max_value=datetime(2099, 12, 30),
            timezones=st.just(UTC),
        )
    )
    minutes = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    local = instant.astimezone(timezone(timedelta(minutes=minutes)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if draw(st.booleans()):
        text += "." + draw(st.text("0123456789", min_size=1, max_size=9))
    if minutes == 0 and draw(st.booleans()):
        text += "Z"
    else:
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    if draw(st.booleans()):
        text = text.lower()
    return text


def _optional(
    draw: st.DrawFn, data: dict[str, Any], name: str, values: st.SearchStrategy[Any]
) -> None:
    if draw(st.booleans()):
        data[name] = draw(values)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            ["referral.received", "referral.triaged", "referral.contact", "referral.cancelled"]
        )
    )
    data: dict[str, Any] = {"referral_id": draw(identifiers)}
    if kind == "referral.received":
        data["pathway"] = draw(st.sampled_from(PATHWAYS))
        data["provider"] = draw(codes)
        for name in ("icb", "region"):
            _optional(draw, data, name, codes)
        for name in ("referral_source", "condition", "patient_ref"):
            _optional(draw, data, name, free_text)
    elif kind == "referral.triaged":
        _optional(draw, data, "pathway", st.sampled_from(PATHWAYS))
        _optional(draw, data, "subject_to_standard", st.booleans())
        if data.get("subject_to_standard") is False or draw(st.booleans()):
            data["exclusion_reason"] = draw(st.sampled_from(EXCLUSION_REASONS))
    elif kind == "referral.contact":
        data["contact_id"] = draw(identifiers)
        data["mode"] = draw(st.sampled_from(CONTACT_MODES))
        data["attended"] = draw(st.booleans())
    else:
        data["reason"] = draw(st.sampled_from(CANCEL_REASONS))
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": draw(identifiers),
        "source": draw(st.text(storable, min_size=1, max_size=60)),
        "type": kind,
        "time": draw(times()),
        "data": data,
    }
    _optional(draw, doc, "datacontenttype", st.just("application/json"))
    return doc


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_ENUM_WORDS = [
    "1.0",
    "0.3",
    "application/json",
    "text/plain",
    "referral.received",
    "referral.triaged",
    "referral.contact",
    "referral.cancelled",
    "referral.other",
    *PATHWAYS,
    *CONTACT_MODES,
    *EXCLUSION_REASONS,
    *CANCEL_REASONS,
    "",
    " ",
    "RY7",
    "Y62",
]
odd_strings = (
    st.text(st.characters(codec="utf-8"), max_size=30)
    | st.text(_CONTROL + "ab \u2028\u0085\ufeff", min_size=1, max_size=5)
    | st.sampled_from(_ENUM_WORDS).map(lambda s: s + "\n")
    | st.sampled_from(_ENUM_WORDS).map(lambda s: " " + s)
    | st.sampled_from(_ENUM_WORDS).map(str.upper)
    | st.builds(
        lambda char, n: char * n,
        st.sampled_from("xZ9 é"),
        st.sampled_from([11, 12, 13, 127, 128, 129, 255, 256, 257, 511, 512, 513, 2000]),
    )
    | st.from_regex(schema()["properties"]["time"]["pattern"], fullmatch=True)
)
replacements: st.SearchStrategy[Any] = (
    json_values
    | odd_strings
    | st.sampled_from(_ENUM_WORDS)
    | st.sampled_from([True, False, 1, 0, 1.0, 0.0, -1, None, [], {}])
)

# Right shape, maybe impossible (month 47, hour 31, offset +99:00), or simply valid.
time_like = (
    st.from_regex(schema()["properties"]["time"]["pattern"], fullmatch=True)
    | times()
    | replacements
)


PERTURBATIONS: list[Callable[[str], str]] = [
    lambda s: s + "\n",
    lambda s: s + "\r\n",
    lambda s: "\n" + s,
    lambda s: " " + s,
    lambda s: s + " ",
    lambda s: s + "\x00",
    lambda s: s + "\x7f",
    lambda s: s + "\x85",
    lambda s: s + "\u2028",
    lambda s: s[:-1],
    lambda s: s[1:],
    lambda s: s.upper(),
    lambda s: s + "é",
    lambda s: s + "-",
    lambda s: (s * 200)[:257],
    lambda s: (s * 200)[:129],
    lambda s: (s * 200)[:13],
    lambda s: (s * 200)[:12],
]


def _paths(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = [(key,) for key in doc]
    if isinstance(doc.get("data"), dict):
        paths += [("data", key) for key in doc["data"]]
    return paths


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    data = doc.get("data")
    return [doc, data] if isinstance(data, dict) else [doc]


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(valid_events()))
    # One mutation is the sharpest probe (several tend to trip the first required field).
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2, 3]))):
        action = draw(st.sampled_from(["drop", "replace", "perturb", "add", "retype"]))
        paths = _paths(doc)
        if action == "drop" and paths:
            *parents, last = draw(st.sampled_from(paths))
            target = doc["data"] if parents else doc
            del target[last]
        elif action == "replace" and paths:
            *parents, last = draw(st.sampled_from(paths))
            target = doc["data"] if parents else doc
            target[last] = draw(time_like if last == "time" else replacements)
        elif action == "perturb" and paths:
            # Small edits of a value that was valid: the edges of patterns and lengths.
            *parents, last = draw(st.sampled_from(paths))
            target = doc["data"] if parents else doc
            value = target[last]
            if isinstance(value, str):
                target[last] = draw(st.sampled_from(PERTURBATIONS))(value)
            else:
                target[last] = draw(st.sampled_from([str(value), [value], {"value": value}]))
        elif action == "add":
            target = draw(st.sampled_from(_containers(doc)))
            known = [
                "pathway",
                "provider",
                "icb",
                "region",
                "subject_to_standard",
                "exclusion_reason",
                "contact_id",
                "mode",
                "attended",
                "reason",
                "condition",
                "patient_ref",
                "datacontenttype",
                "referral_id",
            ]
            target[draw(st.sampled_from(known) | st.text(max_size=10))] = draw(replacements)
        else:  # another type's envelope around this data
            doc["type"] = draw(
                st.sampled_from(
                    [
                        "referral.received",
                        "referral.triaged",
                        "referral.contact",
                        "referral.cancelled",
                    ]
                )
            )
    return doc


def _encode(doc: dict[str, Any], ascii_only: bool) -> bytes:
    try:
        return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only representable escaped
        return json.dumps(doc).encode("utf-8")


_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:[Zz]|([+-])(\d{2}):(\d{2}))"
)
_Y2000 = datetime(2000, 1, 1, tzinfo=UTC)
_Y2100 = datetime(2100, 1, 1, tzinfo=UTC)


def time_is_good(text: str) -> bool:
    """Independent of the codec: a real calendar instant with a real offset in 2000-2099."""
    match = _TIME.fullmatch(text)
    assert match is not None, text  # only called on schema-valid documents
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    sign, off_h, off_m = match.groups()[6:]
    if sign and int(off_m) > 59:
        return False
    try:
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) if sign else timedelta(0)
        zone = timezone(-offset if sign == "-" else offset)
        instant = datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError:
        return False
    return _Y2000 <= instant < _Y2100


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated_events(), ascii_only=st.booleans())
def test_codec_acceptance_agrees_with_the_reference_validator(
    doc: dict[str, Any], ascii_only: bool
) -> None:
    event(check_agreement(doc, ascii_only))


@settings(max_examples=200, deadline=None)
@given(doc=valid_events(), time=time_like)
def test_time_acceptance_agrees_with_the_reference_validator(
    doc: dict[str, Any], time: Any
) -> None:
    event(check_agreement({**doc, "time": time}, ascii_only=True))


def check_agreement(doc: dict[str, Any], ascii_only: bool) -> str:
    """Assert the fast check and `decode` agree with the reference; a label for statistics."""
    # Fast check: conservative. It may say "not sure"; it may never accept what the schema refuses.
    # NUL and lone surrogates are screened before the fast check (they can only arrive as
    # JSON escapes, which the codec sees in the raw text), so the fast check skips them.
    fast = CODEC._fast(copy.deepcopy(doc))
    if fast and _unstorable(doc) is None:
        assert REFERENCE.is_valid(doc), list(REFERENCE.iter_errors(doc))
        assert PLAIN_REFERENCE.is_valid(doc)
    message = _encode(doc, ascii_only)
    schema_valid = REFERENCE.is_valid(doc)
    accept = len(message) <= DEFAULT_MAX_BYTES and schema_valid and time_is_good(doc["time"])
    result = CODEC.decode(message)
    label = f"fast={fast} {result.reason if isinstance(result, Rejection) else 'accepted'}"
    if accept:
        assert isinstance(result, Event), (result, doc)
        return label
    assert isinstance(result, Rejection), (doc, list(REFERENCE.iter_errors(doc)))
    assert result.reason in REASONS
    if len(message) > DEFAULT_MAX_BYTES:
        assert result.reason == TOO_LARGE
    elif schema_valid:
        assert (result.reason, result.field) == (BAD_TIME, "time")
    elif any(name not in doc for name in ("specversion", "id", "source", "type")):
        assert result.reason == NOT_CLOUDEVENT
    else:
        assert result.reason in {NOT_CLOUDEVENT, UNKNOWN_TYPE, MISSING_FIELD, BAD_VALUE, BAD_TIME}
    return label


def test_every_small_edit_of_every_field_agrees_with_the_reference_validator() -> None:
    # Deterministic companion of the properties: each perturbation on each field of each type.
    labels = set()
    for base in (
        received_doc(region="Y62", condition="fall", referral_source="111", patient_ref="p1"),
        triaged_doc(pathway="ucr_2h", subject_to_standard=False, exclusion_reason="other"),
        contact_doc(),
        cancelled_doc(),
    ):
        for *parents, last in _paths(base):
            target_path = ".".join([*parents, last])
            value = base["data"] if parents else base
            original = value[last]
            if not isinstance(original, str):
                continue
            for perturb in PERTURBATIONS:
                labels.add(check_agreement(edit(base, target_path, perturb(original)), True))
    assert {"fast=True accepted", "fast=False bad_value", "fast=False bad_time"} <= labels


@settings(max_examples=200, deadline=None)
@given(doc=valid_events())
def test_valid_events_pass_the_fast_check(doc: dict[str, Any]) -> None:
    # The fast path must be the common path, or the codec is slow for nothing: every valid
    # event whose identifiers are printable goes through it.
    ids = [doc["id"], doc["data"]["referral_id"], doc["data"].get("contact_id", "x")]
    if all(value.isprintable() for value in ids):
        assert CODEC._fast(doc)
    assert REFERENCE.is_valid(doc)


def test_the_fast_check_is_not_trivially_false() -> None:
    for doc in (received_doc(), triaged_doc(), contact_doc(), cancelled_doc()):
        assert CODEC._fast(doc)
    assert not CODEC._fast(received_doc(provider="RY7\n"))
    assert not CODEC._fast(edit(received_doc(), "time", T0 + "\n"))
    assert not CODEC._fast(triaged_doc(subject_to_standard=False))


# -- property: decode never raises -------------------------------------------------------------


def _assert_total(result: Event | Rejection) -> None:
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises_on_bytes(message: bytes) -> None:
    _assert_total(CODEC.decode(message))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_decode_never_raises_on_text(message: str) -> None:
    _assert_total(CODEC.decode(message))
    _assert_total(CODEC.decode(message.encode("utf-8", errors="surrogatepass")))


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_decode_never_raises_on_any_json(value: Any, ascii_only: bool) -> None:
    _assert_total(CODEC.decode(_encode(value, ascii_only)))


@settings(max_examples=200, deadline=None)
@given(mutated_events(), st.data())
def test_decode_never_raises_on_damaged_bytes(doc: dict[str, Any], data: st.DataObject) -> None:
    message = bytearray(raw(doc))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(message) - 1))
        message[position] = data.draw(st.integers(0, 255))
    _assert_total(CODEC.decode(bytes(message)))


# Keep the helpers honest: a test that could never fail proves nothing.
def test_time_is_good_helper() -> None:
    assert time_is_good("2026-02-03T14:00:00Z")
    assert not time_is_good("2026-02-30T14:00:00Z")
    assert not time_is_good("2026-02-03T14:00:00+24:00")
    assert not time_is_good("2000-01-01T00:30:00+01:00")
    assert not time_is_good("2026-02-03T14:00:00+05:60")
    assert time_is_good("2026-02-03T14:00:00+05:59")
