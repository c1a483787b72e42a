"""Hostile input through the whole live system (issue 8, item 3).

One broker, one PostgreSQL database, one real Alertmanager and one worker process (its log at
DEBUG, paging that Alertmanager) live for the whole module; three corpora go through them:

* **hand-built** (`Corpus`, `random.Random(SEED)`): ~490 messages, each a regression test for a
  real bug: wrong types in every field, oversized strings and messages, deep nesting, invalid
  UTF-8, far-past and far-future times, SQL and template injection text in every string field,
  valid NHS numbers in every free field and unknown extra field (plain, spaced, hyphenated, as
  JSON integers, as a float with an exponent, as JSON escapes);
* **generated** (Hypothesis, `batches`): each example is a batch of hostile messages, published
  and awaited, then checked; the same hostility drawn at random, one defect per message (or
  none: valid events carrying the hostile text), plus byte-level damage;
* **pages**: valid hostile events received 95 minutes to 3 days ago, so the worker pages
  Alertmanager about referrals whose ids hold NHS numbers and injection text.

For every message, its fate is predicted *without the codec*: `verdict()` applies the published
JSON Schema through `jsonschema` (ECMA-262 `$`, tests.test_codec.REFERENCE), the size and nesting
limits, strict UTF-8 and RFC 3339 times in 2000-2099 (tests.test_codec.time_is_good). Then:

* the worker never stops (checked after every batch; it exits 0 when stopped at the end);
* every refused message is in the DLQ exactly once, found by its source partition and offset,
  with a reason the prediction allows (and the original bytes when they held no NHS number);
  no accepted one is;
* accepted events are stored literally: `events.document` equals the document sent with NHS
  numbers replaced by their pseudonyms, and nothing else changed;
* no valid NHS number appears in clear in any table, the worker log (DEBUG), the DLQ (values,
  keys, headers), the outcomes topic, `/metrics`, Alertmanager's alerts, or weekly exports with
  `--detail` (every file, the XLSX unzipped). The scans are shown to be able to fail: the
  scanner finds planted numbers in every form, and tables, DLQ, outcomes, alerts and exports are
  shown to have carried NHS numbers (their pseudonyms are there), so a clean scan is not a
  vacuous one. (Metrics label values come from closed sets: the NHS-number codes show up as
  `icb="unknown"`. The worker logs no referral data, even at DEBUG.)

Completion is exact: a batch is done when the positions the worker stores in PostgreSQL pass
the offset of every message sent (an accepted or refused message advances its partition alike).

The generated corpus is deterministic (`derandomize=True`, no example database, no deadline,
no shrinking: against a live worker a failing batch is reported as drawn, with its messages):
`GENERATED_EXAMPLES` batches in CI, `SLOW_EXAMPLES` with `--slow`.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import random
import re
import subprocess
import time
import unicodedata
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import jsonschema
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.kafka.admin import create_topics
from consumers.local.embedded import EmbeddedBroker, free_port
from consumers.store import migrate
from streams.codec import (
    BAD_TIME,
    BAD_VALUE,
    DEFAULT_MAX_BYTES,
    EMPTY,
    INTERNAL,
    INVALID_JSON,
    MAX_DEPTH,
    MISSING_FIELD,
    NOT_CLOUDEVENT,
    REASONS,
    TOO_LARGE,
    UNKNOWN_TYPE,
)
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from streams.pseudonym import Pseudonymiser, is_nhs_number
from tests.integration.test_worker import Worker
from tests.support import crisiswatch, ready, start_alertmanager, stop_process, wait_for
from tests.unit.test_codec import REFERENCE, time_is_good, times

pytestmark = pytest.mark.integration

SEED = 1234
PARTITIONS = 3
KEY = b"test-key-0123456789abcdef"  # tests.test_worker.Worker's CRISISWATCH_PSEUDONYM_KEY
WEEK = "2026-W43"  # Monday 2026-10-19 to Sunday 2026-10-25, Europe/London
FIXED_NHS = "9434765919"  # the classic example number (valid check digit)
EXPONENT_FORM = "9.434765919e9"  # the same number as a JSON float with an exponent
DASHBOARD = "http://grafana.test/d/referral/referral?orgId=1"  # alerts link to it by referral id
GENERATED_EXAMPLES = 60  # batches in CI (under a second each against the live worker)
SLOW_EXAMPLES = 300  # with --slow
LONDON = ZoneInfo("Europe/London")

# Planted NHS numbers start at 4,300,000,000: above every epoch second of 2000-2099 (and its
# deadlines), which the database holds as integers and which the scanner therefore excepts.
NHS_LOW = 430_000_000  # first nine digits
EPOCH_LIKE = range(1_000_000_000, 4_300_000_000)

INJECTIONS = [
    "'); DROP TABLE clocks; --",
    "\"; DELETE FROM events WHERE ''='",
    "' OR 1=1 --",
    "{{ .Values }}",
    "${jndi:ldap://x}",
    "{% raw %}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "%s%n%x",
    "\\x00 \\x1b[2J",  # literal backslashes
    "$(rm -rf /)",
    '=HYPERLINK("http://x")',
]
# More of the same for the generated corpus: SQL (PostgreSQL dialect), template languages
# (Go, Jinja, ERB, Python format), log and header injection, path traversal, JSON-looking text.
MORE_INJECTIONS = [
    "'; COPY events TO PROGRAM 'id'; --",
    "$$; DROP TABLE events; $$",
    "E'\\\\x27' || chr(39)",
    "1; SELECT pg_sleep(10)--",
    "{{ config.items() }}",
    '{{ template "x" . }}',
    "<%= 7*7 %>",
    "#{7*7}",
    "{0.__class__.__mro__}",
    "%(referral_id)s",
    "../../../etc/passwd",
    '"}, "type": "referral.cancelled", "x": {"',
    "\\u0000 \\ud800 \\u0039",  # literal backslash-u text, not escapes
    "@@R0@@",  # this test's own placeholder syntax, as text
    "nhs-abcdefabcdefabcdefabcdefabcdefab",  # looks like a pseudonym
]
CONTROLS = ["\n", "\r\n", "\t", "\x1b[2J", "\x7f", "\x85", "\u2028", "\x08", "\x1f"]
UNICODE = ["\u202e", "\ufeff", "\u200b", "𝄞", "é", "Ω", "\U0001f4a9", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǫ̗͕͍", "ﷺ", "\u00a0"]

RECEIVED_TEXT = ("referral_source", "condition", "patient_ref")
# Every field of each event type, with a valid value (wrong-type variants replace one of them).
ENVELOPE = ("specversion", "id", "source", "type", "time", "datacontenttype", "data")
DATA_FIELDS = {
    "referral.received": ("referral_id", "pathway", "provider", "icb", "region", *RECEIVED_TEXT),
    "referral.triaged": ("referral_id", "pathway", "subject_to_standard", "exclusion_reason"),
    "referral.contact": ("referral_id", "contact_id", "mode", "attended"),
    "referral.cancelled": ("referral_id", "reason"),
}
REQUIRED = {
    "referral.received": ("referral_id", "pathway", "provider"),
    "referral.triaged": ("referral_id",),
    "referral.contact": ("referral_id", "contact_id", "mode", "attended"),
    "referral.cancelled": ("referral_id", "reason"),
}
BOOLEAN_FIELDS = {"attended", "subject_to_standard"}
IDENTIFIERS = {"id", "referral_id", "contact_id"}
CODES = {"provider", "icb", "region"}
ENUMS = {
    "pathway": ("ucr_2h", "reablement_2d"),
    "mode": ("face_to_face", "telephone", "video"),
    "exclusion_reason": ("patient_requested_later", "clinically_appropriate_later", "other"),
    "reason": ("duplicate", "rejected", "not_appropriate", "withdrawn"),
}
TYPES = tuple(DATA_FIELDS)


# -- the hand-built corpus ---------------------------------------------------------------------


def nhs_number(rng: random.Random) -> str:
    """A valid NHS number (first nine digits 430-799 million, modulus-11 check digit)."""
    while True:
        head = str(rng.randrange(NHS_LOW, 800_000_000))
        total = sum(int(d) * w for d, w in zip(head, range(10, 1, -1), strict=True))
        check = (11 - total % 11) % 11
        if check != 10:
            digits = head + str(check)
            assert is_nhs_number(digits)
            return digits


def spelt(rng: random.Random, digits: str) -> str:
    """The number as a source might print it: plain, 3-3-4 with spaces or with hyphens."""
    form = rng.randrange(3)
    if form == 0:
        return digits
    sep = " " if form == 1 else "-"
    return f"{digits[:3]}{sep}{digits[3:6]}{sep}{digits[6:]}"


# Every other way issue 17 names of writing one: joiners that look like a space or a hyphen,
# a dot, a slash, brackets round the first group, digits of other scripts (one or mixed).
SHAPES = ["nbsp", "thin", "narrow", "en_dash", "minus", "dot", "slash", "brackets",
          "fullwidth", "arabic", "devanagari", "mixed", "math"]  # fmt: skip
_ZEROS = {"fullwidth": 0xFF10, "arabic": 0x0660, "devanagari": 0x0966, "math": 0x1D7CE}
_JOINS = {"nbsp": "\u00a0", "thin": "\u2009", "narrow": "\u202f", "en_dash": "\u2013",
          "minus": "\u2212", "dot": ".", "slash": "/"}  # fmt: skip


def shaped(digits: str, shape: str) -> str:
    """`digits` written in one of `SHAPES`."""
    if shape in _JOINS:
        return _JOINS[shape].join((digits[:3], digits[3:6], digits[6:]))
    if shape == "brackets":
        return f"({digits[:3]}) {digits[3:6]} {digits[6:]}"
    if shape == "mixed":  # a pasted number: some digits Arabic-Indic, some ASCII, thin spaces
        arabic = "".join(chr(0x0660 + int(d)) for d in digits[:3])
        return f"{arabic}\u2009{digits[3:6]}\u2009{digits[6:]}"
    return "".join(chr(_ZEROS[shape] + int(d)) for d in digits)


class Corpus:
    """Deterministic messages; `valid` and `invalid` raw bytes, and every NHS number used."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.numbers: set[str] = {FIXED_NHS}
        self.valid: list[bytes] = []
        self.valid_docs: dict[str, dict[str, Any]] = {}  # event id -> document as sent
        self.invalid: list[bytes | None] = []  # None: a tombstone
        self._serial = 0

    # -- building blocks

    def nhs(self) -> str:
        digits = nhs_number(self.rng)
        self.numbers.add(digits)
        return spelt(self.rng, digits)

    def nhs_shaped(self, shape: str | None = None) -> str:
        """A number in one of the other shapes (or one of `spelt`'s)."""
        digits = nhs_number(self.rng)
        self.numbers.add(digits)
        shape = shape if shape is not None else self.rng.choice([*SHAPES, "spelt"])
        return spelt(self.rng, digits) if shape == "spelt" else shaped(digits, shape)

    def injection(self) -> str:
        return self.rng.choice(INJECTIONS)

    def free_text(self) -> str:
        """Injection text with an NHS number in it, within the schema's 256 characters."""
        return f"{self.injection()} NHS {self.nhs_shaped()} {self.injection()}"

    def serial(self) -> int:
        self._serial += 1
        return self._serial

    def time(self) -> str:
        day = self.rng.randrange(19, 26)  # the ISO week 2026-W43, Europe/London
        return f"2026-10-{day:02d}T{self.rng.randrange(9, 18):02d}:{self.rng.randrange(60):02d}:00Z"

    def extras(self) -> dict[str, Any]:
        """Unknown extra fields: kept in the audit log, so they must be scrubbed too."""
        return {
            "notes": self.free_text(),
            "nhs_number": int(self.nhs().replace(" ", "").replace("-", "")),
            "nested": {"deep": [{"ref": self.nhs(), self.nhs(): self.injection()}]},
            self.injection(): self.nhs(),
        }

    def base(self, kind: str, referral: str | None = None) -> dict[str, Any]:
        n = self.serial()
        referral = referral if referral is not None else f"R{n}-{self.injection()}"
        data: dict[str, Any] = {"referral_id": referral}
        if kind == "referral.received":
            data |= {
                "pathway": self.rng.choice(["ucr_2h", "reablement_2d"]),
                "provider": "RY7",
                "icb": "QYG",
                "region": "Y62",
                **{name: self.free_text() for name in RECEIVED_TEXT},
            }
        elif kind == "referral.triaged":
            data |= {
                "pathway": "ucr_2h",
                "subject_to_standard": False,
                "exclusion_reason": "other",
            }
        elif kind == "referral.contact":
            data |= {"contact_id": f"C{n} {self.injection()}", "mode": "face_to_face"}
            data["attended"] = True
        else:
            data["reason"] = "withdrawn"
        return {
            "specversion": "1.0",
            "id": f"E{n} {self.injection()}",
            "source": f"urn:nhs:ods:RY7 {self.injection()}",
            "type": kind,
            "time": self.time(),
            "datacontenttype": "application/json",
            "data": data,
        }

    # -- valid events

    def add_valid(self, doc: dict[str, Any], raw: bytes | None = None) -> None:
        self.valid.append(raw if raw is not None else json.dumps(doc).encode())
        self.valid_docs[doc["id"]] = doc

    def build_valid(self) -> None:
        for i in range(20):
            # Plain referral ids, so the export's detail sheet lists them; one with an NHS number.
            referral = f"HOSTILE-{i}" if i else f"REF {self.nhs()}"
            received = self.base("referral.received", referral)
            received["data"] |= self.extras()
            received |= {"x_comment": self.free_text(), "x_number": int(FIXED_NHS)}
            self.add_valid(received)
            follow = self.base(self.rng.choice(list(DATA_FIELDS)[1:]), referral)
            follow["data"] |= {"note": self.free_text()}
            self.add_valid(follow)
        # Each other shape in a referral id (so in outcome keys, clocks, alerts and replay
        # outputs) and in patient_ref, sent as UTF-8 and as JSON escapes.
        for shape in SHAPES:
            received = self.base("referral.received", f"REF-{shape} {self.nhs_shaped(shape)}")
            received["data"]["patient_ref"] = self.nhs_shaped(shape)
            self.add_valid(
                received, json.dumps(received, ensure_ascii=SHAPES.index(shape) % 2 == 0).encode()
            )
            follow = self.base("referral.contact", received["data"]["referral_id"])
            self.add_valid(follow, json.dumps(follow, ensure_ascii=False).encode())
        # The exponent form: no 10-digit run anywhere in the raw text.
        doc = self.base("referral.received")
        doc["data"]["weight"] = "__EXPONENT__"
        raw = json.dumps(doc).replace('"__EXPONENT__"', EXPONENT_FORM).encode()
        assert FIXED_NHS not in raw.decode()
        doc["data"]["weight"] = float(EXPONENT_FORM)
        self.add_valid(doc, raw)
        # Unicode escapes spelling digits, and a document just under the size limit.
        doc = self.base("referral.contact")
        doc["data"]["note"] = "\\u0039 is a literal backslash-u, not an escape"
        escaped = "".join(f"\\u{ord(c):04x}" for c in FIXED_NHS)
        text = json.dumps(doc)
        assert text.endswith("}}")  # `data` is the last member
        raw = (text[:-2] + f', "esc": "{escaped}"}}}}').encode()
        doc["data"]["esc"] = FIXED_NHS
        self.add_valid(doc, raw)
        doc = self.base("referral.received")
        filler = DEFAULT_MAX_BYTES - len(json.dumps(doc)) - 200
        doc["data"]["big"] = f"{self.injection()} {FIXED_NHS} " + "x" * filler
        self.add_valid(doc)
        assert len(self.valid[-1]) < DEFAULT_MAX_BYTES

    # -- invalid events

    def reject(self, doc: Any) -> None:
        self.invalid.append(doc if isinstance(doc, bytes) else json.dumps(doc).encode())

    def wrong_values(self, field: str) -> list[Any]:
        """Values of a wrong type (or out of the enum) for `field`."""
        values: list[Any] = [
            int(self.nhs().replace(" ", "").replace("-", "")),
            -1.5e308,
            None,
            [self.nhs(), {"x": self.injection()}],
            {self.injection(): self.nhs()},
        ]
        if field in BOOLEAN_FIELDS:
            values += [f"true {self.injection()} {self.nhs()}", 1]
        else:
            values.append(True)
        if field in ("pathway", "provider", "icb", "region", "mode", "reason", "type"):
            values.append(f"{self.injection()} {self.nhs()}")  # not in the enum / pattern
        if field == "exclusion_reason":
            values.append(self.injection())
        return values

    def build_invalid(self) -> None:
        rng = self.rng
        kinds = list(DATA_FIELDS)
        # Wrong types (and injection text in enum/code fields) in every field.
        for kind in kinds:
            for field in ENVELOPE:
                if field == "datacontenttype":
                    wrong = [self.injection(), 1, None]
                elif field in ("specversion",):
                    wrong = [1.0, None, self.injection(), "0.3"]
                else:
                    wrong = self.wrong_values(field)
                for value in wrong:
                    if field in ("id", "source", "time") and isinstance(value, str):
                        continue
                    doc = self.base(kind)
                    doc[field] = value
                    doc["data"] = doc["data"] if field != "data" else value
                    self.reject(doc)
            for field in DATA_FIELDS[kind]:
                for value in self.wrong_values(field):
                    doc = self.base(kind)
                    doc["data"][field] = value
                    doc["data"]["note"] = self.free_text()
                    self.reject(doc)
            # Missing fields, each one.
            for field in (*ENVELOPE[:5], "data"):
                doc = self.base(kind)
                del doc[field]
                self.reject(doc)
        # Injection text (with an NHS number) in every string field of an otherwise bad event:
        # the document is invalid elsewhere (pathway out of its enum).
        for kind in ("referral.received", "referral.contact"):
            for field in ("id", "source", *DATA_FIELDS[kind]):
                doc = self.base(kind)
                doc["data"]["pathway" if kind == "referral.received" else "mode"] = "nope"
                target = doc if field in ("id", "source") else doc["data"]
                if field not in BOOLEAN_FIELDS:
                    target[field] = self.free_text()
                doc["data"]["extra"] = self.extras()
                self.reject(doc)
        # Huge strings: past each field's maxLength, and past the message limit.
        for field, size in (("id", 129), ("source", 513), ("referral_id", 129)):
            doc = self.base("referral.received")
            target = doc if field in ("id", "source") else doc["data"]
            target[field] = (self.free_text() + " ") * (size // 20)
            self.reject(doc)
        for name in RECEIVED_TEXT:
            doc = self.base("referral.received")
            doc["data"][name] = (self.free_text() + " ") * 8 + "y" * 257
            self.reject(doc)
        for size in (DEFAULT_MAX_BYTES + 1, DEFAULT_MAX_BYTES * 2, 500_000):
            doc = self.base("referral.received")
            doc["data"]["blob"] = f"{self.nhs()} " * (size // 11)
            raw = json.dumps(doc).encode()
            assert len(raw) > DEFAULT_MAX_BYTES
            self.reject(raw)
        self.reject(b"x" * (DEFAULT_MAX_BYTES + 1))
        # Deep nesting: past the parser's recursion limit, and as a non-object `data`.
        for depth in (2_000, 20_000):
            self.reject(("[" * depth + "]" * depth).encode())
            doc = self.base("referral.received")
            deep = '"data": {"deep": ' + "[" * depth + "]" * depth + ", "
            self.reject(json.dumps(doc).replace('"data": {', deep, 1).encode())
        for depth in (10, 100):
            nested: Any = self.nhs()
            for _ in range(depth):
                nested = [nested, {"x": self.injection()}]
            doc = self.base("referral.contact")
            doc["data"] = nested
            self.reject(doc)
        # Invalid UTF-8 (lone continuation, overlong, truncated, surrogates as UTF-8, UTF-16).
        for bad in (b"\xff", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf5\x80\x80\x80"):
            for field in ("id", "source", "referral_id", "patient_ref"):
                doc = self.base("referral.received")
                target = doc if field in ("id", "source") else doc["data"]
                target[field] = "MARK"
                raw = json.dumps(doc).encode().replace(b"MARK", f"{self.nhs()} ".encode() + bad)
                self.reject(raw)
        doc = self.base("referral.received")
        self.reject(json.dumps(doc).encode("utf-16"))
        self.reject(json.dumps(doc).encode("utf-32"))
        # The same in every encoding a reader could try, with and without a byte-order mark,
        # and NULs between the bytes; the numbers in every shape (issue 17).
        for encoding in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32",
                         "nul"):  # fmt: skip
            for shape in (*SHAPES, "spelt"):
                doc = self.base("referral.received")
                doc["data"]["condition"] = f"NHS {self.nhs_shaped(shape)}"
                text = json.dumps(doc, ensure_ascii=False)
                if encoding == "nul":
                    self.reject(b"\x00".join(bytes([b]) for b in text.encode()))
                else:
                    self.reject(text.encode(encoding))
        # Digits a UTF-16 reader sees in ASCII bytes ("f\t" is U+0966, Devanagari zero).
        self.reject(shaped(self.nhs_shaped("spelt").replace(" ", "").replace("-", ""),
                           "devanagari").encode("utf-16-le"))  # fmt: skip
        # Tombstones (a null value) and an empty value: rejected as `empty`, never a crash.
        self.invalid += [None, None]
        # Lone surrogates and NUL by JSON escape: valid JSON, unstorable.
        for escape in ("\\ud800", "\\udfff", "\\u0000"):
            doc = self.base("referral.received")
            doc["data"]["condition"] = "MARK"
            self.reject(json.dumps(doc).replace("MARK", f"{self.nhs()} {escape}").encode())
        # Far-past and far-future times, impossible dates, no offset.
        for when in (
            "0001-01-01T00:00:00Z",
            "1970-01-01T00:00:00+00:00",
            "1999-12-31T23:59:59Z",
            "2100-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-02-30T10:00:00Z",
            "2026-13-45T25:61:61Z",
            "2026-10-20T10:00:00",
            "2026-10-20 10:00:00Z",
            "2026-10-20T10:00:00+99:99",
            f"2026-10-20T10:00:00Z {self.injection()}",
            "2026-10-20T10:00:00.1234567890Z",
        ):
            for kind in kinds:
                doc = self.base(kind)
                doc["time"] = when
                self.reject(doc)
        # Not CloudEvents objects at all, and not JSON.
        for raw in (
            b"",
            b"null",
            b"[]",
            b"42",
            FIXED_NHS.encode(),
            EXPONENT_FORM.encode(),
            json.dumps(self.free_text()).encode(),
            json.dumps([self.base("referral.received")]).encode(),
            f"not json {self.nhs()} {self.injection()}".encode(),
            b"{'single': 'quotes'}",
            b'{"specversion": "1.0", "id": NaN}',
            b'{"a": Infinity}',
            b'{"a": 1e999999}',
        ):
            self.reject(raw)
        # Truncated valid events.
        for _ in range(20):
            doc = self.base(rng.choice(kinds))
            doc["data"]["note"] = self.free_text()
            raw = json.dumps(doc).encode()
            self.reject(raw[: rng.randrange(1, len(raw) - 1)])
        # Found by the generated corpus (see streams/codec.py): nesting within 64 KiB and the
        # parser's limit that the scrub or the NUL screen recursed past the stack on (the
        # worker stopped), and one past the nesting limit.
        for depth, leaf in ((500, json.dumps(self.nhs())), (340, '"\\u0041"'), (63, "1")):
            doc = self.base("referral.received")
            doc["data"]["deep"] = "MARK"
            nested = "[" * depth + leaf + "]" * depth
            self.reject(json.dumps(doc).replace('"MARK"', nested).encode())
        # An NHS number as the name of a field the schema refuses, and as the digits of a
        # number out of range: the rejection's field and detail quoted them (DLQ headers).
        spelt_digits = "".join(c for c in self.nhs() if c.isdigit())
        for value in ('"\\u0000"', '"\\udfff"', f"{spelt_digits}e999"):
            doc = self.base("referral.received")
            doc["data"]["MARK"] = 0
            name = self.nhs()
            self.reject(json.dumps(doc).replace('"MARK": 0', f'"{name}": {value}').encode())
        # An offset's minutes past 59 (fromisoformat reads +05:60 as +06:00).
        doc = self.base("referral.contact")
        doc["time"] = "2026-10-20T10:00:00+05:60"
        self.reject(doc)
        # An escape (or a byte that is not UTF-8) right before an NHS number in a refused
        # message: its hex digits ran into the number and hid it from the DLQ's scrub.
        for before in ("\\u00a0", "\\u0001", "\\u2028"):
            doc = self.base("referral.received")
            doc["data"] |= {"pathway": "nope", "condition": "MARK"}
            self.reject(json.dumps(doc).replace("MARK", before + self.nhs()).encode())
        doc = self.base("referral.received")
        doc["data"]["condition"] = "MARK"
        self.reject(json.dumps(doc).encode().replace(b"MARK", b"\x80" + self.nhs().encode()))


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    built = Corpus(SEED)
    built.build_valid()
    built.build_invalid()
    assert 300 <= len(built.valid) + len(built.invalid) <= 700
    assert len(built.valid_docs) == len(built.valid)
    return built


# -- the prediction: what the contract makes of a message, without the codec ------------------

IDENTITY = ("specversion", "id", "source", "type")  # without these, not a CloudEvent at all


class Verdict(NamedTuple):
    """`reasons` a refusal may give (empty: accepted); `doc` if the message parsed."""

    reasons: frozenset[str]
    doc: Any = None

    @property
    def accepted(self) -> bool:
        return not self.reasons


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # RFC 8259 lets a parser limit range; jsonb cannot hold Infinity
        raise ValueError("out of range")
    return value


def depth(value: Any) -> int:
    """How deep arrays/objects nest in `value` (without recursion)."""
    level, levels = [value], 0
    while level := [v for v in level if isinstance(v, dict | list)]:
        levels += 1
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v)]
    return levels


