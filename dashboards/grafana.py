"""Grafana adapter: upload dashboards through Grafana's HTTP API with grafana-client.

Requests (Grafana HTTP API, "Folder API" and "Dashboard API"), all with
``Authorization: Bearer <token>`` (a service account token with the Editor role):

    GET  /api/folders                  find the folder by uid or title
    POST /api/folders                  {"uid", "title"}: create it when missing
    POST /api/dashboards/db            {"dashboard": {..., "id": null, "uid"}, "folderUid",
                                        "overwrite": true, "message"}: create or replace

Uploading by uid with overwrite makes a push idempotent: pushing twice leaves one copy of
each dashboard (Grafana adds a version to its history). Library errors become crisiswatch's
one-line errors: a bad URL or a refused token is a `ConfigurationError` (exit 2); a Grafana
that cannot be reached or times out a `ServiceUnavailableError`; anything else it answers
wrongly a `ServiceError`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from streams.errors import ConfigurationError, ServiceError, ServiceUnavailableError

TIMEOUT: Final = 10.0  # seconds per request: a Grafana slower than this is "down" to an operator
MESSAGE: Final = "crisiswatch dashboards push"


@dataclass(frozen=True, slots=True)
class PushResult:
    folder_uid: str
    folder_created: bool
    uploaded: tuple[str, ...]  # dashboard uids, in upload order


def folder_uid(title: str) -> str:
    """A stable folder uid from its title (Grafana uids: at most 40 of [A-Za-z0-9_-])."""
    uid = re.sub(r"[^a-z0-9_-]+", "-", title.lower()).strip("-")[:40]
    if not uid:
        raise ConfigurationError(f"--folder: {title!r} has no letters or digits")
    return uid


def check_url(url: str) -> str:
    """The Grafana base URL without a trailing slash, or a ConfigurationError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"--grafana-url: {url!r} is not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"--grafana-url: {url!r} is not an http(s) URL such as http://grafana:3000"
        )
    if port == 0:
        raise ConfigurationError(f"--grafana-url: {url!r} has port 0")
    return url.rstrip("/")


@contextlib.contextmanager
def _errors(url: str) -> Iterator[None]:
    try:
        yield
    except GrafanaUnauthorizedError as exc:
        raise ConfigurationError(
            f"Grafana at {url} refused the token (401 Unauthorized): check "
            "CRISISWATCH_GRAFANA_TOKEN / --token-file (a service account token)"
        ) from exc
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise ConfigurationError(
                f"Grafana at {url} refused the request (403 Forbidden): the token's service "
                "account needs the Editor role"
            ) from exc
        if exc.status_code == 404:
            raise ServiceError(
                f"{url} answered 404 Not Found for Grafana's API: is it Grafana's base URL?"
            ) from exc
        raise ServiceError(f"Grafana at {url}: {_line(exc.message)}") from exc
    except GrafanaTimeoutError as exc:
        raise ServiceUnavailableError(
            f"Grafana at {url} did not answer within {TIMEOUT:g} s"
        ) from exc
    except GrafanaServerError as exc:
        raise ServiceError(f"Grafana at {url} failed: {_line(exc.message)}") from exc
    except GrafanaException as exc:
        raise ServiceError(f"Grafana at {url}: {_line(exc.message)}") from exc
    except (niquests.exceptions.InvalidURL, niquests.exceptions.MissingSchema) as exc:
        raise ConfigurationError(f"--grafana-url: {url!r} is not a valid URL") from exc
    except niquests.exceptions.ConnectionError as exc:
        raise ServiceUnavailableError(f"cannot reach Grafana at {url}: {_reason(exc)}") from exc
    except niquests.exceptions.RequestException as exc:
        raise ServiceError(f"Grafana at {url}: {_line(str(exc))}") from exc
    except ValueError as exc:  # a 200 that is not JSON: something else answers at that URL
        raise ServiceError(f"{url} did not answer as Grafana's HTTP API does") from exc


def _line(text: object) -> str:
    first = str(text).strip().splitlines()
    return first[0][:200] if first else "no details"


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host"):
        if known.lower() in text.lower():
            return known.lower()
    return _line(text)


def _find_folder(api: Any, uid: str, title: str) -> str | None:
    folders: Any = api.folder.get_all_folders()
    if not isinstance(folders, list):
        raise ValueError("GET /api/folders did not return a list")
    for folder in folders:
        if folder.get("uid") == uid:
            return uid
    for folder in folders:
        if folder.get("title") == title:
            return str(folder["uid"])
    return None


def push(
    url: str,
    token: str,
    folder: str,
    dashboards: Sequence[dict[str, Any]],
    *,
    timeout: float = TIMEOUT,
) -> PushResult:
    """Create the folder if missing and upload every dashboard into it, with overwrite."""
    base = check_url(url)
    if not token.strip():
        raise ConfigurationError(
            "a Grafana token is required: CRISISWATCH_GRAFANA_TOKEN, --token or --token-file"
        )
    uid = folder_uid(folder)
    with _errors(base):
        # grafana-client's element methods are unannotated: use the client as Any.
        api: Any = GrafanaApi.from_url(base, credential=token.strip(), timeout=timeout)
        found = _find_folder(api, uid, folder)
        created = found is None
        if found is None:
            api.folder.create_folder(title=folder, uid=uid)
            found = uid
        uploaded = []
        for dashboard in dashboards:
            api.dashboard.update_dashboard(
                {
                    "dashboard": {**dashboard, "id": None},
                    "folderUid": found,
                    "message": MESSAGE,
                    "overwrite": True,
                }
            )
            uploaded.append(str(dashboard["uid"]))
    return PushResult(found, created, tuple(uploaded))
