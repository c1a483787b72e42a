"""NHS numbers never travel in clear: one rule for what is one (modulus 11), and a keyed hash.

The rule
--------
An NHS number is ten decimal digits whose last is a modulus-11 check digit over the first nine
(weights 10..2; 11 -> 0; 10 -> never issued). Sources paste them from documents and screens,
so in text one counts whatever way it is written:

* each digit in any script: a character whose NFKC normal form is one decimal digit (ASCII,
  full-width, Arabic-Indic, Devanagari, mathematical, superscript, circled, ...), read as its
  ASCII value;
* the 3-3-4 groups joined by nothing, or each join by one space-like character (any Unicode
  space separator, Zs) or dash-like character (hyphen, non-breaking hyphen, figure dash, en
  and em dash, minus, full stop, solidus), again after NFKC (so a full-width hyphen counts);
* optionally with brackets round the first group: `(943) 476 5919`;
* not touching another digit of any script (a longer run is some other number).

NFKC is applied character by character (`fold`), so that positions in the text are kept and a
match can be replaced where it stands. Every valid one found is replaced by `nhs-` + a
truncated HMAC-SHA256 (spelt in letters) of its ASCII digits under a secret key, before any
other component sees the event: the same patient gets the same pseudonym (so records still
link), and without the key the pseudonym cannot be reversed by enumerating the 10^9
candidates.

Bytes in any encoding
---------------------
What leaves the system as bytes (DLQ values and keys, rejects files) may not be UTF-8: a
reader could take it as UTF-8, UTF-16 or UTF-32 (either byte order, with or without a
byte-order mark) or drop the NULs of text written a byte apart. `readings` lists those texts
and `holds_any` applies the rule to each; `may_contain` is the fast pre-check over raw bytes
that says "no" only where no reading holds a number (property-tested over generated text in
every shape and encoding).
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterator
from functools import cache
from typing import Any, Final

# On `fold`ed text (every digit ASCII, every joiner one of " -./", brackets "()"): the 3-3-4
# groups, the first optionally bracketed, not touching another digit.
CANDIDATE: Final = re.compile(
    r"(?:\(([0-9]{3})\)|(?<![0-9])([0-9]{3}))[ \-./]?([0-9]{3})[ \-./]?([0-9]{4})(?![0-9])"
)
PREFIX: Final = "nhs-"
_DIGEST_HEX_CHARS: Final = 32  # 128 bits of the HMAC: collisions are not a practical concern
_HEX_TO_LETTERS: Final = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
# Dash-like joiners (after NFKC): hyphen-minus, hyphen (U+2011 folds to it), figure dash, en
# dash, em dash, minus sign. Full stop and solidus are joiners too, kept as themselves.
DASHES: Final = "-\u2010\u2012\u2013\u2014\u2212"
_KEEP: Final = frozenset("./()")
_FOLD_CACHE_LIMIT: Final = 65_536  # distinct characters remembered (bounded memory)


def is_nhs_number(digits: str) -> bool:
    """True for 10 ASCII digits with a valid modulus-11 check digit."""
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def fold_char(char: str) -> str:
    """What one character counts as under the rule: an ASCII digit, " " (a space separator),
    "-" (a dash), ".", "/", "(" or ")"; else the character itself."""
    normal = unicodedata.normalize("NFKC", char)
    if len(normal) != 1:
        return char
    value = unicodedata.decimal(normal, None)
    if value is not None:
        return str(value)
    if normal in _KEEP:
        return normal
    if normal in DASHES:
        return "-"
    if unicodedata.category(normal) == "Zs":
        return " "
    return char


class _Fold(dict[int, str]):
    """`str.translate` table applying `fold_char`, filled as characters are met."""

    def __missing__(self, codepoint: int) -> str:
        folded = fold_char(chr(codepoint))
        if len(self) < _FOLD_CACHE_LIMIT:
            self[codepoint] = folded
        return folded


_FOLD: Final = _Fold()


def fold(text: str) -> str:
    """`text` with each character replaced by `fold_char` of it (same length)."""
    return text if text.isascii() else text.translate(_FOLD)


def _numbers(folded: str) -> Iterator[tuple[re.Match[str], str]]:
    """The valid NHS numbers in folded text: each match and its ASCII digits."""
    for match in CANDIDATE.finditer(folded):
        first, plain, middle, last = match.groups()
        digits = (first or plain) + middle + last
        if is_nhs_number(digits):
            yield match, digits


def numbers(text: str) -> list[str]:
    """The valid NHS numbers written in `text` under the rule, as ASCII digits."""
    return [digits for _, digits in _numbers(fold(text))]


class Pseudonymiser:
    """Replaces valid NHS numbers with a keyed hash.

    Without a configured key a random one is drawn per process: pseudonyms are then safe but
    do not link across processes or runs (set CRISISWATCH_PSEUDONYM_KEY for that).
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.ephemeral = key is None
        self._key = key if key is not None else secrets.token_bytes(32)

    def pseudonym(self, digits: str) -> str:
        mac = hmac.new(self._key, digits.encode("ascii"), hashlib.sha256)
        # Spelt in the letters a-p rather than hex digits, so a pseudonym never contains a digit
        # run that a second scrub could mistake for an NHS number.
        return PREFIX + mac.hexdigest()[:_DIGEST_HEX_CHARS].translate(_HEX_TO_LETTERS)

    def scrub(self, text: str) -> str:
        """`text` with every valid NHS number in it (the rule) replaced by its pseudonym."""
        if text.isascii():
            # The fast shape check, exact on ASCII: most strings of a document the raw
            # pre-check flagged hold no candidate at all.
            if not _has_shape(digit_shape(text.encode("ascii"))):
                return text
            folded = text
        else:
            folded = text.translate(_FOLD)
        parts: list[str] = []
        last = 0
        for match, digits in _numbers(folded):
            parts += (text[last : match.start()], self.pseudonym(digits))
            last = match.end()
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)

    def scrub_exponents(self, text: str) -> str:
        """JSON text with each number written with an exponent whose integer value is a valid
        NHS number (9.434765919e9) replaced by its pseudonym (the raw-text twin of
        `scrub_tree`'s handling of floats)."""
        if "e" not in text and "E" not in text:
            return text

        def replace(match: re.Match[str]) -> str:
            digits = _integral(match.group())
            return self.pseudonym(digits) if digits and is_nhs_number(digits) else match.group()

        return _JSON_EXPONENT.sub(replace, text)

    def scrub_tree(self, value: Any) -> Any:
        """Scrub every string (and object key) in a parsed JSON value; returns the new value."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub_tree(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_tree(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            # A source may send the number as a JSON number: it becomes its pseudonym (a string).
            # An integral float (9434765919.0, or 9.434765919e9 in the JSON text) is read as
            # its integer digits, else str() would hide them behind ".0" or an exponent.
            if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
                text = str(int(value))
                scrubbed = self.scrub(text)
                return scrubbed if scrubbed != text else value
            text = str(value)
            scrubbed = self.scrub(text)
            return scrubbed if scrubbed != text else value
        return value


# A JSON number with an exponent, where one can stand (not inside a word or a longer number).
_JSON_EXPONENT: Final = re.compile(r"(?<![\w.])-?[0-9]+(?:\.[0-9]+)?[eE][+-]?[0-9]+(?![\w.])")


def _integral(number: str) -> str | None:
    """The integer digits of a JSON number with an integral value below 10^16, else None."""
    try:
        value = float(number)
    except (ValueError, OverflowError):
        return None
    if not value.is_integer() or abs(value) >= 1e16:
        return None
    return str(abs(int(value)))


def expand_exponents(text: str) -> str:
    """`text` with every JSON number with an exponent and an integral value written out."""
    return _JSON_EXPONENT.sub(lambda m: _integral(m.group()) or m.group(), text)


# -- readings of raw bytes ---------------------------------------------------------------------

_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def readings(raw: bytes) -> list[str]:
    """The texts a reader could take `raw` for: UTF-8 (its NULs kept and dropped; as text and
    as JSON, escapes decoded and exponents written out), UTF-16 and
    UTF-32 in either byte order at every alignment (so with or without a byte-order mark);
    bytes that are not valid in an encoding read as U+FFFD."""
    found = [raw.decode("utf-8", "replace")]
    if b"\x00" in raw:
        found.append(raw.replace(b"\x00", b"").decode("utf-8", "replace"))
    if b"\\" in raw:
        # As JSON: escapes of digits and joiners decoded, the others (whose hex digits could
        # run into a number: "\u00e99434765919") read as a character that is not a digit.
        found += [_OTHER_ESCAPE.sub("\ufffd", unescape_numbers(text)) for text in found]
    if b"e" in raw or b"E" in raw:  # as JSON: numbers with exponents written out
        found += [expanded for text in found if (expanded := expand_exponents(text)) != text]
    for encoding, width in (("utf-16-le", 2), ("utf-16-be", 2), ("utf-32-le", 4), ("utf-32-be", 4)):
        if width == 4 and b"\x00" not in raw:
            continue  # every UTF-32 code unit holds a zero byte
        for start in range(width):
            found.append(raw[start:].decode(encoding, "replace"))
    return found


# A JSON escape: a surrogate pair, one UTF-16 code unit, or an escaped solidus.
_JSON_ESCAPE: Final = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\/"
)
_NUMBER_CHARS: Final = frozenset("0123456789 -./()")
_OTHER_ESCAPE: Final = re.compile(r"\\u[0-9a-fA-F]{4}")


def unescape_numbers(text: str) -> str:
    """JSON text with the escapes of characters an NHS number is written with (`fold_char`:
    digits of any script, joiners, brackets) replaced by those characters; others kept."""
    return _JSON_ESCAPE.sub(_unescape, text) if "\\" in text else text


def _unescape(match: re.Match[str]) -> str:
    high, low, unit = match.groups()
    if unit is not None:
        char = chr(int(unit, 16))
    elif high is not None:
        char = chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    else:
        char = "/"
    return char if fold_char(char) in _NUMBER_CHARS else match.group()


def holds_any(raw: bytes) -> bool:
    """Whether any reading of `raw` holds a valid NHS number (checked after `may_contain`)."""
    return may_contain(raw) and any(numbers(text) for text in readings(raw))


# -- the pre-checks ----------------------------------------------------------------------------

# Run on every event: the exact CANDIDATE regex starts with a look-behind, which defeats the
# regex engine's prefix scan and costs microseconds a line. Instead map every ASCII digit to
# "0" and search for the same shape with a literal "000" prefix (a fast scan) and the trailing
# digit boundary as a look-ahead, checking the leading boundary by hand, retrying one place on.
# On ASCII text this accepts exactly where CANDIDATE would match (the joiners are fixed by the
# text, so a match at a start position is unique); the check digit is then verified by `scrub`.
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789E", b"000000000e")  # and E to e
_SHAPE: Final = re.compile(rb"000\)?[ \-./]?000[ \-./]?0000(?!0)")
_ZERO: Final = ord("0")
_OPEN: Final = ord("(")
# UTF-8 with other characters: every byte of one maps to "0" too, so a digit or joiner of any
# script becomes a run of zeros, and the shape is searched without boundaries (a superset).
_ANY_TO_ZERO: Final = bytes.maketrans(b"123456789" + bytes(range(0x80, 0x100)), b"0" * (9 + 0x80))
_WIDE_SHAPE: Final = re.compile(rb"000\)?[ \-./]?0{3,}[ \-./]?0000")
# A JSON number with an exponent (9.434765919e9) spells an NHS number without a 10-digit run:
# digits with an exponent send the text to the full parse-and-scrub. Only where a JSON number
# can start: a number follows a structural character, a sign or white space, never a letter,
# digit or point, so hex ids ("b8e3") in strings are not taken for one. (E is mapped to e, so
# the pattern starts with the literal "0e", which the regex engine scans for quickly.)
_EXPONENT: Final = re.compile(rb"0e[+-]?0")
_NUMBER_BODY: Final = frozenset(b"0.")
_WORD: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def may_contain(raw: bytes | str) -> bool:
    """Could any reading of `raw` (see `readings`; JSON `\\u` escapes and exponents included)
    hold an NHS number? False only where none can: the fast pre-check for bytes leaving."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", errors="surrogatepass")
    if not data.isascii() or b"\x00" in data:
        return True  # other scripts, UTF-16/32 or NULs: the readings are checked one by one
    return may_contain_shaped(data, digit_shape(data)) or _utf16_may_spell(data)