def _reason(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    if error.validator == "required":
        return MISSING_FIELD  # (a missing envelope identity field is decided before)
    if path == ["specversion"]:
        return NOT_CLOUDEVENT
    if path == ["type"]:
        return UNKNOWN_TYPE
    if path == ["time"]:
        return BAD_TIME
    return BAD_VALUE


def verdict(raw: bytes | None) -> Verdict:
    """CONTRACT section 1 applied to one message: a value at all (a tombstone or zero bytes
    are `empty`), size, strict UTF-8 (a BOM tolerated), JSON
    (no NaN/Infinity, no number beyond a double, nesting within MAX_DEPTH), an object with the
    envelope's identity, the published schema (jsonschema, ECMA-262 `$`), a real RFC 3339
    instant in 2000-2099."""
    if not raw:
        return Verdict(frozenset({EMPTY}))
    if len(raw) > DEFAULT_MAX_BYTES:
        return Verdict(frozenset({TOO_LARGE}))
    try:
        text = raw.removeprefix(codecs.BOM_UTF8).decode("utf-8")
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        return Verdict(frozenset({INVALID_JSON}))
    if depth(doc) > MAX_DEPTH:
        return Verdict(frozenset({INVALID_JSON}), doc)
    if not isinstance(doc, dict) or any(name not in doc for name in IDENTITY):
        return Verdict(frozenset({NOT_CLOUDEVENT}), doc)
    errors = list(REFERENCE.iter_errors(doc))
    if errors:
        return Verdict(frozenset(_reason(e) for e in errors), doc)
    if not time_is_good(doc["time"]):
        return Verdict(frozenset({BAD_TIME}), doc)
    return Verdict(frozenset(), doc)


def same_json(stored: Any, expected: Any) -> bool:
    """Equal as JSON values: strings and keys exactly; numbers by value (jsonb keeps numbers
    as `numeric`, so 1e308 comes back as the integer 10**308)."""
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return type(stored) is type(expected) and stored == expected
    if isinstance(expected, int | float):
        return (
            isinstance(stored, int | float)
            and not isinstance(stored, bool)
            and (stored == expected if isinstance(expected, int) else float(stored) == expected)
        )
    if isinstance(expected, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(expected)
            and all(same_json(s, e) for s, e in zip(stored, expected, strict=True))
        )
    return (
        isinstance(stored, dict)
        and stored.keys() == expected.keys()
        and all(same_json(stored[k], v) for k, v in expected.items())
    )


# -- scanning for NHS numbers in clear --------------------------------------------------------

# 10 digits, optionally 3-3-4 with a space or hyphen, not part of a longer digit run. Written
# here independently of streams.pseudonym's pattern; also any whitespace as the separator.
_RUN = re.compile(r"(?<!\d)\(?(\d{3})\)?[\s\-./]?(\d{3})[\s\-./]?(\d{4})(?!\d)")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")  # digests (manifest SHA-256s) are not identifiers
_DIGITS = re.compile(r"\d{10,}")
_GROUPED = re.compile(r"(?=(\d{3})\)?[\s\-./]?(\d{3})[\s\-./]?(\d{4}))")  # at every position
PSEUDONYM = re.compile(r"nhs-[a-p]{32}")


_JOINERS = "-\u2010\u2011\u2012\u2013\u2014\u2212"


class _Normal(dict[int, str]):
    """str.translate table: digits of any script to ASCII, space separators to " ", dashes
    to "-" (written apart from streams.pseudonym's, after a whole-text NFKC)."""

    def __missing__(self, codepoint: int) -> str:
        char = chr(codepoint)
        value = unicodedata.decimal(char, None)
        if value is not None:
            out = str(value)
        elif unicodedata.category(char) == "Zs":
            out = " "
        elif char in _JOINERS:
            out = "-"
        else:
            out = char
        self[codepoint] = out
        return out


_NORMAL = _Normal()
_ESCAPED = re.compile(r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
                      r"|\\u([0-9a-fA-F]{4})")  # fmt: skip
_EXPONENT = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?[eE][+-]?\d+(?![\w.])")  # a JSON number


def _unescape(match: re.Match[str]) -> str:
    high, low, unit = match.groups()
    if unit is not None:
        code = int(unit, 16)
        return match.group() if 0xD800 <= code < 0xE000 else chr(code)
    return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)


