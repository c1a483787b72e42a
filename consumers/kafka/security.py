"""How every Kafka client of crisiswatch connects: TLS, mutual TLS and SASL (CONTRACT section 7).

One settings model, `KafkaSecurity`, and one place that turns it into client configuration, so
the worker (Faust and aiokafka) and the tools (kafka-python: `publish`, `simulate`, `topics`,
the demo) cannot drift apart:

* `ssl_context()` builds the one `ssl.SSLContext` both libraries get: the system's trust store,
  or only the PEM bundle of `ssl_cafile` when given; certificate *and* hostname verified
  (`check_hostname`, `CERT_REQUIRED`), TLS 1.2 at least; with `ssl_certfile`/`ssl_keyfile`, the
  client certificate of mutual TLS. Neither library's own certificate-file options
  (`ssl_cafile`, ...) are used: they differ between the two. kafka-python also gets
  `ssl_check_hostname=True`, which it checks besides the context.
* `kafka_python()`, `aiokafka()` and `faust_credentials()` are the keyword arguments (or the
  credentials object) of each library, all derived from the same fields.

The SASL password is only ever read from a file (`sasl_password_file`), once, when the settings
are built at the entry point; it is held as a `SecretStr` and handed to the client libraries as a
`str` whose `repr` is masked, so a library that logs its configuration (kafka-python's admin
client does, at DEBUG) or an exception that quotes it shows `'**********'`. Nothing here ever puts
the password in a message.

Bad settings (a protocol or mechanism that does not exist, a CA file that is not PEM, a key that
does not match its certificate, SASL without a username or password file) are
`ConfigurationError`, raised by `load` at the entry point: exit 2 before any connection is tried.
"""

from __future__ import annotations

import ssl
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Self

from pydantic import PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import ConfigurationError

__all__ = [
    "ENVIRONMENT",
    "KafkaSecurity",
    "Mechanism",
    "Protocol",
    "masked",
]


class Protocol(StrEnum):
    """Kafka's `security.protocol` values."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class Mechanism(StrEnum):
    """The SASL mechanisms crisiswatch supports (every managed Kafka offers one of them)."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


#: Field -> environment variable (also the options' `envvar`), for messages.
ENVIRONMENT: Final = {
    "security_protocol": "CRISISWATCH_KAFKA_SECURITY_PROTOCOL",
    "ssl_cafile": "CRISISWATCH_KAFKA_SSL_CAFILE",
    "ssl_certfile": "CRISISWATCH_KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "CRISISWATCH_KAFKA_SSL_KEYFILE",
    "sasl_mechanism": "CRISISWATCH_KAFKA_SASL_MECHANISM",
    "sasl_username": "CRISISWATCH_KAFKA_SASL_USERNAME",
    "sasl_password_file": "CRISISWATCH_KAFKA_SASL_PASSWORD_FILE",
}


class _MaskedStr(str):
    """A `str` whose `repr` (and so any dict or config dump that quotes it) hides the value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"


def masked(secret: SecretStr) -> str:
    """`secret`'s value as a `str` for a client library; its `repr` is masked."""
    return _MaskedStr(secret.get_secret_value())


