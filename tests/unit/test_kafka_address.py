"""`--kafka`: one rule for every command (consumers.kafka.address)."""

from __future__ import annotations

import pytest

from consumers.kafka.address import bootstrap_servers
from streams.errors import ConfigurationError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:9092", "127.0.0.1:9092"),
        (" a:1 , b:65535", "a:1,b:65535"),  # blanks around servers are dropped
        ("[::1]:9092", "[::1]:9092"),  # IPv6 in brackets
    ],
)
def test_accepted(given: str, expected: str) -> None:
    assert bootstrap_servers(given) == expected


@pytest.mark.parametrize(
    "given",
    ["broker.example", "broker:", ":9092", "broker:90x2", "broker:0", "broker:65536", "a:1,,b:2"],
)
def test_refused_with_one_line_naming_the_server(given: str) -> None:
    with pytest.raises(ConfigurationError, match="is not HOST:PORT") as info:
        bootstrap_servers(given)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("--kafka / CRISISWATCH_KAFKA: ")
