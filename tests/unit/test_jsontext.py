"""`streams.jsontext`: orjson's speed, the standard library's meaning (differential tests)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams import jsontext
from streams.codec import _JSON
from streams.pseudonym import digit_shape

STANDARD = _JSON.decode  # the codec's decoder: NaN/Infinity and 1e400 refused


def typed(value: Any) -> Any:
    """A tree that tells apart what == does not: 1 vs 1.0 vs True, -0.0 vs 0.0, key order."""
    if isinstance(value, dict):
        return ("dict", [(key, typed(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def outcome(parse: Any, text: str) -> Any:
    try:
        return ("value", typed(parse(text)))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc).__name__, str(exc))


def fast(text: str) -> Any:
    return jsontext.loads(text, digit_shape(text.encode("utf-8", "surrogatepass")), STANDARD)


def assert_same(text: str) -> None:
    assert outcome(fast, text) == outcome(STANDARD, text), text


TOKENS = [
    "{", "}", "[", "]", ",", ":", " ", "\t", "\n", "\r", "\x0c", "\u00a0", "\ufeff",
    '"a"', '"b"', '"é"', '"\\u00e9"', '"\\ud800"', '"\\udc00"', '"\\ud83d\\ude00"',
    '"\\u0000"', '"\x01"', '"\x7f"', '"\\x"', '"\\/"', '"\\"', '"',
    "0", "1", "-0", "-0.0", "01", ".5", "1.", "1.5", "1e5", "1E+5", "1e-400", "1e400", "-1e400",
    "0x1", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "18446744073709551615", "18446744073709551616", "123456789012345678901234567890",
    "0.1234567890123456789", "true", "false", "null", "NaN", "Infinity", "-Infinity", "tru",
]  # fmt: skip

json_token_soup = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def standard_text(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_token_soup)
@example('{"a":1,"a":2}')  # duplicate keys: the last value, at the first key's place
@example('{"a":1,"b":2,"a":3}')
@example("[" * 1100 + "]" * 1100)  # past orjson's depth limit, within the standard one
@example('"\\ud800"')
@example("[1e400]")
@example("[NaN]")
@example(" [18446744073709551616] ")
def test_parsing_agrees_with_the_standard_library_on_any_token_soup(text: str) -> None:
    assert_same(text)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_parsing_agrees_with_the_standard_library_on_any_text(text: str) -> None:
    assert_same(text)


@settings(max_examples=1000, deadline=None)
@given(json_values, st.booleans())
def test_parsing_agrees_with_the_standard_library_on_any_json(value: Any, ascii_only: bool) -> None:
    text = standard_text(value, ascii_only)
    assert_same(text)
    assert_same(" " + text + "\n")


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890",  # orjson alone: 1.2345678901234568e+29
        "-9223372036854775809",
        "18446744073709551616",
        '{"n":[99999999999999999999]}',
    ],
)
def test_integers_beyond_64_bits_are_kept_exact(text: str) -> None:
    assert typed(fast(text)) == typed(json.loads(text))
    # The guard is what keeps them: orjson on its own would not.
    assert typed(orjson.loads(text)) != typed(json.loads(text))


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1e400]", "out of range"), ("[NaN]", "NaN is not JSON"), ("[-Infinity]", "-Infinity")],
)
def test_what_the_codec_refuses_is_refused_in_its_words(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fast(text)


def test_lone_surrogate_escapes_parse_as_the_standard_library_reads_them() -> None:
    # orjson refuses them; the codec must see them (and reject the event as unstorable).
    assert fast('["\\ud800", "\\udc00x"]') == ["\ud800", "\udc00x"]


def test_the_fast_path_is_taken_for_ordinary_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def standard(text: str) -> Any:
        calls.append(text)
        return STANDARD(text)

    text = '{"id":"e-1","time":"2026-01-05T00:00:52Z","data":{"n":12345,"ok":true}}'
    zeros = digit_shape(text.encode())
    assert jsontext.loads(text, zeros, standard) == json.loads(text)
    assert calls == []
    assert jsontext.loads("[1e400, 2]", digit_shape(b"[1e400, 2]"), lambda t: "standard") == (
        "standard"
    )


# -- writing -----------------------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(json_values)
def test_written_json_reads_back_as_the_same_value(value: Any) -> None:
    written = jsontext.dumps(value)
    text = jsontext.dumps_text(value)
    assert written.decode("utf-8", "surrogatepass") == text
    assert typed(json.loads(text)) == typed(value)
    standard = json.dumps(value, separators=(",", ":"))
    assert text == (orjson.dumps(value).decode() if _orjson_writes(value) else standard)


def _orjson_writes(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


@pytest.mark.parametrize(
    "value",
    [
        {"s": "\ud800"},  # a lone surrogate: orjson refuses it
        {"n": 2**64},  # beyond 64 bits: orjson refuses it
        {"k": [("a", 1), "\x00"]},
    ],
)
def test_what_orjson_cannot_write_is_written_by_the_standard_library(value: Any) -> None:
    text = jsontext.dumps_text(value)
    assert json.loads(text) == json.loads(json.dumps(value))
    assert jsontext.dumps(value).decode("utf-8", "surrogatepass") == text


def test_compact_and_utf8() -> None:
    assert jsontext.dumps({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'.encode()
