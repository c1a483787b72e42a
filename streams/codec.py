"""CloudEvents JSON <-> engine events (CONTRACT section 1).

The JSON Schema `streams/schema/referral-event.schema.json` is the definition of a valid event;
it is published for source systems and it decides every rejection here. Validating a million
events through a general schema validator costs several times the parse itself, so acceptance
goes first through a *conservative* fast check built from the same schema document (its enums,
lengths and patterns): when the fast check is sure an event is valid it is accepted; in any
doubt the full schema validator runs and either accepts or names the reason. The fast check may
say "not sure" for a valid event but must never accept one the schema rejects (property-tested
against the `jsonschema` reference implementation).

Bad input is data, never an exception: `decode` returns a `Rejection` with a machine-readable
`reason` (see `REASONS`), the offending field and a human detail. A missing (tombstone) or
empty message is rejected as `empty`; and whatever else goes wrong while decoding one message
(an exception nothing here expected) rejects that message as `internal`, with the exception's
type as its detail (never its text, which may quote the message), so no message can stop a
stream.

Order of work per message: size -> JSON (`streams.jsontext`: orjson where it agrees with
`json`, which decides otherwise; then nesting depth) -> schema -> time -> NHS-number
scrub -> Event, so nothing downstream (engine, database, logs, metrics, alerts) ever sees an
NHS number in clear; a rejection's field and detail are scrubbed too.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any, Final

import fastjsonschema

from streams import jsontext
from streams.engine.event import CONTACT, RECEIVED, TRIAGED, UNKNOWN, Event
from streams.pseudonym import (
    Pseudonymiser,
    digit_shape,
    holds_any,
    may_contain_shaped,
    unescape_numbers,
)

SCHEMA_RESOURCE: Final = "schema/referral-event.schema.json"

# Machine-readable rejection reasons (the `reason` of a DLQ record / rejects line).
TOO_LARGE: Final = "too_large"
INVALID_JSON: Final = "invalid_json"
NOT_CLOUDEVENT: Final = "not_cloudevent"
UNKNOWN_TYPE: Final = "unknown_type"
MISSING_FIELD: Final = "missing_field"
BAD_VALUE: Final = "bad_value"
BAD_TIME: Final = "bad_time"
EMPTY: Final = "empty"  # no value (a tombstone) or zero bytes
INTERNAL: Final = "internal"  # an unexpected exception while handling this one message
REASONS: Final = (
    TOO_LARGE,
    INVALID_JSON,
    NOT_CLOUDEVENT,
    UNKNOWN_TYPE,
    MISSING_FIELD,
    BAD_VALUE,
    BAD_TIME,
    EMPTY,
    INTERNAL,
)

DEFAULT_MAX_BYTES: Final = 64 * 1024  # an event is a few hundred bytes; refuse megabytes
# Arrays/objects nested in one another (an event needs 2: the envelope and `data`). RFC 8259
# lets a parser limit nesting; past this a message is refused as invalid_json, like one
# nested past the parser's own (stack-dependent) limit.
MAX_DEPTH: Final = 64
# Event times outside this range are data errors, not history or plans (epoch seconds:
# 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z). They would otherwise drag a watermark.
MIN_TIME: Final = 946_684_800
MAX_TIME: Final = 4_102_444_800
_ENVELOPE_IDENTITY: Final = ("specversion", "id", "source", "type")
_BOM: Final = b"\xef\xbb\xbf"
#: The DLQ value (or key) in place of bytes no rewriting made safe (see `Codec.scrub_bytes`).
WITHHELD: Final = b"(withheld: a reading of this value held an NHS number)"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused: `reason` is one of `REASONS`; `field` a dotted path."""

    reason: str
    field: str | None
    detail: str

    def to_record(self) -> dict[str, str | None]:
        return {"reason": self.reason, "field": self.field, "detail": self.detail}


@cache
def schema() -> dict[str, Any]:
    """The published JSON Schema document."""
    text = (files("streams") / SCHEMA_RESOURCE).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def _full_validator() -> Callable[[Any], Any]:
    validator: Callable[[Any], Any] = fastjsonschema.compile(schema())
    return validator