class KafkaSecurity(BaseSettings):
    """TLS and SASL settings of the Kafka clients (CONTRACT section 7).

    Build it with `KafkaSecurity.load(...)` at the entry point (the options' values, each also
    read from its `CRISISWATCH_KAFKA_*` variable by click); `KafkaSecurity.plaintext()` is
    the default of every library call.
    """

    model_config = SettingsConfigDict(
        env_prefix="CRISISWATCH_KAFKA_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    security_protocol: Protocol = Protocol.PLAINTEXT
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    sasl_mechanism: Mechanism | None = None
    sasl_username: str | None = None
    sasl_password_file: Path | None = None
    #: Read from `sasl_password_file` by `load`; never from the environment or an option
    #: (a private attribute: pydantic-settings reads no variable for it).
    _sasl_password: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                f"{ENVIRONMENT['ssl_certfile']} and {ENVIRONMENT['ssl_keyfile']} go together "
                "(mutual TLS needs both)"
            )
        if self.sasl:
            if self.sasl_mechanism is None:
                raise ValueError(
                    f"{ENVIRONMENT['sasl_mechanism']} is required with {self.security_protocol}"
                )
            if not self.sasl_username:
                raise ValueError(
                    f"{ENVIRONMENT['sasl_username']} is required with {self.security_protocol}"
                )
            if self.sasl_password_file is None:
                raise ValueError(
                    f"{ENVIRONMENT['sasl_password_file']} is required with {self.security_protocol}"
                )
        elif self.sasl_mechanism is not None or self.sasl_username or self.sasl_password_file:
            raise ValueError(
                f"SASL settings given but {ENVIRONMENT['security_protocol']} is "
                f"{self.security_protocol} (use SASL_SSL or SASL_PLAINTEXT)"
            )
        if not self.tls and (self.ssl_cafile or self.ssl_certfile):
            raise ValueError(
                f"TLS files given but {ENVIRONMENT['security_protocol']} is "
                f"{self.security_protocol} (use SSL or SASL_SSL)"
            )
        return self

    @classmethod
    def plaintext(cls) -> KafkaSecurity:
        """PLAINTEXT, without reading the environment (the default of library calls)."""
        return cls.model_construct()

    @classmethod
    def load(cls, **values: Any) -> KafkaSecurity:
        """The settings from the options' `values` (None: not given), with the password read
        from its file; `ConfigurationError` (never quoting a value) when they do not fit."""
        given = {key: value for key, value in values.items() if value is not None}
        try:
            settings = cls(**given)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ()))
            name = ENVIRONMENT.get(where, where)
            message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
            raise ConfigurationError(f"{name}: {message}" if name else message) from None
        settings.ssl_context()  # the CA and client files load now, or exit 2 now
        if settings.sasl_password_file is None:
            return settings
        path = settings.sasl_password_file
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not readable UTF-8 text"
            raise ConfigurationError(
                f"{ENVIRONMENT['sasl_password_file']}: cannot read {path}: {reason}"
            ) from None
        # One trailing line end is the file's, not the password's (Kubernetes Secrets, echo).
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigurationError(f"{ENVIRONMENT['sasl_password_file']}: {path} is empty")
        settings._sasl_password = SecretStr(password)
        return settings

    # -- what it means ---------------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self.security_protocol in (Protocol.SSL, Protocol.SASL_SSL)

    @property
    def sasl(self) -> bool:
        return self.security_protocol in (Protocol.SASL_PLAINTEXT, Protocol.SASL_SSL)

    def describe(self) -> str:
        """`"SASL_SSL, SCRAM-SHA-512 as user 'svc'"`: safe for logs and messages."""
        text = str(self.security_protocol)
        if self.tls and self.ssl_certfile is not None:
            text += " with a client certificate"
        if self.sasl:
            text += f", {self.sasl_mechanism} as user {self.sasl_username!r}"
        return text

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every Kafka client (module docstring); None without TLS."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH,
                cafile=str(self.ssl_cafile) if self.ssl_cafile is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"{ENVIRONMENT['ssl_cafile']}: {self.ssl_cafile} is not a readable PEM bundle "
                f"({_reason(exc)})"
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    f"{ENVIRONMENT['ssl_certfile']} / {ENVIRONMENT['ssl_keyfile']}: cannot load "
                    f"the client certificate and key ({_reason(exc)})"
                ) from None
        return context

    @property
    def sasl_password(self) -> SecretStr | None:
        """The password read from `sasl_password_file` (None before `load` or without SASL)."""
        return self._sasl_password

    def _password(self) -> str | None:
        return masked(self._sasl_password) if self._sasl_password is not None else None

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's clients (`KafkaAdminClient`, `KafkaProducer`)."""
        config: dict[str, Any] = {"security_protocol": str(self.security_protocol)}
        if self.tls:
            config["ssl_context"] = self.ssl_context()
            config["ssl_check_hostname"] = True
        if self.sasl:
            config["sasl_mechanism"] = str(self.sasl_mechanism)
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = self._password()
        return config

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's clients (`AIOKafkaProducer`, `AIOKafkaClient`)."""
        config: dict[str, Any] = {"security_protocol": str(self.security_protocol)}
        if self.tls:
            config["ssl_context"] = self.ssl_context()
        if self.sasl:
            config["sasl_mechanism"] = str(self.sasl_mechanism)
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = self._password()
        return config

    def faust_credentials(self) -> Any:
        """Faust's `broker_credentials` (None for PLAINTEXT); Faust hands them to aiokafka."""
        import faust

        context = self.ssl_context()
        if self.sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self._password(),
                ssl_context=context,
                mechanism=str(self.sasl_mechanism),
            )
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def options(self) -> list[str]:
        """Command-line options that give a child `crisiswatch` process these settings (file
        paths only: the password stays in its file)."""
        argv = ["--kafka-security-protocol", str(self.security_protocol)]
        for flag, value in (
            ("--kafka-ssl-cafile", self.ssl_cafile),
            ("--kafka-ssl-certfile", self.ssl_certfile),
            ("--kafka-ssl-keyfile", self.ssl_keyfile),
            ("--kafka-sasl-mechanism", self.sasl_mechanism),
            ("--kafka-sasl-username", self.sasl_username),
            ("--kafka-sasl-password-file", self.sasl_password_file),
        ):
            if value is not None:
                argv += [flag, str(value)]
        return argv


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return getattr(exc, "strerror", None) or type(exc).__name__
