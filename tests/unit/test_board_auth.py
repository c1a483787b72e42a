"""Who may see what on the board (oauth2-proxy headers), without services."""

from __future__ import annotations

import pytest

from consumers.board.auth import AccessError, AuthMode, Viewer, is_loopback, viewer

REGIONS = frozenset({"Y56", "Y58", "Y59", "Y60", "Y61", "Y62", "Y63"})


def proxied(user: list[str], groups: list[str]) -> Viewer:
    return viewer(AuthMode.PROXY, user, groups, REGIONS)


@pytest.mark.parametrize(
    ("groups", "regions"),
    [
        (["crisiswatch-england"], None),  # England sees everything
        (["staff, crisiswatch-region-Y62"], {"Y62"}),  # one region among other groups
        (["crisiswatch-region-y62,crisiswatch-region-Y56"], {"Y62", "Y56"}),  # two; any case
        (["crisiswatch-region-Y62", "crisiswatch-england"], None),  # repeated header: union
        (["crisiswatch-region-Y62,crisiswatch-region-Y99"], {"Y62"}),  # unknown code ignored
    ],
)
def test_groups_give_regions(groups: list[str], regions: set[str] | None) -> None:
    seen = proxied(["ann"], groups)
    assert seen.user == "ann"
    assert seen.regions == (None if regions is None else frozenset(regions))


@pytest.mark.parametrize(
    ("user", "groups", "status"),
    [
        ([], ["crisiswatch-england"], 401),  # no user header
        (["  "], ["crisiswatch-england"], 401),  # an empty one
        (["ann"], [], 403),  # no groups
        (["ann"], ["crisiswatch-region-Y99", "crisiswatch-englandx"], 403),  # none that count
        (["ann", "bob"], ["crisiswatch-england"], 400),  # user twice
        (["ann\x01"], ["crisiswatch-england"], 400),  # control character
        (["ann"], ["crisiswatch-england\u00e9"], 400),  # non-ASCII
        (["ann"], ["x" * 9000], 400),  # too long
    ],
)
def test_refusals(user: list[str], groups: list[str], status: int) -> None:
    with pytest.raises(AccessError) as raised:
        proxied(user, groups)
    assert raised.value.status == status


def test_no_auth_is_a_local_england_viewer() -> None:
    assert viewer(AuthMode.NONE, [], [], REGIONS).regions is None


def test_region_viewer_sees_only_its_regions() -> None:
    seen = Viewer("ann", frozenset({"Y62"}))
    assert seen.may_see("Y62")
    assert not seen.may_see("Y56")
    assert not seen.may_see("unknown")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
     ("board.example", False)],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