class Codec:
    """Decodes CloudEvents JSON into engine `Event`s, and names the reason for rejects."""

    def __init__(
        self,
        pseudonymiser: Pseudonymiser | None = None,
        region_by_icb: Mapping[str, str] | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.pseudonymiser = pseudonymiser if pseudonymiser is not None else Pseudonymiser()
        if region_by_icb is None:
            from streams.geography import region_by_icb as reference

            region_by_icb = reference()
        self.region_by_icb = dict(region_by_icb)
        self.max_bytes = max_bytes
        self._fast = _FastCheck(schema())
        self._validate = _full_validator()

    def decode(self, raw: bytes | str | None) -> Event | Rejection:
        """One message -> an `Event`, or a `Rejection` saying why not."""
        result = self.decode_record(raw)
        return result if isinstance(result, Rejection) else result[0]

    def decode_record(
        self, raw: bytes | str | None
    ) -> tuple[Event, dict[str, Any], str | None] | Rejection:
        """As `decode`, with the (scrubbed) JSON document kept for the audit log, plus the
        message's own JSON text when that text *is* the document to keep (no NHS number was
        replaced), else None: a store can then keep the text as sent instead of encoding the
        document again."""
        if not raw:
            detail = "no value (a tombstone)" if raw is None else "empty value"
            return Rejection(EMPTY, None, detail)
        try:
            result = self._decode(raw)
        except Exception as exc:  # one message must never stop the stream
            return Rejection(INTERNAL, None, type(exc).__name__)
        if isinstance(result, Rejection):
            # A rejection's field path names object keys, and its detail may quote the input
            # (a key, a number): either can be an NHS number, and both travel in DLQ headers.
            safe = self.safe_text
            field = safe(result.field) if result.field is not None else None
            return Rejection(result.reason, field, safe(result.detail))
        return result

    def _decode(self, raw: bytes | str) -> tuple[Event, dict[str, Any], str | None] | Rejection:
        if len(raw) > self.max_bytes:
            return Rejection(TOO_LARGE, None, f"{len(raw)} bytes > limit of {self.max_bytes}")
        try:
            # Strictly UTF-8 (json.loads would sniff UTF-16/32, whose digits the NHS-number
            # scan of the raw bytes cannot see); a leading BOM is tolerated (RFC 8259).
            # ("utf-8-sig" would do both, through a slow pure-Python codec.)
            if isinstance(raw, bytes):
                data = raw
                text = (raw[3:] if raw.startswith(_BOM) else raw).decode("utf-8")
            else:
                data = raw.encode("utf-8", errors="surrogatepass")
                text = raw
            zeros = digit_shape(data)  # for the parser's guard and the NHS-number pre-check
            doc = jsontext.loads(text, zeros, _JSON.decode)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return Rejection(INVALID_JSON, None, _one_line(str(exc)))
        # Every step below (schema, scrub, storability) and the JSON encoding of the audit row
        # recurse once or more per level: refuse what could exhaust the stack there (a
        # RecursionError would stop the worker). Counting brackets (one pass: translate)
        # keeps the walk off ordinary events.
        if isinstance(raw, bytes):
            brackets = len(raw) - len(raw.translate(None, b"[{"))
        else:
            brackets = raw.count("[") + raw.count("{")
        if brackets > MAX_DEPTH and _deeper_than(doc, MAX_DEPTH):
            return Rejection(INVALID_JSON, None, f"nested more than {MAX_DEPTH} levels deep")
        if type(doc) is not dict:
            return Rejection(NOT_CLOUDEVENT, None, "not a JSON object")
        if (b"\\u" in raw) if isinstance(raw, bytes) else ("\\u" in raw):
            # Only a JSON escape can smuggle in what no UTF-8 store can hold.
            unstorable = _unstorable(doc)
            if unstorable is not None:  # the schema says where (fast check does not look)
                return self._explain(doc) or Rejection(BAD_VALUE, None, unstorable)
        if not self._fast(doc):
            rejection = self._explain(doc)
            if rejection is not None:
                return rejection
        time = doc["time"]
        try:
            instant = _parse_time(time)
        except ValueError as exc:
            return Rejection(BAD_TIME, "time", _one_line(str(exc)))
        if not MIN_TIME <= instant < MAX_TIME:
            return Rejection(BAD_TIME, "time", f"{time!r} is outside 2000-2099")
        if may_contain_shaped(data, zeros):
            doc = self.pseudonymiser.scrub_tree(doc)
            return self._event(doc, instant), doc, None
        return self._event(doc, instant), doc, text

    def scrub_text(self, raw: bytes | str) -> str:
        """Raw message text for a rejects record: `scrub_bytes`, read as UTF-8 (bytes that are
        not UTF-8 shown as \\x escapes)."""
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", errors="surrogatepass")
        return self.scrub_bytes(data)[0].decode("utf-8", errors="backslashreplace")

    def scrub_bytes(self, raw: bytes) -> tuple[bytes, str | None]:
        """Bytes that may leave the system in place of `raw` (a DLQ value or key), and how they
        were made: None when they are `raw` as sent or with NHS numbers replaced in place.

        * No reading of `raw` holds a valid NHS number (`pseudonym.holds_any`: UTF-8, UTF-16,
          UTF-32, NULs dropped, JSON escapes decoded): `raw` itself, byte for byte.
        * UTF-8 (as the contract requires; the encoding is sniffed from the byte-order mark
          or the NULs, as RFC 4627 readers do): `raw` with each one replaced by its pseudonym
          (NULs dropped, JSON escapes of digits decoded).
        * Another encoding (UTF-16, UTF-32): its text, NHS numbers replaced, written as UTF-8;
          the second value names the encoding it was read in (a DLQ header says so).
        * If any reading of the result still held one: `WITHHELD`, and "withheld".
        """
        if not holds_any(raw):
            return raw, None
        try:
            encoding = json.detect_encoding(raw)
            if encoding.startswith("utf-8"):
                out = self._scrub_decoded(raw.decode("utf-8", errors="backslashreplace"))
                note = None
            else:
                out = self._scrub_decoded(raw.decode(encoding, errors="backslashreplace"))
                note = encoding
            scrubbed = out.encode("utf-8", errors="backslashreplace")
        except Exception:  # (defensive) never let a rewrite stop the stream
            return WITHHELD, "withheld"
        if holds_any(scrubbed):
            return WITHHELD, "withheld"
        return scrubbed, note

    def safe_text(self, text: str) -> str:
        """Text for a header (a rejection's field or detail): NHS numbers replaced, and safe in
        every reading of its UTF-8 bytes."""
        text = self.pseudonymiser.scrub(text)
        data = text.encode("utf-8", errors="backslashreplace")
        if not holds_any(data):
            return text
        return self.scrub_bytes(data)[0].decode("utf-8", errors="backslashreplace")

    def _scrub_decoded(self, text: str) -> str:
        # Digits hidden from the scan: JSON escapes (\u0039 is "9") and the NUL bytes between
        # the characters of UTF-16/32 text. Neither is meaningful in a rejected message's text.
        text = unescape_numbers(text.replace("\x00", ""))
        text = self.pseudonymiser.scrub_exponents(text)
        if "\\" not in text:
            return self.pseudonymiser.scrub(text)
        # Any other escape (JSON's \u00e9, or \x80 for a byte that is not UTF-8) stands for a
        # character that is not a digit, but its hex digits would run into a number right after
        # it ("\u00e99434765919") and hide it from the scan: scrub between the escapes.
        scrub = self.pseudonymiser.scrub
        return "".join(p if i % 2 else scrub(p) for i, p in enumerate(_ESCAPE.split(text)))

    # -- internals ---------------------------------------------------------------------------

    def _event(self, doc: dict[str, Any], instant: int) -> Event:
        data = doc["data"]
        kind = doc["type"]
        referral_id = data["referral_id"]
        if kind == CONTACT:
            return Event(
                doc["id"],
                CONTACT,
                instant,
                referral_id,
                contact_id=data["contact_id"],
                mode=_intern(data["mode"]),
                attended=data["attended"],
            )
        if kind == RECEIVED:
            icb = data.get("icb")
            region = data.get("region")
            if region is None:
                region = self.region_by_icb.get(icb, UNKNOWN) if icb is not None else UNKNOWN
            return Event(
                doc["id"],
                RECEIVED,
                instant,
                referral_id,
                pathway=_intern(data["pathway"]),
                provider=_intern(data["provider"]),
                icb=_intern(icb) if icb is not None else UNKNOWN,
                region=_intern(region),
            )
        if kind == TRIAGED:
            pathway = data.get("pathway")
            return Event(
                doc["id"],
                TRIAGED,
                instant,
                referral_id,
                pathway=_intern(pathway) if pathway is not None else None,
                subject_to_standard=data.get("subject_to_standard"),
                exclusion_reason=data.get("exclusion_reason"),
            )
        return Event(doc["id"], kind, instant, referral_id, reason=data["reason"])

    def _explain(self, doc: dict[str, Any]) -> Rejection | None:
        """Run the full schema; None if the document is valid after all."""
        missing = [name for name in _ENVELOPE_IDENTITY if name not in doc]
        if missing:
            # Without `type` every type's data rules apply, and the validator reports one of
            # those before the envelope's `required`: name the missing envelope field first.
            return Rejection(NOT_CLOUDEVENT, missing[0], f"no {missing[0]!r}: not a CloudEvent")
        try:
            self._validate(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            return _rejection(doc, exc)
        return None


def _rejection(doc: dict[str, Any], exc: fastjsonschema.JsonSchemaValueException) -> Rejection:
    path = [str(p) for p in (exc.path or [])[1:]]  # drop fastjsonschema's root name
    field = ".".join(path) or None
    detail = _one_line(exc.message)
    if exc.rule == "required":
        required = exc.rule_definition if isinstance(exc.rule_definition, list) else []
        container: Any = doc
        for part in path:
            container = container.get(part) if isinstance(container, dict) else None
        present = container if isinstance(container, dict) else {}
        missing = [name for name in required if name not in present]
        field = ".".join([*path, missing[0]]) if missing else field
        if not path and any(name in _ENVELOPE_IDENTITY for name in missing):
            return Rejection(NOT_CLOUDEVENT, field, detail)
        return Rejection(MISSING_FIELD, field, detail)
    if path == ["specversion"]:
        return Rejection(NOT_CLOUDEVENT, field, detail)
    if path == ["type"]:
        return Rejection(UNKNOWN_TYPE, field, detail)
    if path == ["time"]:
        return Rejection(BAD_TIME, field, detail)
    return Rejection(BAD_VALUE, field, detail)


def _unstorable(doc: dict[str, Any]) -> str | None:
    """Why a document cannot be stored as UTF-8 text/JSONB (lone surrogate, NUL), or None."""
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (\\ud800-\\udfff escape)"
    if _has_nul(doc):
        return "contains a NUL character (\\u0000)"
    return None


def _has_nul(value: Any) -> bool:
    """A NUL in any string or key (the text `\\u0000` itself, a backslash and five
    characters, is fine)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _deeper_than(value: Any, limit: int) -> bool:
    """True if arrays/objects nest more than `limit` levels deep in `value` (no recursion)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, dict | list)
        ]
    return False


