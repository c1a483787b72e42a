"""Connections to PostgreSQL and what their errors mean.

Every connection is autocommit, with a connect timeout and an application name unless the URL
sets them. psycopg errors are wrapped `from exc`: `ServiceUnavailableError` when the server
cannot be reached or the connection is lost, `ServiceError` otherwise; `is_transient(exc)`
says whether a retry may succeed. Messages name `user@host:port/dbname` and never a password.
"""

from __future__ import annotations

import re
import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from streams.errors import ConfigurationError, ServiceError, ServiceUnavailableError

__all__ = [
    "blocking_session",
    "check_url",
    "connect_async",
    "connect_options",
    "connect_sync",
    "is_transient",
    "unusable",
    "with_database",
    "wrap_error",
    "wrapped",
]

# Seconds libpq waits for a connection before giving up, unless the URL says otherwise.
CONNECT_TIMEOUT_SECONDS: Final = 10
APPLICATION_NAME: Final = "crisiswatch"

AsyncConnection = psycopg.AsyncConnection[tuple[Any, ...]]


def check_url(url: str, name: str = "--database-url / CRISISWATCH_DATABASE_URL") -> None:
    """`ConfigurationError` if `url` is not a libpq URL or DSN (the message never quotes it:
    it may hold a password)."""
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigurationError(f"{name} cannot be parsed as a libpq URL or DSN") from exc


def with_database(url: str, dbname: str) -> str:
    """`url` (a libpq URL or DSN) with its database replaced by `dbname`."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**{key: str(value) for key, value in params.items()})


@contextmanager
def blocking_session(url: str, what: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A blocking connection for one-shot tools (exports), closed after; errors wrapped.

    Autocommit, like every connection here: open a transaction explicitly (`conn.transaction()`,
    with `conn.isolation_level` / `conn.read_only` set first for a consistent read-only view).
    """
    with connect_sync(url) as conn, wrapped(what):
        yield conn


# SQLSTATEs worth a retry: the same statement may succeed on a fresh attempt or connection.
_TRANSIENT_CLASSES: Final = frozenset(
    {
        "08",  # connection exception
        "40",  # transaction rollback: serialization failure, deadlock, completion unknown
        "53",  # insufficient resources: too many connections, out of memory
        "57",  # operator intervention: admin/crash shutdown, cannot connect now, cancel
        "58",  # system error (I/O) outside PostgreSQL
    }
)
_TRANSIENT_STATES: Final = frozenset({"55P03"})  # lock_not_available (lock_timeout)


def is_transient(exc: BaseException) -> bool:
    """True if retrying the operation (on a new connection) may succeed.

    Transient: connection refused or lost, server shutting down or starting, too many
    connections, serialization failure, deadlock, lock or statement timeout. Permanent:
    everything else (bad SQL, constraint violations, permissions, bad data). Accepts the
    `ServiceError`s this module raises (judged by their psycopg cause) and raw psycopg errors.
    """
    if isinstance(exc, ServiceUnavailableError):
        return True
    seen = 0
    while isinstance(exc, ServiceError) and exc.__cause__ is not None and seen < 5:
        exc, seen = exc.__cause__, seen + 1
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            # No server verdict: the client lost the connection (or never had one).
            return isinstance(exc, psycopg.OperationalError)
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    return isinstance(exc, ConnectionError | TimeoutError)


def unusable(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection must be replaced before use: closed, broken, or the server
    spoke on it, which it only does to end it (a restart or an administrator's termination,
    then EOF). Checked before each use (one `select` with no wait), so the first statement
    after PostgreSQL comes back does not fail on the old connection: it reconnects at once,
    instead of through a retry with backoff."""
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


def connect_options(
    url: str,
    *,
    application_name: str = APPLICATION_NAME,
    connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """Keyword arguments of psycopg's `connect` for `url`: autocommit, and a connect timeout
    and application name unless the URL sets them. `ConfigurationError` for a URL libpq
    cannot parse (the message never holds a password)."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(
            f"invalid PostgreSQL URL: {_redact(_first_line(str(exc)), url)}"
        ) from exc
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in given:
        options["connect_timeout"] = connect_timeout
    if "application_name" not in given:
        options["application_name"] = application_name
    return options


async def connect_async(url: str) -> AsyncConnection:
    options = connect_options(url)
    try:
        conn = await psycopg.AsyncConnection.connect(url, **options)
    except psycopg.Error as exc:
        raise _unreachable(exc, url) from exc
    return conn


def connect_sync(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    options = connect_options(url)
    try:
        return psycopg.connect(url, **options)
    except psycopg.Error as exc:
        raise _unreachable(exc, url) from exc


def _unreachable(exc: psycopg.Error, url: str) -> ServiceError:
    detail = _redact(_first_line(str(exc)).removeprefix("connection failed: "), url)
    return ServiceUnavailableError(f"cannot connect to PostgreSQL at {_where(url)}: {detail}")


def wrap_error(exc: psycopg.Error, what: str) -> ServiceError:
    detail = _first_line(str(exc)) or type(exc).__name__
    state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
    message = f"PostgreSQL error {what}: {detail}{state}"
    if exc.sqlstate is None and isinstance(exc, psycopg.OperationalError):
        return ServiceUnavailableError(message)
    if exc.sqlstate is not None and (exc.sqlstate[:2] == "08" or exc.sqlstate[:3] == "57P"):
        return ServiceUnavailableError(message)  # connection lost, server shutting down
    return ServiceError(message)


@contextmanager
def wrapped(what: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise wrap_error(exc, what) from exc


def _where(url: str) -> str:
    """user@host:port/dbname of a connection string, never its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable URL)"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    user = f"{params['user']}@" if params.get("user") else ""
    dbname = params.get("dbname") or ""
    return f"{user}{host}:{port}/{dbname}"


def _redact(text: str, url: str) -> str:
    """Remove any password of `url` (and anything password-like) from a message."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        text = text.replace(str(password), "***")
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.IGNORECASE)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""