def _integral(match: re.Match[str]) -> str:
    try:
        value = float(match.group())
    except OverflowError:
        return match.group()
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else match.group()


def normalised(text: str) -> str:
    """What a reader sees: NFKC; digits of any script as ASCII; any space separator a space
    and any dash a hyphen; JSON escapes decoded (each escape also read as a non-digit, so its
    hex digits do not run into a number); numbers with exponents as their integer digits."""
    if "\\u" in text:
        text += "\n" + _ESCAPED.sub(_unescape, text) + "\n" + _ESCAPED.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        text = text.translate(_NORMAL)
    if "e" in text or "E" in text:
        text += "\n" + _EXPONENT.sub(_integral, text)
    return text


# What a number can be written with, in any reading: digits, white space, dashes, dots,
# slashes and brackets of any script, and JSON escapes (runs of ten or more are kept from the
# wider readings).
_NUMBERISH = re.compile(r"(?:[\d\s\-./()\u2010-\u2015\u2212]|\\u[0-9a-fA-F]{4}){10,}")


def all_readings(data: bytes) -> str:
    """Every decoding a reader could apply to `data`, one per line: UTF-8 (NULs kept and
    dropped), and of UTF-16 and UTF-32 in both byte orders at every alignment (with or
    without a byte-order mark) the runs that could spell a number (after NFKC)."""
    texts = [data.decode("utf-8", "replace")]
    if b"\x00" in data:
        texts.append(data.replace(b"\x00", b"").decode("utf-8", "replace"))
    for encoding, width in (("utf-16-le", 2), ("utf-16-be", 2), ("utf-32-le", 4), ("utf-32-be", 4)):
        for start in range(width):
            text = unicodedata.normalize("NFKC", data[start:].decode(encoding, "replace"))
            texts += _NUMBERISH.findall(text)
    return "\n".join(texts)


def clear_numbers(text: str, known: set[str]) -> list[str]:
    """NHS numbers in `text` in clear, after `normalised`: any valid 10-digit candidate
    (epoch-second-sized runs from timestamps excepted: planted numbers are above them), and
    any planted number found anywhere, plain even inside a longer digit run or a digest, or
    grouped 3-3-4 (by white space, a dash, a dot or a slash; the first group bracketed)."""
    text = normalised(text)
    found = []
    for run in _DIGITS.finditer(text):
        digits = run.group()
        found += [digits[i : i + 10] for i in range(len(digits) - 9) if digits[i : i + 10] in known]
    for match in _GROUPED.finditer(text):
        digits = "".join(match.groups())
        if digits in known:
            found.append(digits)
    for match in _RUN.finditer(_HEX.sub(" ", text)):
        digits = "".join(match.groups())
        if is_nhs_number(digits) and int(digits) not in EPOCH_LIKE:
            found.append(digits)
    return found


def test_the_scanner_finds_planted_numbers_in_every_form() -> None:
    """The positive control: a scan that could not fail would prove nothing."""
    for digits in (FIXED_NHS, nhs_digits(NHS_LOW), nhs_digits(799_999_999)):
        assert is_nhs_number(digits)
        for form in (
            digits,
            f"{digits[:3]} {digits[3:6]} {digits[6:]}",
            f"{digits[:3]}-{digits[3:6]}-{digits[6:]}",
            f"{digits[:3]}\t{digits[3:6]}\n{digits[6:]}",
        ):
            for text in (form, f'{{"referral_id": "REF {form}"}}', f"x{form}y", f"'{form}';--"):
                assert digits in clear_numbers(text, set()), text  # found even if not planted
                assert digits in clear_numbers(text, {digits}), text
        # In every shape of issue 17, and in every encoding a reader could try.
        for shape in SHAPES:
            for encoding in ("utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32-le",
                             "utf-32-be"):  # fmt: skip
                raw = f"NHS {shaped(digits, shape)}.".encode(encoding)
                assert digits in clear_numbers(all_readings(raw), set()), (shape, encoding)
            escaped = json.dumps(shaped(digits, shape))  # astral digits as surrogate pairs
            assert digits in clear_numbers(escaped, set()), escaped
        # A planted number is found even where a candidate is not: in a longer digit run, in
        # a digest, spread by a grouping the generic pattern does not bound.
        for text in (
            f"1{digits}2",
            f"{'a' * 30}{digits}{'b' * 30}",
            f"9{digits[:3]} {digits[3:6]} {digits[6:]}",
        ):
            assert clear_numbers(text, {digits}), text
    # What it must not flag: pseudonyms, timestamps as epoch seconds, numbers that fail the
    # check digit, other lengths.
    pseudonymiser = Pseudonymiser(KEY)
    quiet = [
        pseudonymiser.scrub(f"REF {FIXED_NHS}"),
        "4102444799 946684800 2000000000",
        "9434765918 943476591 19434765918",
    ]
    assert PSEUDONYM.search(quiet[0])
    for text in quiet:
        assert not clear_numbers(text, {FIXED_NHS}), text


