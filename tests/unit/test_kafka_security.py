"""Kafka security settings at the client-configuration level (no broker).

What the integration tests cannot reach: the broker there (Tansu 0.6.0) accepts no SASL
credentials at all (tests/integration/test_secure_kafka.py says why), so SASL *success* is
checked here, as far as it can be without a broker: the settings, the keyword arguments each
library gets (and that they are the same for both), Faust's translation of its credentials into
aiokafka's, aiokafka's own argument checks, and the SCRAM exchange of `diagnose` against a small
SCRAM server written here from RFC 5802.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.kafka.diagnose import diagnose
from consumers.kafka.security import KafkaSecurity
from streams.errors import ConfigurationError
from tests.secure import KAFKA_PASSWORD, Pki

SASL = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "svc-crisiswatch",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(KAFKA_PASSWORD + "\n")
    return path


def test_plaintext_by_default_and_without_reading_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRISISWATCH_KAFKA_SECURITY_PROTOCOL", "SSL")
    assert KafkaSecurity.plaintext().kafka_python() == {"security_protocol": "PLAINTEXT"}
    assert KafkaSecurity.plaintext().faust_credentials() is None
    assert KafkaSecurity.load().security_protocol == "SSL"  # the entry point reads it


def test_the_password_comes_only_from_its_file(
    password_file: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISISWATCH_KAFKA_SASL_PASSWORD", "from-the-environment")
    settings = KafkaSecurity.load(**SASL, ssl_cafile=pki.ca, sasl_password_file=password_file)
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == KAFKA_PASSWORD  # one newline dropped
    for text in (repr(settings), str(settings), settings.model_dump_json(), settings.describe()):
        assert KAFKA_PASSWORD not in text
    for config in (settings.kafka_python(), settings.aiokafka()):
        assert config["sasl_plain_password"] == KAFKA_PASSWORD
        assert KAFKA_PASSWORD not in repr(config)  # a library logging its config shows '***'
        assert KAFKA_PASSWORD not in f"{config}"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"security_protocol": "TLS"}, "CRISISWATCH_KAFKA_SECURITY_PROTOCOL"),
        ({"security_protocol": "SASL_SSL"}, "CRISISWATCH_KAFKA_SASL_MECHANISM is required"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
            "CRISISWATCH_KAFKA_SASL_USERNAME is required",
        ),
        ({**SASL}, "CRISISWATCH_KAFKA_SASL_PASSWORD_FILE is required"),
        ({**SASL, "sasl_mechanism": "GSSAPI"}, "CRISISWATCH_KAFKA_SASL_MECHANISM"),
        ({"sasl_username": "svc"}, "SASL settings given but"),
        ({"ssl_cafile": "/etc/hostname"}, "TLS files given but"),
        ({"security_protocol": "SSL", "ssl_certfile": "/x.pem"}, "go together"),
        ({**SASL, "sasl_password_file": "/nonexistent/pw"}, "cannot read /nonexistent/pw"),
    ],
)
def test_bad_settings_are_configuration_errors(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KafkaSecurity.load(**values)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        KafkaSecurity.load(**SASL, sasl_password_file=empty)


def test_tls_verifies_certificate_and_hostname(pki: Pki) -> None:
    context = KafkaSecurity.load(security_protocol="SSL", ssl_cafile=pki.ca).ssl_context()
    assert context is not None
    assert context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "crisiswatch test CA"),),)
    ]


def test_mutual_tls_loads_the_client_pair_and_refuses_a_mismatch(pki: Pki) -> None:
    good = KafkaSecurity.load(
        security_protocol="SSL",
        ssl_cafile=pki.ca,
        ssl_certfile=pki.client.cert,
        ssl_keyfile=pki.client.key,
    )
    assert good.ssl_context() is not None
    with pytest.raises(ConfigurationError, match="cannot load the client certificate") as caught:
        KafkaSecurity.load(  # checked when loaded, at the entry point: exit 2
            security_protocol="SSL",
            ssl_cafile=pki.ca,
            ssl_certfile=pki.client.cert,
            ssl_keyfile=pki.server.key,
        )
    assert "PRIVATE KEY" not in str(caught.value)


def test_the_libraries_get_the_same_settings(pki: Pki, password_file: Path) -> None:
    """kafka-python, aiokafka and Faust (which hands its credentials to aiokafka) agree."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    settings = KafkaSecurity.load(**SASL, ssl_cafile=pki.ca, sasl_password_file=password_file)
    tools = settings.kafka_python()
    worker = settings.aiokafka()
    faust = credentials_to_aiokafka_auth(settings.faust_credentials())
    for config in (tools, worker, faust):
        assert config["security_protocol"] == "SASL_SSL"
        assert config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert config["sasl_plain_username"] == "svc-crisiswatch"
        assert config["sasl_plain_password"] == KAFKA_PASSWORD
        assert isinstance(config["ssl_context"], ssl.SSLContext)
        assert config["ssl_context"].check_hostname is True
    tls = KafkaSecurity.load(security_protocol="SSL", ssl_cafile=pki.ca)
    faust_tls = credentials_to_aiokafka_auth(tls.faust_credentials())
    assert faust_tls["security_protocol"] == tls.aiokafka()["security_protocol"] == "SSL"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_aiokafka_accepts_every_supported_combination(
    mechanism: str, protocol: str, password_file: Path, pki: Pki
) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    settings = KafkaSecurity.load(
        security_protocol=protocol,
        ssl_cafile=pki.ca if protocol == "SASL_SSL" else None,
        sasl_mechanism=mechanism,
        sasl_username="svc",
        sasl_password_file=password_file,
    )

    async def build() -> None:  # aiokafka checks its arguments when built (no connection)
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", **settings.aiokafka())
        await producer.stop()

    asyncio.run(build())


