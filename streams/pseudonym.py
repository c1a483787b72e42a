"""NHS numbers never travel in clear: detection (modulus 11) and a keyed hash.

An NHS number is 10 digits whose last is a modulus-11 check digit over the first nine
(weights 10..2; 11 -> 0; 10 -> never issued). Sources sometimes put one in `patient_ref` (or in
a free-text field) and sometimes print it as 3-3-4 groups. Every valid one found is replaced by
`nhs-` + a truncated HMAC-SHA256 (spelt in letters) of its digits under a secret key, before
any other component sees the event: the same patient gets the same pseudonym (so records still
link), and without the key the pseudonym cannot be reversed by enumerating the 10^9 candidates.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any, Final

# 10 digits, optionally grouped 3-3-4 by one space or hyphen, not part of a longer digit run.
CANDIDATE: Final = re.compile(r"(?<!\d)(\d{3})[ -]?(\d{3})[ -]?(\d{4})(?!\d)")
PREFIX: Final = "nhs-"
_DIGEST_HEX_CHARS: Final = 32  # 128 bits of the HMAC: collisions are not a practical concern
_HEX_TO_LETTERS: Final = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


def is_nhs_number(digits: str) -> bool:
    """True for 10 ASCII digits with a valid modulus-11 check digit."""
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


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
        """`text` with every valid NHS number in it replaced by its pseudonym."""
        # ASCII text with no candidate at all (the fast shape check, exact on ASCII, where
        # `\d` is [0-9]) comes back as it is: most strings of a document the raw pre-check
        # flagged hold none.
        if text.isascii() and not _has_shape(digit_shape(text.encode("ascii"))):
            return text
        return CANDIDATE.sub(self._replace, text)

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

    def _replace(self, match: re.Match[str]) -> str:
        digits = "".join(match.groups())
        return self.pseudonym(digits) if is_nhs_number(digits) else match.group(0)


# Pre-check, run on every event: the exact CANDIDATE regex starts with a look-behind, which
# defeats the regex engine's prefix scan and costs microseconds a line. Instead map every digit
# to "0" and search for the same shape with a literal "000" prefix (a fast scan) and the
# trailing digit boundary as a look-ahead, checking the leading boundary by hand, retrying one
# place on. On the mapped text this accepts exactly where CANDIDATE would match (the
# separators are fixed by the text, so a match at a start position is unique); the check digit
# is then verified by `scrub`.
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789E", b"000000000e")  # and E to e
_SHAPE: Final = re.compile(rb"000[ -]?000[ -]?0000(?!0)")
_ZERO: Final = ord("0")
# A JSON number with an exponent (9.434765919e9) spells an NHS number without a 10-digit run:
# digits with an exponent send the text to the full parse-and-scrub. Only where a JSON number
# can start: a number follows a structural character, a sign or white space, never a letter,
# digit or point, so hex ids ("b8e3") in strings are not taken for one. (E is mapped to e, so
# the pattern starts with the literal "0e", which the regex engine scans for quickly.)
_EXPONENT: Final = re.compile(rb"0e[+-]?0")
_NUMBER_BODY: Final = frozenset(b"0.")
_WORD: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def may_contain(raw: bytes | str) -> bool:
    """Could the raw JSON text hold an NHS number anywhere (a bounded 10-digit candidate)?

    JSON `\\u` escapes can spell digits, so any escape sends the text to the full scan.
    """
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", errors="surrogatepass")
    return may_contain_shaped(data, digit_shape(data))


def digit_shape(data: bytes) -> bytes:
    """`data` with the digits 1-9 mapped to "0" and E to e (what `may_contain_shaped` scans)."""
    return data.translate(_DIGITS_TO_ZERO)


def may_contain_shaped(data: bytes, zeros: bytes) -> bool:
    """`may_contain` of UTF-8 `data` whose `digit_shape` the caller has already computed."""
    if b"\\u" in data:
        return True
    return _has_exponent_number(zeros) or _has_shape(zeros)


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
