"""Who is asking, and what they may see (CONTRACT section 6).

With `--auth proxy` the board sits behind an authenticating reverse proxy (oauth2-proxy) and
trusts its headers: `X-Forwarded-User` (required) and `X-Forwarded-Groups` (comma-separated).
Group `crisiswatch-england` sees everything; `crisiswatch-region-<CODE>` sees that region.
The resulting `Viewer` is passed to every query, which filters by it in SQL.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

ENGLAND_GROUP: Final = "crisiswatch-england"
REGION_GROUP_PREFIX: Final = "crisiswatch-region-"
USER_HEADER: Final = "X-Forwarded-User"
GROUPS_HEADER: Final = "X-Forwarded-Groups"
# Longest header value accepted (characters): oauth2-proxy sends a user's groups in one header.
MAX_HEADER_LENGTH: Final = 8192


class AuthMode(StrEnum):
    NONE = "none"
    PROXY = "proxy"


class AccessError(Exception):
    """A request the board refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Viewer:
    """A user and the regions they may see (`regions` None: all of England)."""

    user: str
    regions: frozenset[str] | None

    @property
    def england(self) -> bool:
        return self.regions is None

    def may_see(self, region: str) -> bool:
        return self.regions is None or region in self.regions


LOCAL_VIEWER: Final = Viewer("local", None)


def viewer(
    mode: AuthMode, user: list[str], groups: list[str], known_regions: frozenset[str]
) -> Viewer:
    """The viewer of a request from its header values (each header's list of occurrences).

    Raises `AccessError`: 401 without a user, 403 with no crisiswatch group, 400 for a header
    that is malformed (repeated, too long, or with control or non-ASCII characters).
    """
    if mode is AuthMode.NONE:
        return LOCAL_VIEWER
    if len(user) > 1:
        raise AccessError(400, f"malformed {USER_HEADER} header: given more than once")
    name = user[0].strip() if user else ""
    if not name:
        raise AccessError(401, f"not signed in: no {USER_HEADER} header from the proxy")
    _check(USER_HEADER, name)
    regions: set[str] = set()
    england = False
    for value in groups:
        _check(GROUPS_HEADER, value)
        for group in (g.strip() for g in value.split(",")):
            if group == ENGLAND_GROUP:
                england = True
            elif group.startswith(REGION_GROUP_PREFIX):
                code = group.removeprefix(REGION_GROUP_PREFIX).upper()
                if code in known_regions:
                    regions.add(code)
    if england:
        return Viewer(name, None)
    if not regions:
        raise AccessError(
            403,
            f"{name} is in neither {ENGLAND_GROUP} nor a {REGION_GROUP_PREFIX}<CODE> group",
        )
    return Viewer(name, frozenset(regions))


def _check(header: str, value: str) -> None:
    if len(value) > MAX_HEADER_LENGTH:
        raise AccessError(400, f"malformed {header} header: longer than {MAX_HEADER_LENGTH}")
    if any(not " " <= ch <= "~" for ch in value):
        raise AccessError(400, f"malformed {header} header: control or non-ASCII characters")


def is_loopback(host: str) -> bool:
    """True if `host` names only this machine (`--auth none` is allowed only there)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
