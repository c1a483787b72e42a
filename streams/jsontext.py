"""JSON text at orjson's speed, with the standard library's meaning.

The worker parses every event and writes JSON for every clock and outcome; `json` does both at
two to three times orjson's cost. orjson is used where the two agree, and the standard library
decides wherever they could differ, so no document is read or written differently:

* parsing: orjson refuses some text `json` accepts (NaN, numbers beyond a double, lone
  surrogate escapes, nesting past 1,024) and words its errors differently, so any text orjson
  refuses is parsed again by the caller's `json` decoder, whose verdict and message stand; and
  orjson reads an integer beyond 64 bits as a float, so text with a run of 19 or more digits
  goes to `json` directly (`LONG_DIGITS`, tested on the text with every digit mapped to "0");
* writing: compact JSON (no spaces), UTF-8 rather than `\\u` escapes for non-ASCII
  characters (the same JSON value); a value orjson cannot write (a lone surrogate, an integer
  beyond 64 bits, a type it does not know) is written by `json`, whose output stands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import orjson

#: With every digit mapped to "0": the shortest run that may be an integer orjson cannot hold
#: (2**64 has 20 digits, -2**63 19).
LONG_DIGITS: Final = b"0" * 19

_STANDARD_ENCODE: Final = json.JSONEncoder(separators=(",", ":")).encode


def loads(text: str, zeros: bytes, fallback: Callable[[str], Any]) -> Any:
    """Parse `text` as `fallback` (a `json` decoder) would; `zeros` is its UTF-8 bytes with
    the digits 1-9 mapped to "0" (computed once by the caller, who scans it for other things).
    """
    if LONG_DIGITS in zeros:
        return fallback(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return fallback(text)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of `value` (see module doc)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _STANDARD_ENCODE(value).encode("ascii")  # ensure_ascii: escapes only


def dumps_text(value: Any) -> str:
    """`dumps` as text."""
    return dumps(value).decode("utf-8")
