"""The one rule for what counts as an NHS number in text (streams/pseudonym.py), stated here
independently, and the pre-checks held to it in every shape and every encoding.

The rule: ten decimal digits of any script (NFKC, then read as ASCII); the 3-3-4 groups joined
by nothing or by one space separator (Zs) or dash-like character (hyphen, en dash, minus, dot,
slash, ...); optional brackets round the first group; not touching another digit of any
script; passing modulus 11.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import cache

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streams.codec import WITHHELD, Codec
from streams.pseudonym import (
    Pseudonymiser,
    digit_shape,
    holds_any,
    may_contain,
    may_contain_shaped,
    numbers,
    readings,
)

KEY = b"unit-test-key-0123456789"
PSEUDONYMS = Pseudonymiser(KEY)
CODEC = Codec(PSEUDONYMS)
VALID = "9434765919"  # the NHS's own example number
P = PSEUDONYMS.pseudonym(VALID)

# -- the rule, written again -------------------------------------------------------------------

JOINERS = "-\u2010\u2012\u2013\u2014\u2212./"  # hyphens, figure/en/em dash, minus, dot, slash


def reference_check(digits: str) -> bool:
    remainder = sum(int(digits[i]) * (10 - i) for i in range(9)) % 11
    check = (11 - remainder) % 11
    return check != 10 and str(check) == digits[9]


def as_rule_sees(char: str) -> str:
    """One character as the rule reads it: "d" digit (with its value), " ", "-", "(", ")" or
    "x" (anything else)."""
    normal = unicodedata.normalize("NFKC", char)
    if len(normal) == 1 and normal.isdecimal():
        return str(int(normal))
    if len(normal) == 1 and unicodedata.category(normal) == "Zs":
        return " "
    if len(normal) == 1 and normal in JOINERS:
        return "-"
    if normal in ("(", ")"):
        return normal
    return "x"


_REFERENCE = re.compile(r"(?:\((\d{3})\)|(?<!\d)(\d{3}))[ -]?(\d{3})[ -]?(\d{4})(?!\d)", re.ASCII)


def reference_numbers(text: str) -> list[str]:
    """The valid NHS numbers the rule finds in `text`."""
    seen = "".join(as_rule_sees(c) for c in text)
    found = []
    for match in _REFERENCE.finditer(seen):
        digits = (match.group(1) or match.group(2)) + match.group(3) + match.group(4)
        if reference_check(digits):
            found.append(digits)
    return found


@cache
def forms() -> dict[str, list[str]]:
    """Every character the rule reads as each digit, joiner and bracket."""
    table: dict[str, list[str]] = {}
    for codepoint in range(sys.maxunicode + 1):
        char = chr(codepoint)
        far = 0x3000 < codepoint < 0xFE00 or codepoint > 0xFFFF
        if far and unicodedata.numeric(char, None) is None:
            continue  # out there only numeric characters fold to what the rule reads
        seen = as_rule_sees(char)
        if seen != "x":
            table.setdefault(seen, []).append(char)
    return table


def test_the_forms_cover_every_script_and_joiner() -> None:
    table = forms()
    assert {"\u0669", "\uff19", "\u096f", "\U0001d7d7", "\u2079", "9"} <= set(table["9"])
    assert {"\u00a0", "\u2009", "\u202f", "\u3000", " "} <= set(table[" "])
    assert {"-", "\u2013", "\u2212", ".", "/", "\uff0d"} <= set(table["-"])
    assert {"(", "\uff08"} <= set(table["("])


# -- generated text in every shape -------------------------------------------------------------

nine = st.integers(0, 10**9 - 1).map(lambda n: f"{n:09d}")
valid_numbers = (
    nine.map(lambda head: next((head + d for d in "0123456789" if reference_check(head + d)), None))
    .filter(lambda d: d is not None)
    .map(str)
)
any_numbers = st.one_of(valid_numbers, st.integers(0, 10**10 - 1).map(lambda n: f"{n:010d}"))


@st.composite
def written(draw: st.DrawFn, digits: str) -> str:
    """`digits` as a person might paste them: any script per digit, any joiner, brackets."""
    table = forms()
    script = [draw(st.sampled_from(table[d])) for d in digits]
    if draw(st.booleans()):  # one script for all, as usually
        zero = draw(st.sampled_from([c for c in table["0"] if unicodedata.decimal(c, None) == 0]))
        script = [chr(ord(zero) + int(d)) for d in digits]
    joiner = st.one_of(st.just(""), st.sampled_from(table[" "] + table["-"]))
    first = "".join(script[:3])
    if draw(st.booleans()):
        first = draw(st.sampled_from(table["("])) + first + draw(st.sampled_from(table[")"]))
    return first + draw(joiner) + "".join(script[3:6]) + draw(joiner) + "".join(script[6:])


context = st.text(st.characters(codec="utf-8"), max_size=8)


@st.composite
def texts(draw: st.DrawFn) -> str:
    """Text with numbers written in every shape, mostly standing clear of other digits."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        parts.append(draw(context))
        parts.append(draw(st.sampled_from([" ", "", ": ", "\u00a0"])))
        parts.append(draw(written(draw(any_numbers))))
        parts.append(draw(st.sampled_from([" ", "", ".", "x"])))
    parts.append(draw(context))
    return "".join(parts)


ENCODINGS = [
    "utf-8",
    "utf-8-sig",
    "utf-16",  # with a byte-order mark
    "utf-16-le",
    "utf-16-be",
    "utf-32",
    "utf-32-le",
    "utf-32-be",
    "nul-interleaved",
]


