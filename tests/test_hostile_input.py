"""Hostile input through the whole live system (issue 8, item 3).

A corpus of bad messages (wrong types in every field, oversized strings and messages, deep
nesting, invalid UTF-8, far-past and far-future times, SQL and template injection text in every
string field, valid NHS numbers in every free field and in unknown extra fields, plain, spaced,
hyphenated, as JSON integers and as a float with an exponent), mixed with valid events that
carry the same injection text and NHS numbers in their free fields, is published through a real
broker to a real worker process writing to a fresh PostgreSQL database. Then:

* the worker never stopped;
* every bad message is in the DLQ, once, with a reason from the codec's `REASONS`;
* valid events' strings are stored literally in `events.document`;
* no valid NHS number appears in clear in any table, the worker log (at DEBUG), the DLQ values
  and headers, the outcomes topic, `/metrics`, or an export of the week (every file, the XLSX
  unzipped).

The corpus is built with `random.Random(SEED)`: the same messages on every run.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.embedded import EmbeddedBroker, free_port
from consumers.postgres import migrate
from consumers.topic import create_topics
from streams.codec import DEFAULT_MAX_BYTES, REASONS
from streams.options import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from streams.pseudonym import Pseudonymiser, is_nhs_number
from tests.support import crisiswatch, produce, ready, wait_for
from tests.test_worker import Worker

pytestmark = pytest.mark.integration

SEED = 1234
PARTITIONS = 3
KEY = b"test-key-0123456789abcdef"  # tests.test_worker.Worker's CRISISWATCH_PSEUDONYM_KEY
WEEK = "2026-W43"  # Monday 2026-10-19 to Sunday 2026-10-25, Europe/London
FIXED_NHS = "9434765919"  # the classic example number (valid check digit)
EXPONENT_FORM = "9.434765919e9"  # the same number as a JSON float with an exponent

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
    "\\x00 \\x1b[2J",  # literal backslashes (a literal "\\u0000" is wrongly refused: see report)
    "$(rm -rf /)",
    '=HYPERLINK("http://x")',
]

RECEIVED_TEXT = ("referral_source", "condition", "patient_ref")
# Every field of each event type, with a valid value (wrong-type variants replace one of them).
ENVELOPE = ("specversion", "id", "source", "type", "time", "datacontenttype", "data")
DATA_FIELDS = {
    "referral.received": ("referral_id", "pathway", "provider", "icb", "region", *RECEIVED_TEXT),
    "referral.triaged": ("referral_id", "pathway", "subject_to_standard", "exclusion_reason"),
    "referral.contact": ("referral_id", "contact_id", "mode", "attended"),
    "referral.cancelled": ("referral_id", "reason"),
}
BOOLEAN_FIELDS = {"attended", "subject_to_standard"}


# -- the corpus ------------------------------------------------------------------------------


def nhs_number(rng: random.Random) -> str:
    """A valid NHS number (England/Wales range 400-799 million, modulus-11 check digit)."""
    while True:
        head = str(rng.randrange(400_000_000, 800_000_000))
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


class Corpus:
    """Deterministic messages; `valid` and `invalid` raw bytes, and every NHS number used."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.numbers: set[str] = {FIXED_NHS}
        self.valid: list[bytes] = []
        self.valid_docs: dict[str, dict[str, Any]] = {}  # event id -> document as sent
        self.invalid: list[bytes] = []
        self._serial = 0

    # -- building blocks

    def nhs(self) -> str:
        digits = nhs_number(self.rng)
        self.numbers.add(digits)
        return spelt(self.rng, digits)

    def injection(self) -> str:
        return self.rng.choice(INJECTIONS)

    def free_text(self) -> str:
        """Injection text with an NHS number in it, within the schema's 256 characters."""
        return f"{self.injection()} NHS {self.nhs()} {self.injection()}"

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


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    built = Corpus(SEED)
    built.build_valid()
    built.build_invalid()
    assert 300 <= len(built.valid) + len(built.invalid) <= 700
    assert len(built.valid_docs) == len(built.valid)
    return built


# -- scanning for NHS numbers in clear --------------------------------------------------------

# 10 digits, optionally 3-3-4 with a space or hyphen, not part of a longer digit run. Written
# here independently of streams.pseudonym's pattern; also any whitespace as the separator.
_RUN = re.compile(r"(?<!\d)(\d{3})[\s-]?(\d{3})[\s-]?(\d{4})(?!\d)")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")  # digests (manifest SHA-256s) are not identifiers


def _forms(digits: str) -> tuple[str, ...]:
    return (digits, *(sep.join((digits[:3], digits[3:6], digits[6:])) for sep in " -"))


def clear_numbers(text: str, known: set[str]) -> list[str]:
    """NHS numbers in `text` in clear: any valid 10-digit candidate (epoch-second-sized runs
    from timestamps excepted: the corpus draws from 400-799 million), and any corpus number
    found anywhere, even inside a longer digit run or a digest."""
    found = [n for n in known if any(form in text for form in _forms(n))]
    for match in _RUN.finditer(_HEX.sub(" ", text)):
        digits = "".join(match.groups())
        if is_nhs_number(digits) and not 1_000_000_000 <= int(digits) < 2_200_000_000:
            found.append(digits)
    return found


def read_all(kafka: str, topic: str, expected: int | None, deadline: float) -> list[Any]:
    """Every record of `topic`: until `expected` arrived (then 2 s more), or idle for 5 s."""
    consumer = KafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        end = time.monotonic() + deadline
        last = time.monotonic()
        settle: float | None = None
        while time.monotonic() < end:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
                last = time.monotonic()
            now = time.monotonic()
            if expected is not None and len(records) >= expected and settle is None:
                settle = now + 2.0
            if settle is not None and now >= settle:
                break
            if expected is None and now - last > 5.0:
                break
        return records
    finally:
        consumer.close()