def test_the_prediction_is_not_the_codec_and_knows_every_reason() -> None:
    """`verdict` stands apart from streams.codec; spot checks that it reaches every reason."""
    good = {
        "specversion": "1.0",
        "id": "e1",
        "source": "s",
        "type": "referral.cancelled",
        "time": "2026-10-20T10:00:00Z",
        "data": {"referral_id": "r1", "reason": "withdrawn"},
    }
    assert verdict(json.dumps(good).encode()).accepted
    cases = {
        TOO_LARGE: b" " * (DEFAULT_MAX_BYTES + 1),
        INVALID_JSON: b'{"a": 1e999}',
        NOT_CLOUDEVENT: json.dumps({**good, "specversion": "0.3"}).encode(),
        UNKNOWN_TYPE: json.dumps({**good, "type": "referral.other"}).encode(),
        MISSING_FIELD: json.dumps({**good, "data": {"referral_id": "r1"}}).encode(),
        BAD_VALUE: json.dumps({**good, "id": "e\n"}).encode(),
        BAD_TIME: json.dumps({**good, "time": "2026-10-20T10:00:00+05:60"}).encode(),
    }
    for reason, raw in cases.items():
        assert verdict(raw).reasons == {reason}, reason
    assert verdict(json.dumps({**good, "x": [[[[1]]]]}).encode()).accepted
    for levels, accepted in ((MAX_DEPTH - 1, True), (MAX_DEPTH, False)):  # under the envelope
        deep = json.dumps({**good, "x": "M"}).replace('"M"', "[" * levels + "]" * levels)
        assert verdict(deep.encode()).accepted is accepted


# -- the generated corpus ----------------------------------------------------------------------


def nhs_digits(head: int) -> str:
    """The NHS number with first nine digits `head`, or the next head up whose modulus-11
    check digit is not 10 (never issued)."""
    while True:
        digits = f"{head:09d}"
        total = sum(int(d) * w for d, w in zip(digits, range(10, 1, -1), strict=True))
        check = (11 - total % 11) % 11
        if check != 10:
            return digits + str(check)
        head += 1


def _no_nhs_window(digits: str) -> bool:
    return not any(is_nhs_number(digits[i : i + 10]) for i in range(len(digits) - 9))


# Text with no decimal digit and no whitespace: digits come only from planted numbers, near
# misses and injection text, and only single spaces join fragments, so the scanner and the
# product's scrub agree on what a number is (the scanner alone also takes \s as a separator).
RANDOM_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Nd", "Cc", "Zs", "Zl", "Zp"]),
    min_size=1,
    max_size=12,
)
# Digit runs that are not NHS numbers: 9 digits, 10 with a wrong check digit, 11 to 13.
NEAR_MISSES = st.integers(10**8, 10**13).map(str).filter(_no_nhs_window)
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
NOW_TOKEN = re.compile(r"@@NOW-(\d+)@@")
# Nesting depths around MAX_DEPTH, around where the scrub used to overflow the stack (330-990)
# and past the parser's limit; the event's envelope and `data` add two levels.
DEPTHS = [2, 10, 30, 60, 61, 62, 63, 64, 100, 200, 331, 340, 493, 500, 700, 990, 995, 3000, 30000]
EDGE_TIMES = [
    "2000-01-01T00:00:00Z",
    "1999-12-31T23:30:00-01:00",  # 2000-01-01T00:30Z
    "2099-12-31T23:59:59Z",
    "2099-12-31T23:59:59.999999999z",
    "2100-01-01T00:59:59+01:00",  # 2099-12-31T23:59:59Z
    "2028-02-29T12:00:00+14:00",
    "2026-10-25T01:30:00+01:00",  # the hour the clocks go back in London
    "2026-03-29T01:30:00Z",
]
BAD_TIMES = [
    "1999-12-31T23:59:59Z",
    "2000-01-01T00:59:59+01:00",
    "2100-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "2026-02-30T10:00:00Z",
    "2027-02-29T10:00:00Z",
    "2026-04-31T10:00:00Z",
    "2026-13-01T10:00:00Z",
    "2026-10-20T24:00:00Z",
    "2026-10-20T10:60:00Z",
    "2026-10-20T10:00:60Z",  # a leap second: not an instant the monitor can hold
    "2026-10-20T10:00:00+24:00",
    "2026-10-20T10:00:00-99:99",
    "2026-10-20T10:00:00+05:60",
    "2026-10-20T10:00:00",
    "2026-10-20 10:00:00Z",
    "2026-10-20T10:00:00Z\n",
    " 2026-10-20T10:00:00Z",
    "2026-10-20T10:00:00.1234567890Z",
    "2026-10-20T10:00Z",
    "20261020T100000Z",
    "2026-10-20T10:00:00+0100",
    "",
]
BAD_BYTES = [
    b"\xff",
    b"\xc0\xaf",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf5\x80\x80\x80",
    b"\x80",
    b"\xfe",
]
UNSTORABLE = ["\\u0000", "\\ud800", "\\udfff", "\\udbff", "\\udc00x"]
MUTATIONS = [
    *["valid"] * 6,
    "huge_valid",
    *["wrong_type"] * 3,
    "missing",
    *["oversize"] * 2,
    "control",
    *["unstorable"] * 2,
    *["bad_time"] * 3,
    "specversion",
    "unknown_type",
    "content_type",
    "bad_utf8",
    "truncate",
    "encoding",
    "not_object",
    "number",
    "too_large",
    *["deep"] * 2,
    "empty",
    "tombstone",
]