def test_child_process_options_carry_paths_not_the_password(pki: Pki, password_file: Path) -> None:
    settings = KafkaSecurity.load(**SASL, ssl_cafile=pki.ca, sasl_password_file=password_file)
    argv = settings.options()
    assert KAFKA_PASSWORD not in " ".join(argv)
    pairs = dict(zip(argv[::2], argv[1::2], strict=True))
    again = KafkaSecurity.load(
        **{k.removeprefix("--kafka-").replace("-", "_"): v for k, v in pairs.items()}
    )
    assert again == settings
    assert again.sasl_password == settings.sasl_password


# -- the SCRAM exchange of `diagnose`, against a SCRAM server written from RFC 5802 ---------------


class SaslServer:
    """Speaks ApiVersions (any answer), SaslHandshake v1 and SaslAuthenticate v0 on loopback,
    checking PLAIN or SCRAM credentials of one user; one connection at a time."""

    def __init__(self, mechanism: str, user: str, password: str) -> None:
        self.mechanism, self.user, self.password = mechanism, user, password
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError, struct.error, ValueError):
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        scram: dict[str, bytes] = {}
        while True:
            header = _recv(conn, 4)
            body = _recv(conn, struct.unpack(">i", header)[0])
            api_key, _, correlation, id_size = struct.unpack_from(">hhih", body)
            request = body[10 + id_size :]
            if api_key == 18:
                answer = struct.pack(">hi", 0, 0)
            elif api_key == 17:
                (size,) = struct.unpack_from(">h", request)
                asked = request[2 : 2 + size].decode()
                error = 0 if asked == self.mechanism else 33
                name = self.mechanism.encode()
                answer = struct.pack(">hih", error, 1, len(name)) + name
            else:
                (size,) = struct.unpack_from(">i", request)
                ok, reply = self._step(request[4 : 4 + size], scram)
                answer = struct.pack(">hh", 0 if ok else 58, -1)
                answer += struct.pack(">i", len(reply)) + reply
            frame = struct.pack(">i", correlation) + answer
            conn.sendall(struct.pack(">i", len(frame)) + frame)

    def _step(self, token: bytes, state: dict[str, bytes]) -> tuple[bool, bytes]:
        if self.mechanism == "PLAIN":
            _, user, password = token.split(b"\0")
            return user.decode() == self.user and password.decode() == self.password, b""
        digest = hashlib.sha256 if self.mechanism == "SCRAM-SHA-256" else hashlib.sha512
        if "first" not in state:
            bare = token.split(b",", 2)[2]
            fields = dict(p.split(b"=", 1) for p in bare.split(b","))
            if fields[b"n"].decode() != self.user:
                return True, b"e=unknown-user"  # as Tansu answers (then no verifier)
            salt = os.urandom(16)
            nonce = fields[b"r"] + base64.b64encode(os.urandom(12))
            first = b"r=" + nonce + b",s=" + base64.b64encode(salt) + b",i=4096"
            state.update(bare=bare, first=first, salt=salt, nonce=nonce)
            return True, first
        final_bare, _, proof = token.rpartition(b",p=")
        salted = hashlib.pbkdf2_hmac(digest().name, self.password.encode(), state["salt"], 4096)
        message = state["bare"] + b"," + state["first"] + b"," + final_bare
        client_key = hmac.new(salted, b"Client Key", digest).digest()
        signature = hmac.new(digest(client_key).digest(), message, digest).digest()
        given = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if digest(given).digest() != digest(client_key).digest():
            return False, b"e=invalid-proof"
        server_key = hmac.new(salted, b"Server Key", digest).digest()
        verifier = hmac.new(server_key, message, digest).digest()
        return True, b"v=" + base64.b64encode(verifier)


def _recv(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


@pytest.fixture(params=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def sasl_server(request: pytest.FixtureRequest) -> Iterator[SaslServer]:
    server = SaslServer(request.param, "svc", KAFKA_PASSWORD)
    yield server
    server.close()


def settings_for(server: SaslServer, user: str, password_file: Path) -> KafkaSecurity:
    return KafkaSecurity.load(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=server.mechanism,
        sasl_username=user,
        sasl_password_file=password_file,
    )


def test_sasl_exchange_accepted_with_the_right_password(
    sasl_server: SaslServer, password_file: Path
) -> None:
    assert diagnose(sasl_server.address, settings_for(sasl_server, "svc", password_file)) is None


def test_sasl_exchange_refused_with_a_wrong_password_or_user(
    sasl_server: SaslServer, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    for user, secret in (("svc", wrong), ("nobody", wrong)):
        cause = diagnose(sasl_server.address, settings_for(sasl_server, user, secret))
        assert cause == (
            f"Kafka broker {sasl_server.address}: SASL {sasl_server.mechanism} credentials "
            f"of user {user!r} refused"
        )
