"""The board's aiohttp application: routes, access checks, and answers for bad input.

aiohttp is already in the dependency tree (Faust runs on it); it is a maintained asyncio
framework with streaming responses, which is all Server-Sent Events need. Every answer is
computed at the wall-clock instant of the request. Refusals and failures get a clear status
and message: 400 malformed header, 401/403 from the proxy's headers, 404 unknown region,
503 "data unavailable" while PostgreSQL cannot answer; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from consumers.board.auth import (
    GROUPS_HEADER,
    USER_HEADER,
    AccessError,
    AuthMode,
    Viewer,
    viewer,
)
from consumers.board.database import Database, DataUnavailableError
from consumers.board.feed import Feed, Message
from consumers.board.query import UNKNOWN_REGION, Board, Queries, region_names
from consumers.board.view import View
from streams.engine import Rules, format_instant

log = logging.getLogger(__name__)

STATIC: Final = Path(__file__).parent / "static"
# Where `npm ci` (scripts/bootstrap) puts the NHS.UK frontend's compiled CSS and images.
DEFAULT_ASSETS: Final = (
    Path(__file__).parent / "web" / "node_modules" / "nhsuk-frontend" / "dist" / "nhsuk"
)
ASSETS_CSS: Final = "nhsuk-frontend.min.css"
HEARTBEAT_SECONDS: Final = 15.0  # an SSE comment this often keeps proxies from timing out

FeedKey = tuple[frozenset[str] | None, str | None]  # (viewer's regions, region filter)

_QUERIES: Final = web.AppKey("queries", Queries)
_VIEW: Final = web.AppKey("view", View)
_FEED: Final = web.AppKey("feed", Feed[FeedKey])


@dataclass(frozen=True, slots=True)
class BoardSettings:
    database_url: str
    auth: AuthMode
    rules: Rules
    assets: Path | None  # the nhsuk-frontend `dist/nhsuk` folder; None: serve unstyled


_SETTINGS: Final = web.AppKey("settings", BoardSettings)


def find_assets(explicit: Path | None) -> Path | None:
    """The NHS.UK frontend folder, or None (logged: the board still works, unstyled)."""
    folder = explicit if explicit is not None else DEFAULT_ASSETS
    if (folder / ASSETS_CSS).is_file():
        return folder
    log.warning(
        "board: NHS.UK frontend assets not found in %s (run scripts/bootstrap, or set "
        "CRISISWATCH_BOARD_ASSETS); serving the board unstyled",
        folder,
    )
    return None


def create_app(settings: BoardSettings) -> web.Application:
    app = web.Application(middlewares=[_errors])
    database = Database(settings.database_url)
    queries = Queries(database, settings.rules)
    view = View(settings.rules, assets=settings.assets is not None)

    async def build(key: FeedKey) -> Message:
        regions, region = key
        return await _live_message(queries, view, Viewer("feed", regions), region)

    feed: Feed[FeedKey] = Feed(database, build)
    app[_QUERIES] = queries
    app[_VIEW] = view
    app[_FEED] = feed
    app[_SETTINGS] = settings

    async def lifecycle(app: web.Application) -> Any:
        await feed.start()
        yield
        await feed.stop()
        await database.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", page)
    app.router.add_get("/api/summary", api_summary)
    app.router.add_get("/api/worklist", api_worklist)
    app.router.add_get("/events", events)
    app.router.add_get("/health", health)
    app.router.add_get("/static/board.js", _file(STATIC / "board.js"))
    app.router.add_get("/static/board.css", _file(STATIC / "board.css"))
    if settings.assets is not None:
        app.router.add_get("/static/" + ASSETS_CSS, _file(settings.assets / ASSETS_CSS))
        # The frontend's CSS refers to its images as /assets/images/...
        app.router.add_static("/assets", settings.assets / "assets")
    return app


def _file(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    return handler


# -- requests ------------------------------------------------------------------------------------


def _viewer(request: web.Request) -> Viewer:
    return viewer(
        request.app[_SETTINGS].auth,
        request.headers.getall(USER_HEADER, []),
        request.headers.getall(GROUPS_HEADER, []),
        frozenset(region_names()),
    )


def _region(request: web.Request, who: Viewer) -> str | None:
    """The `region` query parameter: None for all the viewer may see; 404/403 if not theirs."""
    given = request.query.getall("region", [])
    if len(given) > 1:
        raise AccessError(400, "give at most one region")
    code = given[0].strip() if given else ""
    if not code:
        return None
    known = [*region_names(), UNKNOWN_REGION]
    if code not in known:
        shown = code if len(code) <= 20 and code.isprintable() else code[:20].encode().hex()
        raise AccessError(404, f"unknown region {shown!r}: one of {', '.join(known)}")
    if not who.may_see(code):
        raise AccessError(403, f"{who.user} may not see region {code}")
    return code


def _now() -> int:
    return int(time.time())


async def page(request: web.Request) -> web.StreamResponse:
    who = _viewer(request)
    region = _region(request, who)
    queries, view = request.app[_QUERIES], request.app[_VIEW]
    board: Board | None = None
    error: str | None = None
    try:
        board = await queries.board(who, _now(), region)
    except DataUnavailableError as exc:
        log.warning("board: %s", exc)
        error = "The board cannot read the database (PostgreSQL) right now."
    html = view.page(view.context(who, region, board, error))
    return web.Response(
        text=html,
        content_type="text/html",
        status=503 if error else 200,
        headers={"Cache-Control": "no-store"},
    )


async def api_summary(request: web.Request) -> web.StreamResponse:
    who = _viewer(request)
    now = _now()
    areas = await request.app[_QUERIES].summary(who, now)
    return _json({"as_of": format_instant(now), "areas": [a.to_json() for a in areas]})


async def api_worklist(request: web.Request) -> web.StreamResponse:
    who = _viewer(request)
    region = _region(request, who)
    now = _now()
    items = await request.app[_QUERIES].worklist(who, now, region)
    return _json({"as_of": format_instant(now), "items": [i.to_json() for i in items]})


async def health(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n")


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: event `board` with the page's fragments, whenever they change."""
    who = _viewer(request)
    region = _region(request, who)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx-style proxies: do not buffer the stream
        }
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        async with request.app[_FEED].subscribe((who.regions, region)) as queue:
            await response.write(b"retry: 2000\n\n")
            while True:
                try:
                    async with asyncio.timeout(HEARTBEAT_SECONDS):
                        message = await queue.get()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(message.data)
    return response


