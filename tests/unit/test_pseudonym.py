"""NHS numbers never travel in clear (CONTRACT section 1): detection, the keyed hash, and the
codec's use of both on accepted documents and on rejected text."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams.codec import Codec, Rejection
from streams.pseudonym import Pseudonymiser, is_nhs_number, may_contain
from streams.replay import replay
from tests.factory import decode_document

KEY = b"0123456789abcdef-test-key"
OTHER_KEY = b"fedcba9876543210-test-key"
PSEUDONYMS = Pseudonymiser(KEY)
PSEUDONYM = re.compile(r"nhs-[a-p]{32}")  # hex spelt in letters a-p: no digits

# Check digits worked by hand (weights 10..2 over the first nine digits):
# 9 4 3 4 7 6 5 9 1 -> 90+36+24+28+42+30+20+27+2 = 299; 299 % 11 = 2; 11 - 2 = 9 -> 9434765919
# 9 4 3 4 7 6 5 8 7 -> 90+36+24+28+42+30+20+24+14 = 308; 308 % 11 = 0; 11 - 0 = 11 -> 0
# 4 0 1 0 2 3 2 1 3 -> 40+0+8+0+12+15+8+3+6 = 92; 92 % 11 = 4; 11 - 4 = 7 -> 4010232137
# 0 0 0 0 0 0 0 0 6 -> 12; 12 % 11 = 1; 11 - 1 = 10 -> never issued, whatever the last digit
VALID = "9434765919"
VALID_CHECK_ZERO = "9434765870"
VALID_OTHER = "4010232137"


def reference_check(digits: str) -> bool:
    """The algorithm again, written independently for the property below."""
    if re.fullmatch(r"[0-9]{10}", digits) is None:
        return False
    remainder = sum(int(digits[i]) * (10 - i) for i in range(9)) % 11
    check = (11 - remainder) % 11  # 11 -> 0
    return check != 10 and str(check) == digits[9]


def with_check_digit(nine: str) -> str | None:
    for last in "0123456789":
        if reference_check(nine + last):
            return nine + last
    return None


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        # the NHS's own example number
        (VALID, True),
        # check digit 11 -> 0
        (VALID_CHECK_ZERO, True),
        # another, starting with 4
        (VALID_OTHER, True),
        # all nines: 9 * 54 = 486; 486 % 11 = 2; 11 - 2 = 9
        ("9999999999", True),
        # wrong check digit
        ("9434765918", False),
        # wrong check digit where the right one is 0
        ("9434765871", False),
        # check digit would be 10: never issued, whatever the last digit is
        *[("000000006" + str(last), False) for last in range(10)],
        # nine digits
        ("943476591", False),
        # eleven digits
        ("94347659190", False),
        # Arabic-Indic digits spelling 9434765919
        ("٩٤٣٤٧٦٥٩١٩", False),
        # fullwidth digits
        ("９４３４７６５９１９", False),
        # spaced: the caller passes digits only
        ("943 476 5919", False),
        # empty
        ("", False),
        # letters
        ("94347659a9", False),
        # a sign
        ("+943476591", False),
    ],
)
def test_is_nhs_number(digits: str, valid: bool) -> None:
    assert is_nhs_number(digits) is valid
    assert reference_check(digits) is valid  # the table itself is right


@settings(max_examples=500)
@given(st.text("0123456789", min_size=10, max_size=10))
def test_is_nhs_number_matches_the_algorithm(digits: str) -> None:
    assert is_nhs_number(digits) == reference_check(digits)


@given(st.text(max_size=12))
def test_is_nhs_number_never_raises(text: str) -> None:
    assert is_nhs_number(text) == reference_check(text)


def test_each_prefix_has_exactly_one_check_digit_or_none() -> None:
    for n in range(0, 10**9, 99_991):  # about 10 000 prefixes across the whole range
        prefix = f"{n:09d}"
        valid = [d for d in "0123456789" if is_nhs_number(prefix + d)]
        remainder = sum(int(prefix[i]) * (10 - i) for i in range(9)) % 11
        assert len(valid) == (0 if remainder == 1 else 1), prefix


# -- the keyed hash ----------------------------------------------------------------------------


def test_pseudonym_is_a_truncated_hmac_sha256() -> None:
    hexdigest = hmac.new(KEY, VALID.encode(), hashlib.sha256).hexdigest()[:32]
    expected = "nhs-" + hexdigest.translate(str.maketrans("0123456789abcdef", "abcdefghijklmnop"))
    assert PSEUDONYMS.pseudonym(VALID) == expected
    assert PSEUDONYM.fullmatch(expected)


def test_same_key_same_pseudonym_other_key_other_pseudonym() -> None:
    assert Pseudonymiser(KEY).pseudonym(VALID) == Pseudonymiser(KEY).pseudonym(VALID)
    assert Pseudonymiser(KEY).pseudonym(VALID) != Pseudonymiser(OTHER_KEY).pseudonym(VALID)
    assert PSEUDONYMS.pseudonym(VALID) != PSEUDONYMS.pseudonym(VALID_OTHER)


def test_without_a_key_a_random_one_is_drawn() -> None:
    first, second = Pseudonymiser(), Pseudonymiser()
    assert first.ephemeral
    assert not Pseudonymiser(KEY).ephemeral
    assert first.pseudonym(VALID) == first.pseudonym(VALID)
    assert first.pseudonym(VALID) != second.pseudonym(VALID)


nhs_numbers = (
    st.text("0123456789", min_size=9, max_size=9).map(with_check_digit).filter(bool).map(str)
)


@settings(max_examples=300)
@given(nhs_numbers, st.binary(min_size=1, max_size=40))
def test_pseudonym_never_contains_the_number(number: str, key: bytes) -> None:
    pseudonym = Pseudonymiser(key).pseudonym(number)
    assert PSEUDONYM.fullmatch(pseudonym)
    assert number not in pseudonym
    assert number[:9] not in pseudonym


# -- scrub -------------------------------------------------------------------------------------


P = PSEUDONYMS.pseudonym(VALID)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain
        (f"NHS number {VALID}.", f"NHS number {P}."),
        # 3-3-4 with spaces
        ("NHS no 943 476 5919", f"NHS no {P}"),
        # 3-3-4 with hyphens
        ("943-476-5919", P),
        # mixed separators
        ("943 476-5919", P),
        # glued to letters
        (f"NHS{VALID}x", f"NHS{P}x"),
        # the whole value
        (VALID, P),
        # two in one string
        (
            f"{VALID} and {VALID_OTHER}",
            f"{P} and {PSEUDONYMS.pseudonym(VALID_OTHER)}",
        ),
        # check digit 0
        (VALID_CHECK_ZERO, PSEUDONYMS.pseudonym(VALID_CHECK_ZERO)),
        # an invalid 10-digit number (a phone number, a referral id) is left alone
        ("call 9434765918", "call 9434765918"),
        # a longer digit run containing a valid number is not an NHS number
        ("1" + VALID, "1" + VALID),
        # ... at either end
        (VALID + "0", VALID + "0"),
        # a digit run of 20
        (VALID * 2, VALID * 2),
        # grouped 4-3-3 is not the NHS layout
        ("9434 765 919", "9434 765 919"),
        # two spaces between groups
        ("943  476 5919", "943  476 5919"),
        # Arabic-Indic digits: digits of any script count (tests/unit/test_nhs_number_rule.py)
        ("٩٤٣٤٧٦٥٩١٩", P),
        # nothing to do
        ("no numbers here", "no numbers here"),
    ],
)
def test_scrub(text: str, expected: str) -> None:
    assert PSEUDONYMS.scrub(text) == expected


no_digits = st.text(st.characters(exclude_categories=["Nd"]), max_size=20)


@settings(max_examples=300)
@given(nhs_numbers, st.sampled_from(["", " ", "-"]), no_digits, no_digits)
def test_scrubbed_text_never_holds_the_number(
    number: str, separator: str, before: str, after: str
) -> None:
    written = separator.join([number[:3], number[3:6], number[6:]])
    text = f"{before} {written} {after}"
    scrubbed = PSEUDONYMS.scrub(text)
    assert PSEUDONYMS.pseudonym(number) in scrubbed
    assert written not in scrubbed


@settings(max_examples=500)
@given(
    st.lists(
        st.one_of(
            nhs_numbers,
            st.text("0123456789 -", max_size=14),
            st.text(st.characters(), max_size=6),
            st.sampled_from(["\uff19", "\u0669", "e", "a", "-", " "]),  # other digits, too
        ),
        max_size=8,
    )
)
def test_scrub_matches_the_full_pattern_whatever_the_text(parts: list[str]) -> None:
    # `scrub` returns ASCII text with no candidate without running CANDIDATE: the same
    # answer as the full substitution over the folded text, always.
    from streams.pseudonym import CANDIDATE, fold

    text = "".join(parts)
    folded = fold(text)
    expected, last = [], 0
    for match in CANDIDATE.finditer(folded):
        digits = "".join(g for g in match.groups() if g)
        if is_nhs_number(digits):
            expected += [text[last : match.start()], PSEUDONYMS.pseudonym(digits)]
            last = match.end()
    assert PSEUDONYMS.scrub(text) == "".join(expected) + text[last:]


@settings(max_examples=300)
@given(
    nhs_numbers,
    st.integers(min_value=0, max_value=8),  # digits before the point, less one
    st.sampled_from(["e", "E", "e+", "E+"]),
    st.sampled_from(['{"a":%s}', '{"a": %s}', "[%s]", "[1,%s]", "[1,\n%s]", '{"a":-%s}']),
)
def test_an_nhs_number_written_with_an_exponent_is_always_flagged(
    number: str, point: int, marker: str, where: str
) -> None:
    # 9434765919 as 9.434765919e9 or 943.4765919E+7: no 10-digit run in the text, so the
    # pre-check must send any JSON number with an exponent to the full scrub.
    assume(not number.startswith("0"))  # a JSON number cannot keep a leading zero
    whole = number[: point + 1]
    spelt = f"{whole}.{number[point + 1 :]}{marker}{len(number) - len(whole)}"
    text = where % spelt
    assert may_contain(text.encode())
    assert PSEUDONYMS.pseudonym(number) in json.dumps(PSEUDONYMS.scrub_tree(json.loads(text)))


def test_hex_ids_with_digit_e_digit_are_not_taken_for_numbers() -> None:
    assert not may_contain(b'{"patient_ref":"p-b8e3c71f6bf08d62","x":"a1e5"}')
    assert may_contain(b'{"patient_ref":"p-b8e3c71f6bf08d62","x":1e5}')


def test_scrub_tree_scrubs_nested_values_and_keys() -> None:
    tree: dict[str, Any] = {
        "patient_ref": VALID,
        "notes": ["seen", {"nhs": "943 476 5919", "n": 3, "ok": True, "none": None}],
        f"by-{VALID}": {"deeper": [[f"x {VALID_OTHER}"]]},
        "float": 1.5,
        "number": 9434765918,  # not a valid NHS number: left as it is
    }
    original = json.dumps(tree)
    scrubbed = PSEUDONYMS.scrub_tree(tree)
    assert scrubbed == {
        "patient_ref": P,
        "notes": ["seen", {"nhs": P, "n": 3, "ok": True, "none": None}],
        f"by-{P}": {"deeper": [[f"x {PSEUDONYMS.pseudonym(VALID_OTHER)}"]]},
        "float": 1.5,
        "number": 9434765918,
    }
    assert json.dumps(tree) == original  # a new value; the input is not modified


def test_scrub_tree_scrubs_an_nhs_number_sent_as_a_json_number() -> None:
    scrubbed = PSEUDONYMS.scrub_tree({"nhs_number": int(VALID), "list": [int(VALID_OTHER)]})
    assert scrubbed == {"nhs_number": P, "list": [PSEUDONYMS.pseudonym(VALID_OTHER)]}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # plain digits, as bytes and as text
        (VALID.encode(), True),
        (VALID, True),
        # grouped
        (b"943 476 5919", True),
        # any \u escape could spell digits
        (b'"\\u0039"', True),
        ('"\\u0041"', True),
        # nine digits and no escapes
        (b'{"a": "943476591"}', False),
        # no digits
        ("plain text", False),
    ],
)
def test_may_contain(raw: bytes | str, expected: bool) -> None:
    assert may_contain(raw) is expected


# -- the codec never lets one through ----------------------------------------------------------

CODEC = Codec(Pseudonymiser(KEY))


def received(**extra: Any) -> dict[str, Any]:
    data = {"referral_id": "R-1", "pathway": "ucr_2h", "provider": "RY7", "icb": "QYG"}
    return {
        "specversion": "1.0",
        "id": "ev-1",
        "source": "urn:nhs:ods:RYX",
        "type": "referral.received",
        "time": "2026-02-03T14:00:00Z",
        "data": {**data, **extra},
    }


def _clear(text: str) -> bool:
    """Does `text` hold the test NHS number in clear, in any of its written forms?"""
    return any(form in text for form in (VALID, "943 476 5919", "943-476-5919"))


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        # patient_ref is the field sources misuse most
        (received(patient_ref=VALID), ("data", "patient_ref")),
        # in free text, spaced
        (received(condition="fall; NHS no 943 476 5919"), ("data", "condition")),
        # an unknown extra field in data, hyphenated
        (received(nhs_no="943-476-5919"), ("data", "nhs_no")),
        # an unknown extra field at the top level
        ({**received(), "subject": f"patient/{VALID}"}, ("subject",)),
        # an unknown extra field holding a JSON number
        ({**received(), "nhs_number": int(VALID)}, ("nhs_number",)),
        # nested in an unknown extra object
        ({**received(), "ext": {"ids": [VALID]}}, ("ext", "ids", 0)),
    ],
)
def test_decode_document_scrubs(doc: dict[str, Any], where: tuple[str | int, ...]) -> None:
    result = decode_document(CODEC, json.dumps(doc).encode())
    assert not isinstance(result, Rejection), result
    _, document = result
    value: Any = document
    for step in where:
        value = value[step]
    assert isinstance(value, str)
    assert P in value
    assert not _clear(json.dumps(document))


def test_a_key_holding_the_number_is_scrubbed() -> None:
    doc = {**received(), VALID: "x"}
    result = decode_document(CODEC, json.dumps(doc))
    assert not isinstance(result, Rejection)
    assert P in result[1]
    assert not _clear(json.dumps(result[1]))


def test_escaped_digits_are_still_caught() -> None:
    # "\u0039434765919" is JSON for "9434765919"; so is every digit escaped.
    escaped = "\\u0039434765919"
    all_escaped = "".join(f"\\u{ord(d):04x}" for d in VALID)
    for spelled in (escaped, all_escaped):
        raw = json.dumps(received()).replace('"R-1"', '"R-1", "patient_ref": "' + spelled + '"')
        result = decode_document(CODEC, raw.encode())
        assert not isinstance(result, Rejection), result
        assert result[1]["data"]["patient_ref"] == P


def test_an_event_without_a_number_is_left_as_sent() -> None:
    doc = received(patient_ref="p-1234", condition="falls")
    result = decode_document(CODEC, json.dumps(doc))
    assert not isinstance(result, Rejection)
    assert result[1] == doc


@pytest.mark.parametrize(
    "raw",
    [
        # a bad pathway, with the number in patient_ref
        json.dumps(received(pathway="ucr_4h", patient_ref=VALID)).encode(),
        # not JSON at all, number spaced
        b"garbage NHS 943 476 5919 garbage",
        # broken JSON with the number hyphenated
        b'{"patient_ref": "943-476-5919", ',
        # bad UTF-8 next to the number
        b'{"x": "\xff' + VALID.encode() + b'"}',
        # the number spelled with JSON escapes in a bad event
        json.dumps(received(pathway="nope"))
        .replace('"R-1"', '"R-1", "p": "\\u0039434765919"')
        .encode(),
        # every digit escaped
        b'{"p": "' + "".join(f"\\u{ord(d):04x}" for d in VALID).encode() + b'"',
        # a UTF-16 message (rejected: the contract says UTF-8) carrying one
        json.dumps(received(patient_ref=VALID)).encode("utf-16-le"),
        # an escaped character right before the number: its hex digits ran into it ("a0" then
        # "9434765919") and hid it (found by the generated corpus of test_hostile_input)
        b'{"patient_ref": "NHS\\u00a0' + VALID.encode() + b'", ',
        # the same with a control character and the number spaced
        b'{"patient_ref": "\\u0001943 476 5919", ',
        # and with a byte that is not UTF-8 (shown as \x80)
        b'{"patient_ref": "\x80' + VALID.encode() + b'", ',
    ],
)
def test_reject_text_is_scrubbed(raw: bytes) -> None:
    result = CODEC.decode(raw)
    assert isinstance(result, Rejection), result
    text = CODEC.scrub_text(raw)
    assert P in text
    assert not _clear(text)
    assert "\\u0039" not in text


def test_reject_text_is_otherwise_the_original() -> None:
    raw = json.dumps(received(pathway="nope", patient_ref="p-1")).encode()
    assert CODEC.scrub_text(raw) == raw.decode()
    assert CODEC.scrub_text(b"bad \xff byte") == "bad \\xff byte"


def test_replay_rejects_file_holds_no_number() -> None:
    lines = [
        json.dumps(received(patient_ref=VALID)),  # accepted
        json.dumps({**received(pathway="ucr_4h", patient_ref=VALID), "id": "ev-2"}),  # bad value
        f"not json {VALID}",
    ]
    rejects = io.StringIO()
    result = replay(io.BytesIO("\n".join(lines).encode()), codec=CODEC, rejects=rejects)
    assert (result.accepted, result.rejected) == (1, 2)
    written = rejects.getvalue()
    assert len(written.splitlines()) == 2
    assert P in written
    assert not _clear(written)


def test_scrubbing_is_idempotent() -> None:
    """A pseudonym holds no digits, so scrubbing scrubbed text changes nothing."""
    once = PSEUDONYMS.scrub(f"patient {VALID} and 943 476 5870")
    assert PSEUDONYMS.scrub(once) == once
    assert not any(ch.isdigit() for ch in PSEUDONYMS.pseudonym(VALID))