def encode(text: str, encoding: str) -> bytes:
    if encoding == "nul-interleaved":
        return b"\x00".join(bytes([b]) for b in text.encode("utf-8", "surrogatepass"))
    return text.encode(encoding, "surrogatepass")


# -- the properties ----------------------------------------------------------------------------


@settings(max_examples=1000)
@given(texts())
@example("(943)\u2009476\u20135919")
@example("\u0669\u0664\u0663 \u0664\u0667\u0666 \u0665\u0669\u0661\u0669")
@example("\uff19\uff14\uff13\uff14\uff17\uff16\uff15\uff19\uff11\uff19")
def test_scrub_replaces_exactly_what_the_rule_finds(text: str) -> None:
    found = reference_numbers(text)
    assert numbers(text) == found
    scrubbed = PSEUDONYMS.scrub(text)
    assert reference_numbers(scrubbed) == []
    for digits in found:
        assert PSEUDONYMS.pseudonym(digits) in scrubbed
    if not found:  # numbers failing modulus 11 (and everything else) come through unchanged
        assert scrubbed == text


@settings(max_examples=1000)
@given(texts(), st.sampled_from(ENCODINGS))
def test_the_pre_check_never_says_no_where_the_rule_says_yes(text: str, encoding: str) -> None:
    raw = encode(text, encoding)
    if reference_numbers(text):
        assert may_contain(raw)
        assert holds_any(raw)
        assert any(reference_numbers(r) for r in readings(raw))
    if encoding == "utf-8" and reference_numbers(text):
        # The codec's own check on every event (UTF-8 only, as the contract requires).
        assert may_contain_shaped(raw, digit_shape(raw))


@settings(max_examples=500)
@given(texts(), st.sampled_from(ENCODINGS))
def test_bytes_that_leave_hold_no_number_in_any_reading(text: str, encoding: str) -> None:
    raw = encode(text, encoding)
    out, rewritten = CODEC.scrub_bytes(raw)
    assert not any(reference_numbers(r) for r in readings(out))
    if not any(reference_numbers(r) for r in readings(raw)):
        assert (out, rewritten) == (raw, None)  # nothing to replace: the bytes as sent
    elif rewritten not in (None, "withheld"):
        assert out == out.decode("utf-8").encode("utf-8")  # rewritten as UTF-8 text
    if rewritten == "withheld":
        assert out == WITHHELD


@settings(max_examples=500)
@given(st.binary(max_size=60))
def test_the_pre_check_over_arbitrary_bytes(raw: bytes) -> None:
    if any(reference_numbers(r) for r in readings(raw)):
        assert may_contain(raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain, spaced, hyphenated (as before)
        ("9434765919", P),
        ("943 476 5919", P),
        ("943-476-5919", P),
        # a no-break space and a thin space look like a space on screen
        ("943\u00a0476\u20095919", P),
        # en dash, minus sign, dot, slash
        ("943\u2013476\u20135919", P),
        ("943\u2212476\u22125919", P),
        ("943.476.5919", P),
        ("943/476/5919", P),
        # brackets round the first group
        ("(943) 476 5919", P),
        ("tel (943)476-5919.", f"tel {P}."),
        # full-width and Arabic-Indic digits, and a mix of scripts
        ("\uff19\uff14\uff13\uff14\uff17\uff16\uff15\uff19\uff11\uff19", P),
        ("\u0669\u0664\u0663\u0664\u0667\u0666\u0665\u0669\u0661\u0669", P),
        ("\u0669\u0664\u0663 476 5919", P),
        # touching a digit of another script: an 11-digit number, not an NHS number
        ("\u06639434765919", "\u06639434765919"),
        ("9434765919\uff11", "9434765919\uff11"),
        # two joiners in a row, or one that is not a joiner (tab, underscore)
        ("943  476 5919", "943  476 5919"),
        ("943\t476\t5919", "943\t476\t5919"),
        ("943_476_5919", "943_476_5919"),
        # a wrong check digit, in any shape, is left alone
        ("(943)\u00a0476\u20135918", "(943)\u00a0476\u20135918"),
    ],
)
def test_shapes(text: str, expected: str) -> None:
    assert PSEUDONYMS.scrub(text) == expected


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
)
def test_a_wider_encoding_is_rewritten_as_utf8_and_says_so(encoding: str) -> None:
    raw = '{"patient_ref": "943 476 5919", "note": "caf\u00e9"}'.encode(encoding)
    out, rewritten = CODEC.scrub_bytes(raw)
    assert rewritten == encoding
    assert out.decode("utf-8") == f'{{"patient_ref": "{P}", "note": "caf\u00e9"}}'


def test_digits_a_utf16_reader_would_see_in_ascii_bytes_are_caught() -> None:
    # U+0966.. (Devanagari digits) in UTF-16 LE are the ASCII bytes "f\t", "g\t", ...
    raw = "\u096f\u096a\u0969\u096a\u096d\u096c\u096b\u096f\u0967\u096f".encode("utf-16-le")
    assert raw.isascii()
    assert b"\x00" not in raw
    assert may_contain(raw)
    out, rewritten = CODEC.scrub_bytes(raw)
    assert not holds_any(out)
    assert rewritten is not None


def test_nul_interleaved_digits_are_caught() -> None:
    raw = b'{"a": "9\x004\x003\x004\x007\x006\x005\x009\x001\x009"}'
    out, rewritten = CODEC.scrub_bytes(raw)
    assert rewritten is None  # still UTF-8: replaced in place (NULs dropped)
    assert out == f'{{"a": "{P}"}}'.encode()