async def _live_message(queries: Queries, view: View, who: Viewer, region: str | None) -> Message:
    now = _now()
    board: Board | None = None
    error: str | None = None
    try:
        board = await queries.board(who, now, region)
    except DataUnavailableError as exc:
        log.warning("board: %s", exc)
        error = "The board cannot read the database (PostgreSQL) right now."
    html = view.fragments(view.context(who, region, board, error))
    fingerprint = orjson.dumps(html).decode()
    body = orjson.dumps(
        {"as_of": format_instant(now), "unavailable": error is not None, "html": html}
    )
    return Message(fingerprint, b"event: board\ndata: " + body + b"\n\n")


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(value),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Clear answers for refusals and an unavailable database; no traceback ever leaves."""
    api = request.path.startswith(("/api/", "/events"))
    try:
        return await handler(request)
    except AccessError as exc:
        return _refusal(request, exc.status, exc.message, api)
    except DataUnavailableError as exc:
        log.warning("board: %s", exc)
        return _refusal(request, 503, "data unavailable: the database cannot be read now", api)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("board: unexpected error answering %s", request.path)
        return _refusal(request, 500, "the board failed to answer; see its log", api)


def _refusal(request: web.Request, status: int, message: str, api: bool) -> web.Response:
    if api:
        return _json({"error": message}, status)
    titles = {400: "Bad request", 401: "Sign in required", 403: "Not allowed", 404: "Not found"}
    html = request.app[_VIEW].message(titles.get(status, "Data unavailable"), message)
    return web.Response(text=html, status=status, content_type="text/html")
