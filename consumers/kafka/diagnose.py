"""Why a Kafka client could not connect: one line naming the broker and the cause.

When kafka-python or aiokafka cannot bootstrap, what they report is a timeout ("Unable to
bootstrap from ..."), whatever happened underneath: a certificate that did not verify, a TLS
client talking to a plaintext port, credentials the broker refused. So after a failure,
`diagnose` retraces the first steps of a connection to each bootstrap server by itself, with the
same `ssl.SSLContext` the clients use (`KafkaSecurity.ssl_context`) and just enough of the Kafka
protocol to see where it breaks:

1. TCP connect (refused, unreachable, timeout);
2. with TLS, the handshake: a certificate that does not verify says why (`verify_message`:
   an unknown CA, an expired certificate, another hostname), a plaintext port answers with no
   TLS at all; mutual TLS refused by the broker shows as an alert;
3. without TLS, an ApiVersions request: a TLS listener answers with a TLS alert or closes;
4. with SASL, SaslHandshake (is the mechanism offered?) and SaslAuthenticate: PLAIN in one
   step; SCRAM-SHA-256/512 through the RFC 5802 exchange (the client's proof, and the server's
   signature checked). A refusal names the mechanism and the user, never the password.

`preflight` runs the same steps *before* a TLS or SASL client starts, and raises what it finds.

Only the Kafka protocol's framing and these three requests are spoken (request header v1,
ApiVersions v0, SaslHandshake v1, SaslAuthenticate v0). Nothing here raises: `diagnose` returns
the first problem it finds, or None when every step worked (the failure lies elsewhere).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Final

from consumers.kafka.security import KafkaSecurity, Mechanism
from streams.errors import ServiceError, ServiceUnavailableError

__all__ = ["connection_error", "diagnose", "preflight"]

#: Kafka API keys and error code used here.
_API_VERSIONS: Final = 18
_SASL_HANDSHAKE: Final = 17
_SASL_AUTHENTICATE: Final = 36
_CLIENT_ID: Final = b"crisiswatch-diagnose"
#: Largest answer read, in bytes (an ApiVersions answer is a few hundred).
_MAX_FRAME: Final = 1 << 20


class _RefusedError(Exception):
    """One step failed; the message is the cause (no broker name: the caller adds it)."""


class _UnreachableError(_RefusedError):
    """No TCP connection at all."""


def diagnose(bootstrap: str, security: KafkaSecurity, timeout_s: float = 5.0) -> str | None:
    """The cause of a failed connection to `bootstrap` as `"Kafka broker HOST:PORT: cause"`,
    or None if every bootstrap server completed the steps (module docstring)."""
    found = _diagnosis(bootstrap, security, timeout_s)
    return None if found is None else f"Kafka broker {found[1]}: {found[2]}"


def connection_error(
    bootstrap: str, security: KafkaSecurity | None, waited_s: float
) -> ServiceError:
    """The error to raise after a client failed to bootstrap from `bootstrap` within
    `waited_s`: the diagnosed cause (`ServiceError`), else `ServiceUnavailableError`."""
    settings = security or KafkaSecurity.plaintext()
    found = _diagnosis(bootstrap, settings, 5.0)
    if found is None or not found[0]:
        detail = f" ({found[2]})" if found is not None else ""
        return ServiceUnavailableError(
            f"cannot reach Kafka at {bootstrap}: no broker answered within {waited_s:g} s{detail}"
        )
    return ServiceError(f"Kafka broker {found[1]}: {found[2]}")


def preflight(bootstrap: str, security: KafkaSecurity, timeout_s: float = 5.0) -> None:
    """Before a client starts: raise the diagnosed error if no bootstrap server completes the
    TLS and SASL steps. Only for TLS or SASL (a PLAINTEXT client reports its own failures):
    kafka-python does not time out a TLS handshake that never completes (a TLS client on a
    plaintext port), so the cause must be found before it is asked to connect."""
    if security.security_protocol == "PLAINTEXT":
        return
    found = _diagnosis(bootstrap, security, timeout_s)
    if found is None:
        return
    reachable, server, cause = found
    if not reachable:
        raise ServiceUnavailableError(f"cannot reach Kafka at {bootstrap}: {server}: {cause}")
    raise ServiceError(f"Kafka broker {server}: {cause}")


def _diagnosis(
    bootstrap: str, security: KafkaSecurity, timeout_s: float
) -> tuple[bool, str, str] | None:
    """(whether TCP connected, server, cause) of the first server's failure; None if one
    server completed every step."""
    failures: list[tuple[bool, str, str]] = []
    for server in (part.strip() for part in bootstrap.split(",")):
        host, _, port = server.rpartition(":")
        try:
            _probe(host.strip("[]"), int(port), security, timeout_s)
        except _UnreachableError as exc:
            failures.append((False, server, str(exc)))
        except _RefusedError as exc:
            failures.append((True, server, str(exc)))
        except ValueError:
            failures.append((False, server, "not HOST:PORT"))
        else:
            return None  # one server works: the client's failure is not a connection problem
    return failures[0] if failures else None


def _probe(host: str, port: int, security: KafkaSecurity, timeout_s: float) -> None:
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except TimeoutError:
        raise _UnreachableError(f"no TCP connection within {timeout_s:g} s") from None
    except OSError as exc:
        raise _UnreachableError(f"cannot connect ({exc.strerror or type(exc).__name__})") from None
    with contextlib.ExitStack() as stack:
        sock: socket.socket = stack.enter_context(raw)
        if security.tls:
            context = security.ssl_context()
            assert context is not None  # tls implies a context
            sock = stack.enter_context(_handshake(context, raw, host, timeout_s))
        else:
            _check_plaintext_kafka(sock)
        if security.sasl:
            _authenticate(sock, security)


def _handshake(
    context: ssl.SSLContext, raw: socket.socket, host: str, timeout_s: float
) -> ssl.SSLSocket:
    try:
        tls = context.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise _RefusedError(
            f"TLS certificate not accepted: {(exc.verify_message or exc.reason).rstrip('.')} "
            "(check CRISISWATCH_KAFKA_SSL_CAFILE and the broker's certificate)"
        ) from None
    except ssl.SSLError as exc:
        reason = exc.reason or type(exc).__name__
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            raise _RefusedError(
                "the port does not speak TLS (a plaintext listener? check "
                "CRISISWATCH_KAFKA_SECURITY_PROTOCOL)"
            ) from None
        if "CERTIFICATE" in reason or "ALERT" in reason:
            raise _RefusedError(
                f"the broker refused the TLS connection ({reason.replace('_', ' ').lower()}; "
                "does it want a client certificate? see CRISISWATCH_KAFKA_SSL_CERTFILE)"
            ) from None
        raise _RefusedError(f"TLS handshake failed ({reason.replace('_', ' ').lower()})") from None
    except TimeoutError:
        raise _RefusedError(
            f"no TLS handshake within {timeout_s:g} s (a plaintext listener? check "
            "CRISISWATCH_KAFKA_SECURITY_PROTOCOL)"
        ) from None
    except OSError as exc:
        raise _RefusedError(
            f"the connection closed during the TLS handshake ({exc.strerror or 'EOF'}; a "
            "plaintext listener, or a client certificate refused?)"
        ) from None
    # TLS 1.3 sends a refusal of the client's certificate after the handshake: a first
    # request brings it out.
    try:
        _request(tls, _API_VERSIONS, 0, b"")
    except _RefusedError as exc:
        raise _RefusedError(
            f"{exc} (after the TLS handshake: a client certificate refused?)"
        ) from None
    return tls


def _check_plaintext_kafka(sock: socket.socket) -> None:
    try:
        _request(sock, _API_VERSIONS, 0, b"")
    except _RefusedError as exc:
        raise _RefusedError(
            f"{exc}: not a plaintext Kafka listener (a TLS port? check "
            "CRISISWATCH_KAFKA_SECURITY_PROTOCOL)"
        ) from None


def _authenticate(sock: socket.socket, security: KafkaSecurity) -> None:
    mechanism = security.sasl_mechanism
    user = security.sasl_username or ""
    password = security.sasl_password
    assert mechanism is not None  # validated settings
    assert password is not None
    try:
        body = _request(sock, _SASL_HANDSHAKE, 1, _string(str(mechanism)))
    except _RefusedError as exc:
        raise _RefusedError(f"SASL handshake for {mechanism} failed: {exc}") from None
    (error,) = struct.unpack_from(">h", body)
    if error:
        offered = [name for name in _strings(body, 2) if name != mechanism]
        raise _RefusedError(
            f"the broker does not accept SASL {mechanism}"
            + (f" (it offers {', '.join(offered)})" if offered else "")
        )
    refused = f"SASL {mechanism} credentials of user {user!r} refused"
    secret = password.get_secret_value()
    if mechanism is Mechanism.PLAIN:
        _sasl_step(sock, b"\0" + user.encode() + b"\0" + secret.encode(), refused)
        return
    _scram(sock, mechanism, user, secret, refused)


def _scram(sock: socket.socket, mechanism: Mechanism, user: str, secret: str, refused: str) -> None:
    """The client side of RFC 5802 (no channel binding), as Kafka's SCRAM mechanisms use it."""
    digest: Callable[..., hashlib._Hash] = (
        hashlib.sha256 if mechanism is Mechanism.SCRAM_SHA_256 else hashlib.sha512
    )
    name = user.replace("=", "=3D").replace(",", "=2C")
    nonce = secrets.token_urlsafe(24)
    first_bare = f"n={name},r={nonce}"
    server_first = _sasl_step(sock, f"n,,{first_bare}".encode(), refused).decode()
    fields = _scram_fields(server_first)
    if "e" in fields or not fields.get("r", "").startswith(nonce):
        raise _RefusedError(refused)
    try:
        salt = base64.b64decode(fields["s"])
        iterations = int(fields["i"])
    except (KeyError, ValueError):
        raise _RefusedError(f"SASL {mechanism}: the broker's first message is malformed") from None
    salted = hashlib.pbkdf2_hmac(digest().name, secret.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = digest(client_key).digest()
    final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
    server_final = _scram_fields(_sasl_step(sock, final, refused).decode())
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    expected = hmac.new(server_key, auth_message, digest).digest()
    verifier = server_final.get("v")
    if verifier is None or not hmac.compare_digest(base64.b64decode(verifier), expected):
        raise _RefusedError(refused)


def _scram_fields(message: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.split(",") if "=" in part)


def _sasl_step(sock: socket.socket, token: bytes, refused: str) -> bytes:
    body = _request(sock, _SASL_AUTHENTICATE, 0, struct.pack(">i", len(token)) + token)
    (error,) = struct.unpack_from(">h", body)
    if error:
        raise _RefusedError(refused)
    _, offset = _nullable_string(body, 2)
    (size,) = struct.unpack_from(">i", body, offset)
    return body[offset + 4 : offset + 4 + max(size, 0)]


_correlation = 0


def _request(sock: socket.socket, api_key: int, version: int, body: bytes) -> bytes:
    """Send one request (header v1) and return its response body (after the correlation id)."""
    global _correlation  # noqa: PLW0603 - one diagnosing connection at a time
    _correlation += 1
    header = struct.pack(">hhih", api_key, version, _correlation, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    try:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        prefix = _read(sock, 4)
        if prefix[:1] in (b"\x15", b"\x16"):
            raise _RefusedError("the broker answered with TLS")
        (size,) = struct.unpack(">i", prefix)
        if not 4 <= size <= _MAX_FRAME:
            raise _RefusedError("the broker's answer is not a Kafka response")
        answer = _read(sock, size)
    except TimeoutError:
        raise _RefusedError("no answer to a Kafka request") from None
    except ssl.SSLError as exc:
        raise _RefusedError(
            f"the broker ended TLS ({(exc.reason or 'error').replace('_', ' ').lower()})"
        ) from None
    except OSError as exc:
        raise _RefusedError(f"the connection closed ({exc.strerror or 'EOF'})") from None
    return answer[4:]


def _read(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise _RefusedError("the broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def _nullable_string(body: bytes, offset: int) -> tuple[str | None, int]:
    (size,) = struct.unpack_from(">h", body, offset)
    if size < 0:
        return None, offset + 2
    return body[offset + 2 : offset + 2 + size].decode(errors="replace"), offset + 2 + size


def _strings(body: bytes, offset: int) -> list[str]:
    with contextlib.suppress(struct.error):
        (count,) = struct.unpack_from(">i", body, offset)
        offset += 4
        found = []
        for _ in range(max(count, 0)):
            value, offset = _nullable_string(body, offset)
            if value is not None:
                found.append(value)
        return found
    return []
