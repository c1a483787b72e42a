"""Real secure endpoints for the tests: a test PKI, Tansu behind a TLS-terminating socat, and
Tansu with SASL authentication.

* `Pki` makes a CA, server certificates for 127.0.0.1 (valid, expired, for another host,
  signed by another CA) and a client certificate, with the `cryptography` package, in a
  directory. Keys are unencrypted PEM: their text is what the leak checks grep for.
* `TlsBroker` runs Tansu on a loopback port, advertising the port of a `socat openssl-listen`
  in front of it, so every connection a client makes (bootstrap and the advertised broker)
  goes through TLS. `verify=1` with the CA makes it mutual TLS.
* `SaslBroker` runs Tansu with `--authentication`.

Every process is on a free port and stopped (and reaped) when its context ends.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consumers.local.embedded import free_port, reap, tansu_binary

LOOPBACK = "127.0.0.1"


# -- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class Pki:
    """A CA and the certificates the secure tests need, as PEM files in `directory`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._now = dt.datetime.now(dt.UTC)
        self.ca, self._ca_key, self._ca_name = self._authority("crisiswatch test CA", "ca")
        self.other_ca, self._other_key, self._other_name = self._authority("another CA", "other-ca")
        ip = [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
        self.server = self._leaf("server", ip, server=True)
        self.expired = self._leaf(
            "expired", ip, server=True, not_after=self._now - dt.timedelta(days=1)
        )
        self.wrong_host = self._leaf(
            "wrong-host", [x509.DNSName("broker.elsewhere.example")], server=True
        )
        self.untrusted = self._leaf("untrusted", ip, server=True, other=True)
        self.client = self._leaf("client", [x509.DNSName("crisiswatch-worker")], server=False)
        self.client_untrusted = self._leaf(
            "client-untrusted", [x509.DNSName("crisiswatch-worker")], server=False, other=True
        )

    def _authority(
        self, name: str, stem: str
    ) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Name]:
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - dt.timedelta(days=2))
            .not_valid_after(self._now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        path = self.directory / f"{stem}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, self.directory / f"{stem}.key")
        return path, key, subject

    def _leaf(
        self,
        stem: str,
        names: list[x509.GeneralName],
        *,
        server: bool,
        other: bool = False,
        not_after: dt.datetime | None = None,
    ) -> Pair:
        key = _key()
        issuer_key = self._other_key if other else self._ca_key
        issuer = self._other_name if other else self._ca_name
        end = not_after or self._now + dt.timedelta(days=7)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(end, self._now) - dt.timedelta(days=2))
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
            .sign(issuer_key, hashes.SHA256())
        )
        pair = Pair(self.directory / f"{stem}.pem", self.directory / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair

    def private_keys(self) -> list[str]:
        """The base64 body lines of every private key made here (what a leak would show)."""
        lines: list[str] = []
        for path in sorted(self.directory.glob("*.key")):
            lines += [
                line
                for line in path.read_text().splitlines()
                if line and not line.startswith("-----")
            ]
        return lines


# -- processes ---------------------------------------------------------------------------------


def _wait_tcp(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not listening on {port} within {timeout:g} s")


def _tansu(listen: int, advertise: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                f"tcp://{LOOPBACK}:{listen}",
                "--advertised-listener-url",
                f"tcp://{LOOPBACK}:{advertise}",
                "--storage-engine",
                "memory://tansu/",
                *extra,
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_tcp(listen, process, "Tansu")
    return process


def socat() -> str:
    found = shutil.which("socat")
    if found is None:
        pytest.fail("socat is required for the TLS tests (apt-get install socat)")
    return found


@contextlib.contextmanager
def tls_proxy(
    target: int, pair: Pair, log: Path, *, port: int | None = None, client_ca: Path | None = None
) -> Iterator[int]:
    """`socat openssl-listen` on a free loopback port (or `port`) in front of `target`,
    serving `pair`; verifying client certificates against `client_ca` when given."""
    listen = port if port is not None else free_port()
    verify = f"verify=1,cafile={client_ca}" if client_ca is not None else "verify=0"
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [
                socat(),
                "-d",
                f"OPENSSL-LISTEN:{listen},bind={LOOPBACK},reuseaddr,fork,"
                f"cert={pair.cert},key={pair.key},{verify}",
                f"TCP:{LOOPBACK}:{target}",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_tcp(listen, process, "socat")
        yield listen
    finally:
        reap(process, 5.0)


@dataclass
class Brokers:
    """The addresses of one Tansu: `plain` (its own port) and `tls` (through socat)."""

    plain: str
    tls: str
    tls_port: int


@contextlib.contextmanager
def tls_broker(
    directory: Path, pair: Pair, *, client_ca: Path | None = None, sasl: bool = False
) -> Iterator[Brokers]:
    """Tansu advertising the port of a TLS proxy in front of it (module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    proxy = free_port()
    tansu_port = free_port()
    extra = ("--authentication",) if sasl else ()
    process = _tansu(tansu_port, proxy, directory / "tansu.log", *extra)
    try:
        with tls_proxy(
            tansu_port, pair, directory / "socat.log", port=proxy, client_ca=client_ca
        ) as port:
            yield Brokers(f"{LOOPBACK}:{tansu_port}", f"{LOOPBACK}:{port}", port)
    finally:
        reap(process, 5.0)


@contextlib.contextmanager
def sasl_broker(directory: Path) -> Iterator[str]:
    """Tansu with `--authentication` on a free loopback port (plaintext)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = _tansu(port, port, directory / "tansu.log", "--authentication")
    try:
        yield f"{LOOPBACK}:{port}"
    finally:
        reap(process, 5.0)


# -- leaks -------------------------------------------------------------------------------------

#: The test passwords: distinctive, so a leak anywhere is found by a plain search.
KAFKA_PASSWORD = "kafka-pw-3c1f9a7e-must-never-show"
ALERTMANAGER_PASSWORD = "am-pw-82d4b0c6-must-never-show"


class Witness:
    """Everything a secure test saw come out of crisiswatch: command output, worker logs, DLQ
    headers, error messages. `check` fails on any password or private-key line in it."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, what: str, text: str | bytes) -> None:
        self.texts.append(
            (what, text.decode(errors="replace") if isinstance(text, bytes) else text)
        )

    def check(self, secrets: list[str]) -> int:
        """Assert that no secret occurs in anything seen; the number of texts searched."""
        for what, text in self.texts:
            for secret in secrets:
                assert secret not in text, f"a secret ({secret[:6]}...) leaked into {what}"
        return len(self.texts)