class Ctx:
    """One message's drawing: raw JSON text to splice in after `json.dumps` (escapes, numbers
    written with exponents, nested text), raw bytes (not UTF-8), and the NHS numbers planted."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.values: dict[str, str] = {}  # token standing for a whole JSON value -> raw text
        self.splices: dict[str, str] = {}  # token inside a JSON string -> raw JSON text
        self.bytes: dict[str, bytes] = {}  # token inside a JSON string -> raw bytes
        self.numbers: set[str] = set()

    def __repr__(self) -> str:
        return f"Ctx(values={self.values!r}, splices={self.splices!r}, bytes={self.bytes!r})"

    def _token(self, kind: str) -> str:
        return f"@@{kind}{len(self.values) + len(self.splices) + len(self.bytes)}@@"

    def value_token(self, raw: str) -> str:
        token = self._token("V")
        self.values[token] = raw
        return token

    def splice(self, raw: str) -> str:
        token = self._token("S")
        self.splices[token] = raw
        return token

    def byte_token(self, raw: bytes) -> str:
        token = self._token("B")
        self.bytes[token] = raw
        return token

    def substitute(self, text: str, now: float) -> bytes:
        for token, raw in self.values.items():
            text = text.replace(f'"{token}"', raw)
        for token, raw in self.splices.items():
            text = text.replace(token, raw)
        text = NOW_TOKEN.sub(lambda m: rfc3339(now - 60 * int(m.group(1))), text)
        data = text.encode("utf-8")
        for token, raw_bytes in self.bytes.items():
            data = data.replace(token.encode(), raw_bytes)
        return data

    # -- NHS numbers, in every form the hand-built corpus uses

    def nhs(self) -> str:
        digits = nhs_digits(self.draw(st.integers(NHS_LOW, 799_999_999)))
        self.numbers.add(digits)
        return digits

    def nhs_text(self) -> str:
        """In a string: plain, 3-3-4 with spaces or hyphens, spelt in JSON escapes, or in any
        of the other `SHAPES` (also escaped)."""
        digits = self.nhs()
        form = self.draw(
            st.sampled_from(["plain", "spaced", "hyphenated", "escaped", "shaped", "shaped"])
        )
        if form == "plain":
            return digits
        if form == "shaped":
            text = shaped(digits, self.draw(st.sampled_from(SHAPES)))
            if self.draw(st.booleans()):
                return text
            return self.splice(json.dumps(text)[1:-1])  # as JSON escapes
        if form == "escaped":
            return self.splice("".join(f"\\u{ord(c):04x}" for c in digits))
        sep = " " if form == "spaced" else "-"
        return sep.join((digits[:3], digits[3:6], digits[6:]))

    def nhs_number(self) -> Any:
        """As a JSON number: an integer, negative, or a float (with an exponent)."""
        digits = self.nhs()
        form = self.draw(st.sampled_from(["integer", "negative", "exponent", "float", "capital"]))
        if form == "integer":
            return int(digits)
        return self.value_token(
            {
                "negative": f"-{digits}",
                "exponent": f"{digits[0]}.{digits[1:]}e9",
                "float": f"{digits}.0",
                "capital": f"{digits[:4]}.{digits[4:]}E+6",
            }[form]
        )

    # -- strings and values

    def fragment(self, *, controls: bool) -> str:
        kinds = ["injection", "injection", "nhs", "nhs", "random", "unicode", "near"]
        kind = self.draw(st.sampled_from([*kinds, "control"] if controls else kinds))
        if kind == "injection":
            return self.draw(st.sampled_from(INJECTIONS + MORE_INJECTIONS))
        if kind == "nhs":
            return self.nhs_text()
        if kind == "random":
            return self.draw(RANDOM_TEXT)
        if kind == "near":
            return self.draw(NEAR_MISSES)
        if kind == "unicode":
            if self.draw(st.booleans()):
                return self.splice("\\ud83d\\udca9")  # an escaped surrogate pair: fine
            return self.draw(st.sampled_from(UNICODE))
        return self.draw(st.sampled_from(CONTROLS))

    def text(self, *, most: int = 3, controls: bool = True) -> str:
        count = self.draw(st.integers(1, most))
        return " ".join(self.fragment(controls=controls) for _ in range(count))

    def identifier(self) -> str:
        return self.text(most=2, controls=False)

    def code(self) -> str:
        kind = self.draw(st.sampled_from(["known", "nhs", "lettered", "random"]))
        if kind == "known":
            return self.draw(st.sampled_from(["RY7", "QYG", "Y62", "Y56", "QWE", "R1F"]))
        if kind == "nhs":
            return self.nhs()
        if kind == "lettered":
            return self.draw(st.sampled_from(["X{}", "{}AB", "Q{}Z"])).format(self.nhs())
        return self.draw(st.text(ALNUM, min_size=1, max_size=12))

    def value(self, level: int = 0) -> Any:
        kinds = ["text", "nhs_text", "nhs_number", "integer", "float", "literal"]
        kind = self.draw(st.sampled_from([*kinds, "list", "object"] if level < 3 else kinds))
        if kind == "text":
            return self.text()
        if kind == "nhs_text":
            return self.nhs_text()
        if kind == "nhs_number":
            return self.nhs_number()
        if kind == "integer":
            return self.draw(st.integers(-(2**70), 2**70))
        if kind == "float":
            return self.draw(st.floats(allow_nan=False, allow_infinity=False))
        if kind == "literal":
            return self.draw(st.sampled_from([None, True, False, 0, "", [], {}]))
        if kind == "list":
            return [self.value(level + 1) for _ in range(self.draw(st.integers(0, 3)))]
        return self.extras(level + 1)

    def extras(self, level: int = 0) -> dict[str, Any]:
        """Unknown fields (kept in the audit log): hostile names and values."""
        count = self.draw(st.integers(1, 3))
        return {self.text(most=2): self.value(level) for _ in range(count)}

    def time(self) -> str:
        kind = self.draw(st.sampled_from(["recent", "recent", "any", "any", "edge"]))
        if kind == "recent":  # minutes ago, resolved when sent: pages for at-risk/breached
            minutes = self.draw(st.sampled_from([3, 95, 100, 118, 125, 180, 600, 3 * 24 * 60]))
            return f"@@NOW-{minutes}@@"
        if kind == "edge":
            return self.draw(st.sampled_from(EDGE_TIMES))
        return self.draw(times())

    def bad_time(self) -> Any:
        kind = self.draw(st.sampled_from(["past", "future", "listed", "listed", "text"]))
        if kind in ("past", "future"):
            year = self.draw(st.integers(1, 1999) if kind == "past" else st.integers(2100, 9999))
            month, day = self.draw(st.integers(1, 12)), self.draw(st.integers(1, 28))
            hour, minute = self.draw(st.integers(0, 23)), self.draw(st.integers(0, 59))
            return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00Z"
        if kind == "listed":
            return self.draw(st.sampled_from(BAD_TIMES))
        return self.draw(st.sampled_from(["2026-10-20T10:00:00Z {}", "{}"])).format(self.text())

    def event(self, kind: str) -> dict[str, Any]:
        """A valid event (as far as the drawing goes) carrying hostile text everywhere."""
        draw = self.draw
        data: dict[str, Any] = {"referral_id": self.identifier()}
        if kind == "referral.received":
            data["pathway"] = draw(st.sampled_from(ENUMS["pathway"]))
            data["provider"] = self.code()
            for name in ("icb", "region"):
                if draw(st.booleans()):
                    data[name] = self.code()
            for name in RECEIVED_TEXT:
                if draw(st.booleans()):
                    data[name] = self.text()
        elif kind == "referral.triaged":
            if draw(st.booleans()):
                data["pathway"] = draw(st.sampled_from(ENUMS["pathway"]))
            if draw(st.booleans()):
                data["subject_to_standard"] = draw(st.booleans())
            if data.get("subject_to_standard") is False or draw(st.booleans()):
                data["exclusion_reason"] = draw(st.sampled_from(ENUMS["exclusion_reason"]))
        elif kind == "referral.contact":
            data["contact_id"] = self.identifier()
            data["mode"] = draw(st.sampled_from(ENUMS["mode"]))
            data["attended"] = draw(st.booleans())
        else:
            data["reason"] = draw(st.sampled_from(ENUMS["reason"]))
        if draw(st.booleans()):
            data |= {k: v for k, v in self.extras().items() if k not in data}
        doc: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.identifier(),
            "source": self.text(),
            "type": kind,
            "time": self.time(),
        }
        if draw(st.booleans()):
            doc["datacontenttype"] = "application/json"
        doc["data"] = data
        if draw(st.booleans()):
            doc |= {k: v for k, v in self.extras().items() if k not in doc}
        return doc

    def wrong_value(self, name: str) -> Any:
        """A value of the wrong JSON type (or out of the enum or pattern) for field `name`."""
        builders: list[Callable[[], Any]] = [
            self.nhs_number,
            lambda: None,
            lambda: [self.text(), self.nhs_number()],
            lambda: {self.text(most=1): self.nhs_text()},
            lambda: self.draw(st.floats(allow_nan=False, allow_infinity=False)),
            lambda: self.draw(st.integers()),
        ]
        if name in BOOLEAN_FIELDS:
            builders += [lambda: f"true {self.text()}", lambda: "true", lambda: 1, lambda: 0]
        else:
            builders += [lambda: True, lambda: False]
        if name in ENUMS or name in CODES or name in ("specversion", "type", "datacontenttype"):
            builders += [self.text, lambda: "", lambda: f"{self.draw(st.sampled_from(ALNUM))} x"]
        if name in IDENTIFIERS or name == "source":
            builders.append(lambda: "")
        if name == "time":
            builders.append(lambda: 1_800_000_000)
        return self.draw(st.sampled_from(builders))()

    def string_slot(self, doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """A (container, key) of `doc` holding a string, or a new unknown field for one."""
        slots = [(doc, k) for k, v in doc.items() if isinstance(v, str)]
        slots += [(doc["data"], k) for k, v in doc["data"].items() if isinstance(v, str)]
        container, name = self.draw(st.sampled_from([*slots, (doc["data"], "")]))
        if name == "":
            name = self.text(most=1)
            container[name] = self.text()
        return container, name


@dataclass
class Draft:
    """One hostile message as drawn; `render` makes its bytes (with a unique event id)."""

    label: str
    ctx: Ctx
    doc: Any = None
    raw: bytes | None = None
    ascii_only: bool = True
    post: tuple[str, Any] | None = None
    pad_to: int | None = None  # exact size, by the unknown field "padding" (a text, spaces)
    pad_text: str = ""
    key: bytes | None = None  # a hostile message key; else keyed by referral id

    def render(self, serial: int, now: float) -> bytes | None:
        if self.label == "tombstone":
            return None
        if self.raw is not None:
            data = self.raw
        else:
            doc = self.doc
            if isinstance(doc, dict) and isinstance(doc.get("id"), str):
                doc = {**doc, "id": f"{doc['id']} #{serial}"}  # event ids are unique
            data = self.ctx.substitute(json.dumps(doc, ensure_ascii=self.ascii_only), now)
        if self.pad_to is not None:
            head = self.ctx.substitute(json.dumps(self.pad_text), now)[1:-1]
            need = self.pad_to - len(data)
            filler = head if len(head) <= need else b""
            filler += b" " * (need - len(filler))
            data = data.replace(b'"padding": ""', b'"padding": "' + filler + b'"', 1)
        if self.post is None:
            return data
        action, argument = self.post
        if action == "truncate":
            return data[: max(1, len(data) * argument // 100)]
        if action == "bom":
            return codecs.BOM_UTF8 * argument + data
        if action == "prefix":
            return argument + data
        if action == "nul":  # NULs between the bytes
            return b"\x00".join(bytes([b]) for b in data)
        text = data.decode("utf-8")
        return text.encode(argument, errors="replace")


@st.composite
def drafts(draw: st.DrawFn) -> Draft:
    ctx = Ctx(draw)
    mutation = draw(st.sampled_from(MUTATIONS))
    kind = draw(st.sampled_from(TYPES))
    doc = ctx.event(kind)
    data = doc["data"]
    draft = Draft(mutation, ctx, doc, ascii_only=draw(st.booleans()))
    if draw(st.integers(0, 4)) == 0:  # a hostile key: an NHS number, bytes that are not UTF-8
        digits = ctx.nhs()
        spelt = f"{digits[:3]} {digits[3:6]} {digits[6:]}"
        draft.key = f"{spelt} {draw(RANDOM_TEXT)}".encode() + draw(st.sampled_from(BAD_BYTES))

    def field_of(names: Any) -> tuple[dict[str, Any], str]:
        name = draw(st.sampled_from(sorted(names)))
        return (data, name[5:]) if name.startswith("data.") else (doc, name)

    all_fields = {*ENVELOPE, *(f"data.{n}" for n in DATA_FIELDS[kind])}
    if mutation == "wrong_type":
        target, name = field_of(all_fields)
        target[name] = ctx.wrong_value(name)
    elif mutation == "missing":
        target, name = field_of(
            {*ENVELOPE} - {"datacontenttype"} | {f"data.{n}" for n in REQUIRED[kind]}
        )
        target.pop(name, None)
    elif mutation == "oversize":
        limits = {"id": 128, "source": 512, "data.referral_id": 128}
        if kind == "referral.contact":
            limits["data.contact_id"] = 128
        if kind == "referral.received":
            limits |= {f"data.{n}": 256 for n in RECEIVED_TEXT}
            limits |= {f"data.{n}": 12 for n in CODES}
        path = draw(st.sampled_from(sorted(limits)))
        target, name = field_of({path})
        if name in CODES:
            target[name] = "X" + ctx.nhs() + "Y" * draw(st.integers(2, 20))
        else:
            base = ctx.text()
            over = limits[path] + draw(st.integers(1, 300)) - len(base)
            target[name] = base + " " + "x" * max(1, over)
    elif mutation == "control":
        names = {"id", "data.referral_id"} | (
            {"data.contact_id"} if kind == "referral.contact" else set()
        )
        target, name = field_of(names)
        value = target[name] if isinstance(target.get(name), str) else ctx.identifier()
        at = draw(st.integers(0, len(value)))
        control = draw(st.sampled_from(["\n", "\r", "\x00", "\x01", "\x1b", "\x1f", "\x7f"]))
        target[name] = value[:at] + control + value[at:]
    elif mutation == "unstorable":
        target, name = ctx.string_slot(doc)
        if draw(st.booleans()):
            target[name] += " " + ctx.splice(draw(st.sampled_from(UNSTORABLE)))
        else:
            value = target.pop(name)
            target[name + ctx.splice(draw(st.sampled_from(UNSTORABLE)))] = value
    elif mutation == "bad_time":
        doc["time"] = ctx.bad_time()
    elif mutation in ("specversion", "unknown_type", "content_type"):
        name, listed = {
            "specversion": ("specversion", ["0.3", "1.0 ", "1", "", 1.0, "1.0\n", "ONE"]),
            "unknown_type": ("type", ["referral.Received", "referral.received\n", "", "x"]),
            "content_type": ("datacontenttype", ["text/plain", "application/json; x=y", "", 1]),
        }[mutation]
        doc[name] = ctx.text() if draw(st.booleans()) else draw(st.sampled_from(listed))
    elif mutation == "bad_utf8":
        target, name = ctx.string_slot(doc)
        target[name] += ctx.byte_token(draw(st.sampled_from(BAD_BYTES)))
    elif mutation == "truncate":
        draft.post = ("truncate", draw(st.integers(1, 99)))
    elif mutation == "empty":
        draft.raw = b""
    elif mutation == "tombstone" and draft.key is None:  # (the clients refuse neither)
        digits = ctx.nhs()
        draft.key = f"{digits[:3]}\u2009{digits[3:6]}\u2009{digits[6:]}".encode()
    elif mutation == "encoding":
        draft.post = draw(
            st.sampled_from(
                [
                    ("encode", "utf-16"),
                    ("encode", "utf-16-le"),
                    ("encode", "utf-16-be"),
                    ("encode", "utf-32"),
                    ("encode", "utf-32-le"),
                    ("encode", "utf-32-be"),
                    ("nul", None),
                    ("encode", "latin-1"),
                    ("bom", 1),  # tolerated (RFC 8259)
                    ("bom", 2),
                    ("prefix", b"\x80"),
                    ("prefix", b" \t\r\n"),  # JSON whitespace: fine
                ]
            )
        )
    elif mutation == "not_object":
        digits, text = ctx.nhs(), ctx.text()
        options = [
            json.dumps([doc]),
            json.dumps(text),
            digits,
            f"{digits[0]}.{digits[1:]}e9",
            "null",
            "[]",
            "",
            "   ",
            f"not json {text}",
            "{'specversion': '1.0'}",
            "{" + json.dumps(doc)[1:-1],  # one brace short
        ]
        draft.raw = ctx.substitute(draw(st.sampled_from(options)), 0)
    elif mutation == "number":
        raw_number = draw(
            st.sampled_from(
                ["NaN", "Infinity", "-Infinity", "1e999", "-1.5e400", "1E400", "{nhs}e999",
                 "9" * 5000, "-0.0", "1e-400", "123456789012345678901234567890"]
            )
        )  # fmt: skip
        data[ctx.text(most=1)] = ctx.value_token(raw_number.format(nhs=ctx.nhs()))
    elif mutation in ("too_large", "huge_valid"):
        doc["padding"] = ""
        draft.pad_text = ctx.text()
        draft.pad_to = (
            draw(
                st.sampled_from([DEFAULT_MAX_BYTES + 1, DEFAULT_MAX_BYTES + 500, 100_000, 400_000])
            )
            if mutation == "too_large"
            else DEFAULT_MAX_BYTES - draw(st.integers(0, 2000))
        )
    elif mutation == "deep":
        levels = draw(st.sampled_from(DEPTHS))
        leaf = draw(
            st.sampled_from(
                [json.dumps(ctx.nhs_text()), '"\\u0041"', '"\\u0000"', "null", ctx.nhs(), "{}"]
            )
        )
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"k": ', "}")]))
        data[ctx.text(most=1)] = ctx.value_token(opener * levels + leaf + closer * levels)
    return draft


batches = st.lists(drafts(), min_size=4, max_size=24)


# -- the live system ---------------------------------------------------------------------------


def rfc3339(instant: float) -> str:
    return datetime.fromtimestamp(int(instant), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_week(instant: float) -> str:
    year, week, _ = datetime.fromtimestamp(instant, LONDON).isocalendar()
    return f"{year}-W{week:02d}"


def key_of(verdict: Verdict) -> bytes | None:
    """Publishers key by referral id; a message without a string one goes unkeyed."""
    doc = verdict.doc
    if isinstance(doc, dict) and isinstance(doc.get("data"), dict):
        referral_id = doc["data"].get("referral_id")
        if isinstance(referral_id, str):
            try:
                return referral_id.encode()
            except UnicodeEncodeError:  # a lone surrogate, by escape
                return None
    return None


# A 10-digit candidate (3-3-4, space or hyphen) or anything that can spell one less visibly
# (JSON escapes, a digit before an exponent): where the DLQ may hold other than the raw bytes.
_MAY_HOLD_A_NUMBER = re.compile(rb"\d{3}[ -]?\d{3}[ -]?\d{4}|\\u|\d[eE][+-]?\d")
_SPREAD = re.compile(r"\d{3}\D{0,2}\d{3}\D{0,2}\d{4}")


def may_hold(raw: bytes) -> bool:
    """Could some reading of `raw` hold a number (so the DLQ may hold other bytes)?"""
    return bool(_MAY_HOLD_A_NUMBER.search(raw) or _SPREAD.search(normalised(all_readings(raw))))


@dataclass
class Sent:
    raw: bytes | None  # None: a tombstone
    key: bytes | None
    partition: int
    offset: int
    verdict: Verdict
    label: str

    def __str__(self) -> str:
        return f"{self.label} @{self.partition}/{self.offset} {set(self.verdict.reasons) or 'accepted'}: {(self.raw or b'')[:300]!r}"


class Row(NamedTuple):
    event_id: str
    referral_id: str
    source: str
    document: Any
    json: str


class Tail:
    """Every record of a topic, read on as it grows."""

    def __init__(self, kafka: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=kafka,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
        )
        self.partitions = [
            TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic))
        ]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_beginning(*self.partitions)
        self.records: list[Any] = []

    def new(self, timeout: float = 60) -> list[Any]:
        """The records added since the last call, up to the topic's end now."""
        ends = self.consumer.end_offsets(self.partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(self.consumer.position(tp) < ends[tp] for tp in self.partitions):
            assert time.monotonic() < deadline, f"reading {self.partitions} timed out"
            for batch in self.consumer.poll(timeout_ms=100).values():
                records.extend(batch)
        while polled := self.consumer.poll(timeout_ms=100):  # past a stale end offset
            for batch in polled.values():
                records.extend(batch)
        self.records += records
        return records

    def close(self) -> None:
        self.consumer.close()


def _source(record: Any) -> tuple[int, int]:
    """The (partition, offset) a dead letter came from."""
    headers = dict(record.headers)
    return int(headers["source-partition"]), int(headers["source-offset"])


def record_text(record: Any) -> str:
    """A record's key, value and headers in every reading (`all_readings`)."""
    parts = [record.key or b"", record.value or b"", *(v for _, v in record.headers)]
    return f"{record.key!r} {record.headers!r}\n" + "\n".join(all_readings(p) for p in parts)


class Live:
    """The module's broker, database, Alertmanager and worker; what was sent; checks."""

    def __init__(self, kafka: str, url: str, alertmanager: str, tmp: Path) -> None:
        self.url, self.alertmanager, self.tmp = url, alertmanager, tmp
        self.pseudonymiser = Pseudonymiser(KEY)
        self.numbers: set[str] = {FIXED_NHS}  # every NHS number planted in anything sent
        self.sent: list[Sent] = []
        self.highest: dict[int, int] = {}  # partition -> highest offset sent to it
        self.serial = 0  # makes generated event ids unique
        self.log_seen = 0
        self.metrics_port = free_port()
        self.metrics = f"http://127.0.0.1:{self.metrics_port}"
        self.log = tmp / "worker.log"
        self.kafka = kafka
        self.worker = self.start_worker()
        try:
            self.producer = KafkaProducer(
                bootstrap_servers=kafka, acks=1, enable_idempotence=False, linger_ms=5,
                max_request_size=2**21,
            )  # fmt: skip
            self.db = psycopg.connect(url, autocommit=True)
            self.dlq = Tail(kafka, DLQ_TOPIC)
            self.outcomes = Tail(kafka, OUTCOMES_TOPIC)
            wait_for(lambda: ready(f"{self.metrics}/ready"), 60, "the worker's /ready")
        except BaseException:
            self.worker.stop()
            raise

    def start_worker(self) -> Worker:
        return Worker(
            self.kafka, self.url, self.log,
            "--metrics-port", str(self.metrics_port),
            "--log-level", "DEBUG",
            "--batch-size", "100",
            "--alertmanager-url", self.alertmanager,
            "--dashboard-url", DASHBOARD,
        )  # fmt: skip

    def close(self) -> None:
        self.worker.stop()
        self.producer.close()
        self.dlq.close()
        self.outcomes.close()
        self.db.close()

    # -- sending and waiting

    def publish(
        self,
        messages: list[tuple[bytes | None, bytes | None, str]],
        headers: list[list[tuple[str, bytes]]] | None = None,
    ) -> list[Sent]:
        """Send (raw, key, label) messages (with Kafka headers, if given); the prediction of
        each is made here."""
        verdicts = [verdict(raw) for raw, _, _ in messages]
        headers = headers if headers is not None else [[] for _ in messages]
        futures = [
            self.producer.send(
                EVENTS_TOPIC, key=key if key is not None else key_of(v), value=raw, headers=h
            )
            for (raw, key, _), v, h in zip(messages, verdicts, headers, strict=True)
        ]
        self.producer.flush()
        sent = []
        for (raw, key, label), v, future in zip(messages, verdicts, futures, strict=True):
            meta = future.get(timeout=30)
            sent.append(
                Sent(
                    raw,
                    key if key is not None else key_of(v),
                    meta.partition,
                    meta.offset,
                    v,
                    label,
                )
            )
            self.highest[meta.partition] = max(self.highest.get(meta.partition, -1), meta.offset)
        self.sent += sent
        return sent

    def alive(self) -> None:
        assert self.worker.process.poll() is None, (
            f"the worker stopped ({self.worker.process.returncode}):\n{self.log_text()[-5000:]}"
        )

    def settle(self, timeout: float = 120) -> None:
        """Until the worker's stored positions pass every message sent (or it dies)."""
        deadline = time.monotonic() + timeout
        while True:
            self.alive()
            stored = dict(
                self.db.execute(
                    "SELECT kafka_partition, next_offset FROM consumer_positions WHERE topic = %s",
                    (EVENTS_TOPIC,),
                ).fetchall()
            )
            if all(stored.get(p, 0) > offset for p, offset in self.highest.items()):
                return
            assert time.monotonic() < deadline, f"positions {stored}, sent up to {self.highest}"
            time.sleep(0.05)

    # -- what the system wrote

    def rows(self, sent: list[Sent]) -> dict[tuple[int, int], Row]:
        cursor = self.db.execute(
            "SELECT kafka_partition, kafka_offset, event_id, referral_id, source, document,"
            " row_to_json(e)::text FROM events e WHERE (kafka_partition, kafka_offset) IN"
            " (SELECT * FROM unnest(%s::integer[], %s::bigint[]))",
            ([s.partition for s in sent], [s.offset for s in sent]),
        )
        return {(r[0], r[1]): Row(*r[2:]) for r in cursor.fetchall()}

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def new_log(self) -> str:
        text = self.log.read_bytes()
        new, self.log_seen = text[self.log_seen :], len(text)
        return new.decode("utf-8", errors="replace")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.metrics}/metrics", timeout=10) as response:
            # Names and label values only: sample values are measurements (a process's virtual
            # memory in bytes can be any 10-digit number, one in eleven check-digit valid).
            return "\n".join(
                line if line.startswith("#") else line.rsplit(" ", 1)[0]
                for line in response.read().decode().splitlines()
            )

    def alerts(self) -> list[Any]:
        with urllib.request.urlopen(f"{self.alertmanager}/api/v2/alerts", timeout=10) as response:
            alerts: list[Any] = json.load(response)
            return alerts

    def alerts_text(self) -> str:
        # Without Alertmanager's fingerprints: 16 hex digits of a hash of the labels, where a
        # run of 10 decimal ones passes the check digit one time in eleven.
        alerts = [{k: v for k, v in a.items() if k != "fingerprint"} for a in self.alerts()]
        text = json.dumps(alerts, ensure_ascii=False)
        return text + "\n" + urllib.parse.unquote(text)  # generatorURL quotes the referral id

    # -- checks

    def leaks(self, sources: dict[str, str]) -> dict[str, list[str]]:
        """Where NHS numbers are in clear: source -> each number with the text around it."""
        return {name: [_context(text, n) for n in found] for name, text in sources.items()
                if (found := clear_numbers(text, self.numbers))}  # fmt: skip

    def pseudonyms_in(self, text: str) -> set[str]:
        planted = {self.pseudonymiser.pseudonym(n) for n in self.numbers}
        return set(PSEUDONYM.findall(text)) & planted

    def check(self, sent: list[Sent]) -> dict[tuple[int, int], Any]:
        """Wait for `sent` to be consumed; assert its fate message by message; scan what the
        system wrote meanwhile for NHS numbers in clear. Returns the dead letters by source
        (partition, offset)."""
        self.settle()
        dead = self.dlq.new()
        # The embedded broker may report a stale end offset after a large produce (the records
        # are there to fetch): read on until every refused message's letter has come.
        refused = {(s.partition, s.offset) for s in sent if not s.verdict.accepted}
        deadline = time.monotonic() + 30
        while not refused <= {_source(r) for r in dead} and time.monotonic() < deadline:
            time.sleep(0.2)
            dead += self.dlq.new()
        letters: dict[tuple[int, int], list[Any]] = {}
        for record in dead:
            headers = {name: value.decode() for name, value in record.headers}
            assert headers["reason"] in REASONS, headers
            position = (int(headers["source-partition"]), int(headers["source-offset"]))
            letters.setdefault(position, []).append(record)
        positions = {(s.partition, s.offset): s for s in sent}
        assert set(letters) <= set(positions), "dead letters for messages not in this batch"
        rows = self.rows(sent)
        problems = []
        for position, s in positions.items():
            got, row = letters.get(position, []), rows.get(position)
            if s.verdict.accepted:
                if got or row is None:
                    problems.append(
                        f"accepted, but {'dead-lettered' if got else 'not stored'}: {s}"
                    )
                    continue
                problems += [f"{p}: {s}" for p in self.stored_literally(row, s.verdict.doc)]
                continue
            if len(got) != 1 or row is not None:
                problems.append(
                    f"refused, but {len(got)} dead letters, stored {row is not None}: {s}"
                )
                continue
            headers = dict(got[0].headers)
            reason = headers["reason"].decode()
            if reason not in s.verdict.reasons:
                problems.append(f"reason {reason} ({headers.get('detail')!r}): {s}")
            raw = s.raw if s.raw is not None else b""  # a tombstone's letter has no bytes
            if not may_hold(raw) and got[0].value != raw:
                problems.append(f"the DLQ value is not the message as sent: {s}")
            if s.key is not None and not may_hold(s.key) and got[0].key != s.key:
                problems.append(f"the DLQ key is not the key as sent: {s}")
            if got[0].value != raw and "value-rewritten" in headers:
                rewritten = headers["value-rewritten"].decode()
                if rewritten != "withheld":  # read in another encoding: now UTF-8
                    got[0].value.decode("utf-8")
        assert not problems, "\n".join(problems[:20])
        self.alive()
        sources = {f"dlq {r.partition}/{r.offset}": record_text(r) for r in dead}
        sources |= {f"events row {p}": row.json for p, row in rows.items()}
        sources["outcomes"] = "\n".join(record_text(r) for r in self.outcomes.new())
        sources["metrics"] = self.metrics_text()
        sources["alerts"] = self.alerts_text()
        sources["log"] = self.new_log()
        leaks = self.leaks(sources)
        assert not leaks, leaks
        return {position: got[0] for position, got in letters.items()}

    def stored_literally(self, row: Row, sent: dict[str, Any]) -> list[str]:
        """How the stored event differs from the one sent with NHS numbers replaced by their
        pseudonyms: its document (tree and numbers), event id, referral id and source."""
        scrub = self.pseudonymiser.scrub
        expected = self.pseudonymiser.scrub_tree(sent)
        problems = []
        if not same_json(row.document, expected):
            problems.append(f"stored document {json.dumps(row.document)[:500]}")
        problems += [
            f"{path} not stored literally" for path in _literal_mismatches(row.document, sent, "")
        ]
        if row.event_id != scrub(sent["id"]):
            problems.append(f"event_id {row.event_id!r}")
        if row.referral_id != scrub(sent["data"]["referral_id"]):
            problems.append(f"referral_id {row.referral_id!r}")
        if row.source != scrub(sent["source"]):
            problems.append(f"source {row.source!r}")
        return problems


