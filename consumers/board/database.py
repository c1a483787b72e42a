"""A small pool of async psycopg connections for the board's reads.

The board only reads. A connection that fails is dropped, never reused; while the server
cannot be reached every read raises `DataUnavailableError`, which pages show as "data unavailable"
(and the feed keeps trying, so the board recovers by itself when PostgreSQL returns).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg

from consumers.store.connect import connect_options as store_connect_options
from streams.errors import ServiceUnavailableError

log = logging.getLogger(__name__)

APPLICATION_NAME: Final = "crisiswatch-board"
CONNECT_TIMEOUT_SECONDS: Final = 3
# A read that takes longer than this is abandoned (seconds): the page says data unavailable
# rather than hang.
QUERY_TIMEOUT_SECONDS: Final = 10.0

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


class DataUnavailableError(ServiceUnavailableError):
    """PostgreSQL could not answer a read."""


def connect_options(url: str) -> dict[str, Any]:
    """Keyword arguments of `psycopg.AsyncConnection.connect` for `url` (checked): the store's
    rules, with the board's own name and a shorter timeout (a page must not hang)."""
    return store_connect_options(
        url, application_name=APPLICATION_NAME, connect_timeout=CONNECT_TIMEOUT_SECONDS
    )


class Database:
    """At most `size` connections to `url`, opened on demand and kept while healthy."""

    def __init__(self, url: str, size: int = 4) -> None:
        self.url = url
        self._options = connect_options(url)
        self._idle: list[Connection] = []
        self._slots = asyncio.Semaphore(size)

    async def connect(self) -> Connection:
        """A new connection of the board's own (e.g. to LISTEN on), outside the pool."""
        try:
            return await psycopg.AsyncConnection.connect(self.url, **self._options)
        except psycopg.Error as exc:
            raise DataUnavailableError(f"PostgreSQL cannot be reached: {_first_line(exc)}") from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; psycopg errors and time-outs become `DataUnavailableError`."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self.connect()
            healthy = False
            try:
                async with asyncio.timeout(QUERY_TIMEOUT_SECONDS):
                    yield conn
                healthy = True
            except TimeoutError as exc:
                raise DataUnavailableError("PostgreSQL did not answer in time") from exc
            except psycopg.Error as exc:
                raise DataUnavailableError(f"PostgreSQL read failed: {_first_line(exc)}") from exc
            finally:
                if healthy and not conn.closed and not conn.broken:
                    self._idle.append(conn)
                else:
                    await _close(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)


async def _close(conn: Connection) -> None:
    try:
        await conn.close()
    except psycopg.Error:  # pragma: no cover - closing a broken connection
        log.debug("closing a broken connection failed", exc_info=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