def digit_shape(data: bytes) -> bytes:
    """`data` with the digits 1-9 mapped to "0" and E to e (what `may_contain_shaped` scans)."""
    return data.translate(_DIGITS_TO_ZERO)


def may_contain_shaped(data: bytes, zeros: bytes) -> bool:
    """Could UTF-8 `data` (whose `digit_shape` the caller has computed) hold an NHS number in
    its UTF-8 reading, JSON escapes and exponents included? The codec's check on every event.
    """
    if b"\\u" in data or b"\\/" in data:
        return True
    if _has_exponent_number(zeros) or _has_shape(zeros):
        return True
    return not data.isascii() and _WIDE_SHAPE.search(data.translate(_ANY_TO_ZERO)) is not None


def _has_exponent_number(zeros: bytes) -> bool:
    """Whether digits with an exponent stand where a JSON number could (not after a letter)."""
    match = _EXPONENT.search(zeros)
    while match is not None:
        start = match.start()
        while start > 0 and zeros[start - 1] in _NUMBER_BODY:
            start -= 1
        if start == 0 or zeros[start - 1] not in _WORD:
            return True
        match = _EXPONENT.search(zeros, match.start() + 1)
    return False


def _has_shape(zeros: bytes) -> bool:
    """Whether text with its digits mapped to "0" has a CANDIDATE-shaped, digit-bounded run."""
    match = _SHAPE.search(zeros)
    while match is not None:
        first = match.start()
        if first == 0 or zeros[first - 1] != _ZERO:
            return True
        match = _SHAPE.search(zeros, first + 1)
    return False


def _utf16_may_spell(data: bytes) -> bool:
    """Whether NUL-free ASCII bytes, read as UTF-16, could spell a number: ten code units in a
    row whose high byte is that of a digit, joiner or bracket of the rule (U+0966 is "f\\t")."""
    return _utf16_units().search(data) is not None


@cache
def _utf16_units() -> re.Pattern[bytes]:
    highs = sorted(
        {
            codepoint >> 8
            for codepoint in range(0x0101, 0x8000)
            if 0 < codepoint & 0xFF < 0x80 and fold_char(chr(codepoint)) != chr(codepoint)
        }
    )
    high = b"[" + b"".join(re.escape(bytes([h])) for h in highs) + b"]"
    return re.compile(b"(?:." + high + b"){10}|(?:" + high + b".){10}", re.DOTALL)