def _context(text: str, digits: str) -> str:
    """`digits` where they stand in `text`, plain or grouped, with 100 characters around."""
    spread = r"[\s-]?".join((digits[:3], digits[3:6], digits[6:]))
    match = re.search(spread, text)
    if match is None:
        return digits
    return f"{digits}: ...{text[max(0, match.start() - 100) : match.end() + 100]}..."


class _Candidates:
    """Text that may hold a number in any shape (the scrub may have changed it)."""

    @staticmethod
    def search(text: str) -> bool:
        return bool(_SPREAD.search(normalised(text)))


_CANDIDATE_DIGITS = _Candidates()


def _literal_mismatches(stored: Any, sent: Any, path: str) -> list[str]:
    """Paths where a string (or key) without a 10-digit run in it was not stored exactly as
    sent (independent of the pseudonymiser: such text has nothing to replace)."""
    if isinstance(sent, str):
        clean = not _CANDIDATE_DIGITS.search(sent)
        return [path] if clean and stored != sent else []
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        return [p for i, (a, b) in enumerate(zip(stored, sent, strict=True))
                for p in _literal_mismatches(a, b, f"{path}[{i}]")]  # fmt: skip
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path]
        found = []
        for name, value in sent.items():
            if _CANDIDATE_DIGITS.search(name):
                continue
            if name not in stored:
                found.append(f"{path}.{name!r} (key)")
            else:
                found += _literal_mismatches(stored[name], value, f"{path}.{name}")
        return found
    return []


