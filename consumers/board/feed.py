"""The change feed behind `GET /events`: what to push to which live page, and when.

When: the worker NOTIFYs channel `crisiswatch_clocks` in each batch transaction that writes
clocks (delivered on commit, once per transaction). The feed LISTENs on a connection of its
own and recomputes on each notification, and also every `tick` seconds with no notification,
because live state moves with the wall clock: a clock crossing 90 minutes must turn at risk on
an open page with no event arriving. Notifications are coalesced: at most one recomputation
per `min_interval`, however fast the worker commits. A new subscriber to a key already
followed gets that key's latest message (at most a tick old) rather than a build of its own.

What: subscribers are grouped by key (the viewer's regions and the page's region filter).
Each recomputation builds one message per key in use (so 50 pages of one scope cost one set
of queries) and pushes it only if it differs from the last one pushed for that key. A slow
client keeps only the latest message. The builder decides what an unavailable database looks
like; if LISTEN itself fails the feed retries, and the tick keeps pages current meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import psycopg

from consumers.board.database import Database, DataUnavailableError
from consumers.store import CLOCKS_CHANNEL as CHANNEL

log = logging.getLogger(__name__)

TICK_SECONDS: Final = 2.0  # recompute at least this often (time-driven state changes)
MIN_INTERVAL_SECONDS: Final = 1.0  # and at most this often (bursts of worker commits)
RETRY_SECONDS: Final = 2.0  # between attempts to re-LISTEN after losing the connection

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Message:
    """One Server-Sent Events message; `fingerprint` says whether anything changed."""

    fingerprint: str
    data: bytes


class Feed(Generic[K]):
    """Recompute on NOTIFY or tick; push changed messages to the subscribers of each key."""

    def __init__(
        self,
        database: Database,
        build: Callable[[K], Awaitable[Message]],
        *,
        tick: float = TICK_SECONDS,
        min_interval: float = MIN_INTERVAL_SECONDS,
    ) -> None:
        self._database = database
        self._build = build
        self._tick = tick
        self._min_interval = min_interval
        self._wake = asyncio.Event()
        self._subscribers: dict[K, set[asyncio.Queue[Message]]] = {}
        self._last: dict[K, str] = {}  # fingerprint of the last message pushed, per key
        self._latest: dict[K, Message] = {}  # the last message built, per key followed
        self._building: dict[K, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = False

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="board-listen"),
            asyncio.create_task(self._update(), name="board-update"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    @property
    def subscribers(self) -> int:
        return sum(len(queues) for queues in self._subscribers.values())

    @contextlib.asynccontextmanager
    async def subscribe(self, key: K) -> AsyncIterator[asyncio.Queue[Message]]:
        """A queue that gets the current message at once, then each change for `key`."""
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        queue.put_nowait(await self._current(key))
        self._subscribers.setdefault(key, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._subscribers.get(key)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[key]
                    self._last.pop(key, None)
                    self._latest.pop(key, None)

    async def _current(self, key: K) -> Message:
        """The latest message of a key already followed (at most a tick old, and refreshed
        on the next one); else one built now, once however many subscribe at the same time."""
        latest = self._latest.get(key)
        if latest is not None:
            return latest
        async with self._building.setdefault(key, asyncio.Lock()):
            latest = self._latest.get(key)
            if latest is None:
                latest = self._latest[key] = await self._build(key)
        return latest

    def notify(self) -> None:
        """Recompute soon (what a NOTIFY does)."""
        self._wake.set()

    async def _listen(self) -> None:
        while True:
            try:
                conn = await self._database.connect()
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    self._wake.set()  # anything committed while not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except (DataUnavailableError, psycopg.Error) as exc:
                log.warning("board: change feed lost (%s); retrying", exc)
            finally:
                self.listening = False
            await asyncio.sleep(RETRY_SECONDS)

    async def _update(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick):
                    await self._wake.wait()
            self._wake.clear()
            for key, queues in list(self._subscribers.items()):
                try:
                    message = await self._build(key)
                except Exception:
                    log.exception("board: building a live update failed")
                    continue
                if key in self._subscribers:
                    self._latest[key] = message
                if message.fingerprint == self._last.get(key):
                    continue
                self._last[key] = message.fingerprint
                for queue in list(queues):
                    _offer(queue, message)
            await asyncio.sleep(self._min_interval)


def _offer(queue: asyncio.Queue[Message], message: Message) -> None:
    """Latest wins: a subscriber that has not taken the previous message gets this instead."""
    with contextlib.suppress(asyncio.QueueEmpty):
        if queue.full():
            queue.get_nowait()
    queue.put_nowait(message)