def publish(kafka: str, lines: list[bytes]) -> None:
    """tests.support.produce keys by the string referral id; it cannot key the lines whose
    referral id is not a string (AttributeError), so those go unkeyed here."""
    keyed, unkeyed = [], []
    for line in lines:
        try:
            json.loads(line)["data"]["referral_id"].encode()
        except (AttributeError, RecursionError):
            unkeyed.append(line)
            continue
        except (ValueError, KeyError, TypeError):
            pass
        keyed.append(line)
    produce(kafka, keyed)
    producer = KafkaProducer(
        bootstrap_servers=kafka, acks=1, enable_idempotence=False, max_request_size=2**21
    )
    for line in unkeyed:
        producer.send(EVENTS_TOPIC, value=line)
    producer.flush()
    producer.close()


@pytest.fixture
def system(new_database: Callable[[], str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    url = new_database()
    migrate(url)
    with EmbeddedBroker() as broker:
        create_topics(
            broker.bootstrap,
            {EVENTS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1},
        )
        port = free_port()
        log = tmp_path / "worker.log"
        worker = Worker(
            broker.bootstrap,
            url,
            log,
            "--metrics-port",
            str(port),
            "--log-level",
            "DEBUG",
            "--batch-size",
            "100",
        )
        try:
            yield {"kafka": broker.bootstrap, "url": url, "worker": worker, "port": port,
                   "log": log, "tmp": tmp_path}  # fmt: skip
        finally:
            worker.stop()


# -- the test ---------------------------------------------------------------------------------


def test_hostile_input_is_dead_lettered_stored_literally_and_never_leaks_nhs_numbers(
    system: dict[str, Any], corpus: Corpus
) -> None:
    kafka, url, worker = system["kafka"], system["url"], system["worker"]
    metrics = f"http://127.0.0.1:{system['port']}"
    wait_for(lambda: ready(f"{metrics}/health"), 60, "the worker's /health")

    # Interleave valid and invalid messages (deterministically) and publish them all.
    mixed = [*corpus.valid, *corpus.invalid]
    random.Random(SEED + 1).shuffle(mixed)
    publish(kafka, mixed)

    def stored() -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
            return int(row[0]) if row is not None else 0

    dead = read_all(kafka, DLQ_TOPIC, len(corpus.invalid), deadline=90)
    wait_for(lambda: stored() >= len(corpus.valid), 60, "every valid event stored")
    assert worker.process.poll() is None, system["log"].read_text()[-5000:]
    assert ready(f"{metrics}/health")

    # Every bad message in the DLQ, once, with a reason; no valid event among them.
    assert len(dead) == len(corpus.invalid), [r.value[:200] for r in dead][:20]
    assert stored() == len(corpus.valid)
    for record in dead:
        headers = dict(record.headers)
        assert headers["reason"].decode() in REASONS, headers
    reasons = {dict(r.headers)["reason"].decode() for r in dead}
    assert reasons == set(REASONS), reasons

    # Valid events' strings are stored literally (NHS numbers by their pseudonyms).
    pseudonymiser = Pseudonymiser(KEY)
    with psycopg.connect(url) as conn:
        documents: dict[str, Any] = dict(
            conn.execute("SELECT event_id, document FROM events").fetchall()
        )
    assert set(documents) == {pseudonymiser.scrub(i) for i in corpus.valid_docs}
    for event_id, sent in corpus.valid_docs.items():
        assert documents[pseudonymiser.scrub(event_id)] == pseudonymiser.scrub_tree(sent)
        for field in ("id", "source"):  # injection text only: exactly as sent
            assert documents[pseudonymiser.scrub(event_id)][field] == sent[field]

    # No NHS number in clear anywhere the system writes.
    sources: dict[str, str] = {}
    with psycopg.connect(url) as conn:
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
    for i, record in enumerate(dead):
        sources[f"dlq value {i}"] = record.value.decode("utf-8", errors="backslashreplace")
        sources[f"dlq headers {i}"] = repr(record.headers)
    outcomes = read_all(kafka, OUTCOMES_TOPIC, None, deadline=30)
    assert outcomes
    sources["outcomes"] = "\n".join(f"{r.key!r} {r.value.decode()} {r.headers!r}" for r in outcomes)
    with urllib.request.urlopen(f"{metrics}/metrics", timeout=5) as response:
        # Names and label values only: sample values are measurements (a process's virtual
        # memory in bytes can be any 10-digit number, one in eleven of them check-digit valid).
        sources["metrics"] = "\n".join(
            line.rsplit(" ", 1)[0] if not line.startswith("#") else line
            for line in response.read().decode().splitlines()
        )
    out = system["tmp"] / "export"
    result = subprocess.run(
        [
            crisiswatch(),
            "export",
            "--week",
            WEEK,
            "--detail",
            "--out",
            str(out),
            "--database-url",
            url,
            "--quiet",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    sources["export stdout/stderr"] = (result.stdout + result.stderr).decode()
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
    detail = "\n".join(text for name, text in sources.items() if name.startswith(str(out)))
    assert "HOSTILE-1" in detail  # the detail sheet lists the week's referrals
    worker.stop()  # flush its log
    sources["worker log"] = system["log"].read_text(encoding="utf-8", errors="replace")
    assert sources["worker log"].strip()

    # Nowhere in clear: not the DLQ keys either (publishers key by referral id).
    leaks = {name: found for name, text in sources.items()
             if (found := clear_numbers(text, corpus.numbers))}  # fmt: skip
    assert not leaks, leaks