def _parse_time(text: str) -> int:
    """RFC 3339 (schema-checked shape) -> whole epoch seconds, fraction truncated."""
    parsed = datetime.fromisoformat(text.upper() if ("t" in text or "z" in text) else text)
    if parsed.tzinfo is None:  # pragma: no cover - the schema pattern requires an offset
        raise ValueError("time has no UTC offset")
    if text[-3] == ":" and text[-2] > "5":  # ends +HH:MM; fromisoformat takes +05:60 as 06:00
        raise ValueError("UTC offset minutes must be 00-59 (RFC 3339)")
    return int(parsed.timestamp() // 1)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # 1e400 is JSON, but beyond a double it becomes Infinity, which jsonb (and most JSON
    # consumers) refuse: the audit write would then fail on every retry.
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_INF: Final = float("inf")


# Any JSON escape, or a backslash-replaced byte (captured: re.split keeps them).
_ESCAPE: Final = re.compile(r"(\\u[0-9a-fA-F]{4}|\\x[0-9a-fA-F]{2})")

# NaN and +-Infinity are Python extensions that no JSON consumer (PostgreSQL jsonb) accepts;
# nor can a number too large for a double be written back as JSON.
_JSON: Final = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_intern = sys.intern


class _FastCheck:
    """A conservative acceptance test derived from the schema document (see module doc)."""

    def __init__(self, document: dict[str, Any]) -> None:
        props = document["properties"]
        defs = document["definitions"]
        self.types = frozenset(props["type"]["enum"])
        self.id_max = defs["identifier"]["maxLength"]
        self.source_max = props["source"]["maxLength"]
        self.time_max = props["time"]["maxLength"]
        self.time_re = re.compile(props["time"]["pattern"])
        self.code_max = defs["code"]["maxLength"]
        self.code_re = re.compile(defs["code"]["pattern"])
        self.text_max = defs["text"]["maxLength"]
        self.pathways = frozenset(defs["pathway"]["enum"])
        self.modes = frozenset(defs["contact"]["properties"]["mode"]["enum"])
        self.exclusions = frozenset(defs["triaged"]["properties"]["exclusion_reason"]["enum"])
        self.cancel_reasons = frozenset(defs["cancelled"]["properties"]["reason"]["enum"])
        self.content_type = props["datacontenttype"]["const"]
        self.specversion = props["specversion"]["const"]

    def __call__(self, doc: dict[str, Any]) -> bool:
        if doc.get("specversion") != self.specversion or type(doc["specversion"]) is not str:
            return False
        if not self._identifier(doc.get("id")):
            return False
        source = doc.get("source")
        if type(source) is not str or not 0 < len(source) <= self.source_max:
            return False
        content_type = doc.get("datacontenttype", self.content_type)
        if type(content_type) is not str or content_type != self.content_type:
            return False
        time = doc.get("time")
        # fullmatch: the schema's `$` is ECMA-262's end of string, not Python's "or before a
        # final newline" (fastjsonschema rewrites it to \Z).
        if type(time) is not str or len(time) > self.time_max or not self.time_re.fullmatch(time):
            return False
        data = doc.get("data")
        if type(data) is not dict or not self._identifier(data.get("referral_id")):
            return False
        kind = doc.get("type")
        if kind == "referral.contact":
            return (
                self._identifier(data.get("contact_id"))
                and _member(data.get("mode"), self.modes)
                and type(data.get("attended")) is bool
            )
        if kind == "referral.received":
            return (
                _member(data.get("pathway"), self.pathways)
                and self._code(data.get("provider"))
                and ("icb" not in data or self._code(data["icb"]))
                and ("region" not in data or self._code(data["region"]))
                and self._text(data, "referral_source")
                and self._text(data, "condition")
                and self._text(data, "patient_ref")
            )
        if kind == "referral.triaged":
            if "pathway" in data and not _member(data["pathway"], self.pathways):
                return False
            if "exclusion_reason" in data and not _member(
                data["exclusion_reason"], self.exclusions
            ):
                return False
            if "subject_to_standard" not in data:
                return True
            subject = data["subject_to_standard"]
            return type(subject) is bool and (subject or "exclusion_reason" in data)
        if kind == "referral.cancelled":
            return _member(data.get("reason"), self.cancel_reasons)
        return False

    def _identifier(self, value: Any) -> bool:
        # isprintable() is stricter than the schema's "no C0 control or DEL": conservative.
        return type(value) is str and 0 < len(value) <= self.id_max and value.isprintable()

    def _code(self, value: Any) -> bool:
        return (
            type(value) is str
            and 0 < len(value) <= self.code_max
            and self.code_re.fullmatch(value) is not None
        )

    def _text(self, data: dict[str, Any], name: str) -> bool:
        if name not in data:
            return True
        value = data[name]
        return type(value) is str and len(value) <= self.text_max


def _member(value: Any, allowed: frozenset[str]) -> bool:
    return type(value) is str and value in allowed