@pytest.fixture(scope="module")
def live(
    new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("hostile")
    url = new_database()
    migrate(url)
    alertmanager, am_process = start_alertmanager(
        tmp / "alertmanager",
        {"route": {"receiver": "nobody"}, "receivers": [{"name": "nobody"}]},
    )
    try:
        with EmbeddedBroker() as broker:
            create_topics(
                broker.bootstrap,
                {EVENTS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1},
            )
            system = Live(broker.bootstrap, url, alertmanager, tmp)
            try:
                yield system
            finally:
                system.close()
    finally:
        stop_process(am_process)


# -- the tests ---------------------------------------------------------------------------------


def test_hand_built_corpus_is_dead_lettered_or_stored_literally(live: Live, corpus: Corpus) -> None:
    live.numbers |= corpus.numbers
    mixed = [*corpus.valid, *corpus.invalid]
    random.Random(SEED + 1).shuffle(mixed)  # interleaved, the same way on every run
    # A tombstone needs a key: the Kafka clients here refuse a record with neither (a null key
    # and a null value go through the pipeline in tests/unit/test_poison.py).
    tombstone_key = f"tombstone {FIXED_NHS[:3]} {FIXED_NHS[3:6]} {FIXED_NHS[6:]}".encode()
    sent = live.publish(
        [(raw, tombstone_key if raw is None else None, "hand-built") for raw in mixed]
    )
    dead = live.check(sent)

    # The prediction agrees with the corpus' own intent, and every reason is exercised.
    valid = set(corpus.valid)
    assert [s.raw for s in sent if s.verdict.accepted] == [r for r in mixed if r in valid]
    assert len(dead) == len(corpus.invalid)
    reasons = {dict(r.headers)["reason"].decode() for r in dead.values()}
    assert reasons == set(REASONS) - {INTERNAL}, reasons  # none can raise in the real codec

    # The documents as sent, by event id (NHS numbers by their pseudonyms); ids and sources,
    # which hold injection text only, exactly as sent.
    pseudonymiser = live.pseudonymiser
    with psycopg.connect(live.url) as conn:
        documents: dict[str, Any] = dict(
            conn.execute("SELECT event_id, document FROM events").fetchall()
        )
    for event_id, doc in corpus.valid_docs.items():
        stored = documents[pseudonymiser.scrub(event_id)]
        assert same_json(stored, pseudonymiser.scrub_tree(doc)), event_id
        for name in ("id", "source"):
            assert stored[name] == doc[name]


def run_generated(live: Live, examples: int) -> Counter[str]:
    """`examples` Hypothesis batches through the live worker; statistics of what was sent."""
    stats: Counter[str] = Counter()

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking against a live worker
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(batch=batches)
    def check(batch: list[Draft]) -> None:
        now = time.time()
        messages = []
        for draft in batch:
            live.serial += 1
            messages.append((draft.render(live.serial, now), draft.key, draft.label))
            live.numbers |= draft.ctx.numbers
        sent = live.publish(messages)
        for s in sent:
            note(str(s))
            stats[f"drawn {s.label}"] += 1
            stats["/".join(sorted(s.verdict.reasons)) or "accepted"] += 1
            for reason in s.verdict.reasons:
                stats[f"refused {reason}"] += 1
        live.check(sent)

    check()
    return stats


def _assert_coverage(stats: Counter[str], examples: int) -> None:
    print(f"\n{examples} generated batches: {dict(sorted(stats.items()))}")
    assert stats["accepted"] >= examples // 2, stats
    # Every reason is exercised (alone or beside another: which, depends on the draws, and
    # Hypothesis derives them from the test's own digest).
    for reason in set(REASONS) - {INTERNAL}:
        assert stats[f"refused {reason}"] > 0, f"no message refused as {reason}: {stats}"
    for mutation in set(MUTATIONS):
        assert stats[f"drawn {mutation}"] > 0, f"no {mutation} message drawn: {stats}"


def test_generated_corpus_is_dead_lettered_or_stored_literally(live: Live) -> None:
    stats = run_generated(live, GENERATED_EXAMPLES)
    _assert_coverage(stats, GENERATED_EXAMPLES)


@pytest.mark.slow
def test_a_larger_generated_corpus(live: Live) -> None:
    stats = run_generated(live, SLOW_EXAMPLES)
    _assert_coverage(stats, SLOW_EXAMPLES)


def _pages(live: Live) -> list[tuple[str, str]]:
    """Valid events that must page, sent now: (scrubbed referral id, alertname) of each page.

    NHS numbers and injection text in the referral ids and every free field; an ICB and a
    provider code that are NHS numbers (so metrics labels and alert labels carry them)."""
    rng = random.Random(SEED + 2)
    now = time.time()
    expected = []
    messages = []
    for i, (minutes, pathway, alertname) in enumerate(
        [
            (95, "ucr_2h", "ReferralAtRisk"),
            (100, "ucr_2h", "ReferralAtRisk"),
            (180, "ucr_2h", "ReferralBreached"),
            (3 * 24 * 60, "reablement_2d", "ReferralBreached"),
        ]
    ):
        number = nhs_number(rng)
        live.numbers.add(number)
        referral = f"PAGE-{i} {spelt(rng, number)} {rng.choice(INJECTIONS)}"
        codes = [nhs_number(rng) for _ in range(3)]
        live.numbers |= set(codes)
        data = {
            "referral_id": referral,
            "pathway": pathway,
            "provider": codes[0] if i == 1 else "RY7",
            "icb": codes[1] if i in (0, 2) else "QYG",
            "region": "Y62",
            "referral_source": f"{rng.choice(INJECTIONS)} NHS {spelt(rng, codes[2])}",
            "condition": "{{ .Labels.referral_id }} " + rng.choice(INJECTIONS),
            "patient_ref": codes[2],
            "notes": {"nhs": int(codes[2]), codes[2]: rng.choice(INJECTIONS)},
        }
        doc = {
            "specversion": "1.0",
            "id": f"PAGE-EVENT-{i} {spelt(rng, number)}",
            "source": f"urn:nhs:ods:RY7 {rng.choice(INJECTIONS)}",
            "type": "referral.received",
            "time": rfc3339(now - minutes * 60),
            "data": data,
        }
        messages.append((json.dumps(doc).encode(), None, "page"))
        expected.append((live.pseudonymiser.scrub(referral), alertname))
    sent = live.publish(messages)
    assert all(s.verdict.accepted for s in sent)
    live.check(sent)
    return expected


def _export(live: Live, week: str) -> dict[str, str]:
    out = live.tmp / "export" / week
    result = subprocess.run(
        [crisiswatch(), "export", "--week", week, "--detail", "--out", str(out),
         "--database-url", live.url, "--quiet"],
        capture_output=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    sources = {f"export {week} stdout/stderr": (result.stdout + result.stderr).decode()}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".xlsx" for p in files)
    assert any(p.suffix == ".csv" for p in files)
    for path in files:
        if path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as book:
                for name in book.namelist():
                    sources[f"{path}:{name}"] = book.read(name).decode("utf-8", "replace")
        else:
            sources[str(path)] = path.read_text(encoding="utf-8", errors="replace")
    return sources


def _shapes_corpus(
    rng: random.Random,
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]], set[str]]]:
    """(value, key, headers, numbers planted) for every shape of issue 17 in every field, the
    key and a header, as UTF-8 (accepted) and in every other encoding (refused)."""
    messages = []
    for n, shape in enumerate([*SHAPES, "plain", "spaced", "hyphenated"]):

        def plant(numbers: set[str], shape: str = shape) -> str:
            digits = nhs_number(rng)
            numbers.add(digits)
            if shape in SHAPES:
                return shaped(digits, shape)
            sep = {"plain": "", "spaced": " ", "hyphenated": "-"}[shape]
            return sep.join((digits[:3], digits[3:6], digits[6:]))

        for encoding in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be",
                         "utf-16", "utf-32", "nul"):  # fmt: skip
            numbers: set[str] = set()
            doc = {
                "specversion": "1.0",
                "id": f"SHAPE-{shape}-{encoding} {plant(numbers)}",
                "source": f"urn:nhs:ods:RY7 {plant(numbers)}",
                "type": "referral.received",
                "time": f"2026-10-2{n % 7}T1{n % 8}:00:00Z",  # in WEEK: the detail export
                "data": {
                    "referral_id": f"SHAPE-{shape}-{encoding} {plant(numbers)}",
                    "pathway": "ucr_2h",
                    "provider": "RY7",
                    "icb": "QYG",
                    "patient_ref": plant(numbers),
                    "condition": f"NHS no. {plant(numbers)}; {rng.choice(INJECTIONS)}",
                    plant(numbers): {"nested": [plant(numbers)]},
                },
                "x_note": plant(numbers),
            }
            text = json.dumps(doc, ensure_ascii=n % 2 == 0)
            key_text = f"K {plant(numbers)}"
            header = [("x-patient", plant(numbers).encode())]
            if encoding == "nul":
                value = b"\x00".join(bytes([b]) for b in text.encode())
                key = b"\x00".join(bytes([b]) for b in key_text.encode())
            else:
                value, key = text.encode(encoding), key_text.encode(encoding)
            messages.append((value, key, header, numbers))
    return messages


def _replay(live: Live, raws: list[bytes], name: str) -> dict[str, str]:
    """`crisiswatch replay` over these messages (one a line): its outputs, every reading."""
    source = live.tmp / f"{name}.ndjson"
    source.write_bytes(b"\n".join(raws) + b"\n")
    out, rejects = live.tmp / f"{name}.csv", live.tmp / f"{name}.rejects.ndjson"
    result = subprocess.run(
        [crisiswatch(), "replay", str(source), "--out", str(out), "--rejects", str(rejects)],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "CRISISWATCH_PSEUDONYM_KEY": KEY.decode()},
    )
    assert result.returncode == 0, result.stderr.decode()
    return {
        f"replay {name} stdout/stderr": (result.stdout + result.stderr).decode(),
        f"replay {name} outcomes": out.read_text(encoding="utf-8"),
        f"replay {name} rejects": rejects.read_text(encoding="utf-8"),
    }


def test_every_shape_and_encoding_is_pseudonymised_everywhere(live: Live) -> None:
    """Issue 17: numbers in every shape, in every field, the key and a header, in every
    encoding, through the worker (checked as every batch: fate, DLQ, tables, outcomes, log,
    metrics, alerts) and through replay. As a control, the same search over the inputs finds
    every number planted; numbers failing modulus 11 come through unchanged."""
    corpus = _shapes_corpus(random.Random(SEED + 3))
    for value, key, headers, numbers in corpus:
        live.numbers |= numbers
        inputs = "\n".join(all_readings(b) for b in (value, key, *(v for _, v in headers)))
        assert numbers <= set(clear_numbers(inputs, set()))  # the control, message by message
    # Near misses in the same shapes (a wrong check digit): stored exactly as sent.
    near = {}
    for shape in SHAPES:
        digits = nhs_number(random.Random(shape))
        wrong = digits[:9] + str((int(digits[9]) + 1) % 10)
        assert not is_nhs_number(wrong)
        near[shape] = shaped(wrong, shape)
    doc = {
        "specversion": "1.0",
        "id": "NEAR-MISSES",
        "source": "urn:nhs:ods:RY7",
        "type": "referral.received",
        "time": "2026-10-21T10:00:00Z",
        "data": {"referral_id": "NEAR-MISSES", "pathway": "ucr_2h", "provider": "RY7", **near},
    }
    messages = [(v, k, "shapes") for v, k, _, _ in corpus]
    messages.append((json.dumps(doc, ensure_ascii=False).encode(), None, "near misses"))
    sent = live.publish(messages, [h for _, _, h, _ in corpus] + [[]])
    assert sum(s.verdict.accepted for s in sent) == len(SHAPES) + 3 + 1
    dead = live.check(sent)
    rewritten = {dict(r.headers).get("value-rewritten", b"").decode() for r in dead.values()}
    assert {"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"} <= rewritten
    row = live.rows(sent[-1:])[(sent[-1].partition, sent[-1].offset)]
    assert {k: row.document["data"][k] for k in near} == near

    sources = _replay(live, [v for v, _, _, _ in corpus], "shapes")
    leaks = live.leaks(sources)
    assert not leaks, leaks
    assert live.pseudonyms_in(sources["replay shapes outcomes"])
    assert live.pseudonyms_in(sources["replay shapes rejects"])
    assert clear_numbers(all_readings((live.tmp / "shapes.ndjson").read_bytes()), set())


def test_poison_messages_never_stop_the_worker(live: Live) -> None:
    """Tombstones (keyed and not) and empty values are dead-lettered as `empty` and their
    offsets committed; a normal event right after them gets its outcome; a restarted worker
    that has to read them again does not stop on them either."""
    referral = f"POISON-{time.time_ns()}"
    good = {
        "specversion": "1.0",
        "id": f"{referral}-E",
        "source": "urn:nhs:ods:RY7",
        "type": "referral.received",
        "time": rfc3339(time.time() - 60),
        "data": {"referral_id": referral, "pathway": "ucr_2h", "provider": "RY7"},
    }
    key = referral.encode()
    messages: list[tuple[bytes | None, bytes | None, str]] = [
        (None, key, "tombstone"),  # one partition, in order: these, then the event
        (b"", key, "empty"),
        (None, key, "tombstone"),
        (json.dumps(good).encode(), key, "after"),
    ]
    sent = live.publish(messages)
    assert len({s.partition for s in sent}) == 1
    dead = live.check(sent)
    assert {dict(r.headers)["reason"] for r in dead.values()} == {EMPTY.encode()}
    assert any(r.key == key for r in live.outcomes.records), "no outcome for the event after"

    # Restart, with the partition's stored position rewound to the first tombstone.
    live.worker.stop()
    assert live.worker.process.returncode == 0, live.log_text()[-5000:]
    partition, first = sent[0].partition, sent[0].offset
    live.db.execute(
        "UPDATE consumer_positions SET next_offset = %s WHERE topic = %s AND kafka_partition = %s",
        (first, EVENTS_TOPIC, partition),
    )
    live.worker = live.start_worker()
    wait_for(lambda: ready(f"{live.metrics}/ready"), 60, "the restarted worker's /ready")
    live.settle()
    live.alive()
    again = [r for r in live.dlq.new() if r.partition is not None]
    positions = {(int(dict(r.headers)["source-partition"]), int(dict(r.headers)["source-offset"]))
                 for r in again}  # fmt: skip
    assert {(s.partition, s.offset) for s in sent[:3]} <= positions
    live.outcomes.new()


def test_pages_exist_and_nothing_anywhere_holds_an_nhs_number_in_clear(
    live: Live, corpus: Corpus
) -> None:
    live.numbers |= corpus.numbers
    pages = _pages(live)

    # The pages exist: the worker posted them, Alertmanager holds them (so the scan of alerts
    # below is not vacuous), labelled by the scrubbed referral id.
    def paged() -> bool:
        held = {(a["labels"].get("referral_id"), a["labels"]["alertname"]) for a in live.alerts()}
        return set(pages) <= held

    wait_for(paged, 60, f"the pages {pages} in Alertmanager")
    alerts = live.alerts()
    assert all(
        a["labels"]["region"] == "Y62"
        for a in alerts
        if a["labels"]["referral_id"].startswith("PAGE-")
    )

    # Every place the system writes to.
    sources: dict[str, str] = {}
    with psycopg.connect(live.url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        assert {"events", "clocks", "consumer_positions"} <= set(tables)
        for table in tables:
            rows = conn.execute(f"SELECT row_to_json(t)::text FROM {table} t").fetchall()
            sources[f"table {table}"] = "\n".join(r[0] for r in rows)
    live.dlq.new()
    for record in live.dlq.records:
        sources[f"dlq {record.offset}"] = record_text(record)
    live.outcomes.new()
    sources["outcomes"] = "\n".join(record_text(r) for r in live.outcomes.records)
    sources["metrics"] = live.metrics_text()
    sources["alerts"] = live.alerts_text()
    weeks = {WEEK, iso_week(time.time()), iso_week(time.time() - 3 * 86400)}
    generated = [s for s in live.sent if s.label == "valid" and s.verdict.accepted
                 and s.verdict.doc["type"] == "referral.received"]  # fmt: skip
    if generated:  # a week of the generated corpus too
        first = datetime.fromisoformat(generated[0].verdict.doc["time"].upper())
        weeks.add(iso_week(first.timestamp()))
    for week in sorted(weeks):
        sources |= _export(live, week)
    sources |= _replay(live, [s.raw for s in live.sent if s.raw], "everything")
    detail = "\n".join(
        text for name, text in sources.items() if name.startswith(str(live.tmp / "export" / WEEK))
    )
    assert "HOSTILE-1" in detail  # the detail sheet lists the week's referrals

    # Each kind of place carried NHS numbers (their pseudonyms are there): a clean scan below
    # means they were replaced, not that none arrived. Metrics label values come from closed
    # sets (consumers/observe/metrics.py): codes that were NHS numbers are counted as icb="unknown".
    groups = {
        "tables": [n for n in sources if n.startswith("table ")],
        "dlq": [n for n in sources if n.startswith("dlq ")],
        "outcomes": ["outcomes"],
        "alerts": ["alerts"],
        "exports": [n for n in sources if n.startswith(str(live.tmp / "export"))],
        "replay": [n for n in sources if n.startswith("replay ")],
    }
    assert re.search(
        r'crisiswatch_referrals_received_total\{[^}]*icb="unknown"', sources["metrics"]
    )
    assert all(f'reason="{reason}"' in sources["metrics"] for reason in REASONS)
    for group, names in groups.items():
        assert names, group
        assert live.pseudonyms_in("\n".join(sources[n] for n in names)), f"no pseudonym in {group}"

    # The worker never stopped, and stops cleanly now (flushing its log).
    live.alive()
    assert ready(f"{live.metrics}/health")
    live.worker.stop()
    assert live.worker.process.returncode == 0, live.log_text()[-5000:]
    sources["worker log"] = live.log_text()
    assert '"level":"DEBUG"' in sources["worker log"]

    leaks = live.leaks(sources)
    assert not leaks, leaks
