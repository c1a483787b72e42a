"""`crisiswatch replay` (CONTRACT sections 2-3): the golden file, options, errors and order.

The command is run as a subprocess of the installed entry point, as an operator runs it;
`streams.replay.replay` is called directly where many runs are needed.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codec import Codec
from streams.pseudonym import Pseudonymiser
from streams.replay import replay, write_outcomes
from tests.support import crisiswatch

SHARED = Path(__file__).resolve().parents[3] / "shared"
GOLDEN = SHARED / "golden"
EVENTS = GOLDEN / "events.ndjson"
EXPECTED = GOLDEN / "expected_outcomes.csv"
BAD_LINE = 6  # the one line of the golden file that is not JSON

HEADER = (
    "referral_id,pathway,clock_type,region,icb,provider,clock_start,clock_stop,wait_seconds,"
    "state,exclusion_reason"
)


def golden(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"golden file missing: {path} (the shared/ folder sits next to the repo)")
    return path


def run(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CRISISWATCH_")}
    environment.update(env or {})
    return subprocess.run(
        [crisiswatch(), *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, a single 'crisiswatch: ...' line on stderr, no traceback, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crisiswatch:"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    return lines[0]


def expected_csv() -> str:
    return golden(EXPECTED).read_bytes().decode("utf-8")


def rows(csv_text: str) -> dict[str, dict[str, str]]:
    lines = csv_text.splitlines()
    assert lines[0] == HEADER
    names = HEADER.split(",")
    return {
        line.split(",")[0]: dict(zip(names, line.split(","), strict=True)) for line in lines[1:]
    }


# -- the golden file ---------------------------------------------------------------------------


def test_golden_replay_matches_expected_outcomes_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "outcomes.csv"
    result = run("replay", golden(EVENTS), "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == golden(EXPECTED).read_bytes()
    assert result.stdout == ""
    # The summary: one line on stderr.
    summary = result.stderr.splitlines()
    assert len(summary) == 1, result.stderr
    assert "1 rejected" in summary[0]

    rejects = tmp_path / "outcomes.rejects.ndjson"  # default: next to --out
    records = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    original = golden(EVENTS).read_text(encoding="utf-8").splitlines()[BAD_LINE - 1]
    assert len(records) == 1
    assert records[0]["line"] == BAD_LINE
    assert records[0]["reason"] == "invalid_json"
    assert records[0]["text"] == original == "this line is not JSON"
    assert records[0]["field"] is None
    assert records[0]["detail"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outcomes.csv", "outcomes.rejects.ndjson"]


def test_explicit_rejects_path(tmp_path: Path) -> None:
    out, rejects = tmp_path / "a" / "o.csv", tmp_path / "r" / "bad.ndjson"
    out.parent.mkdir()
    rejects.parent.mkdir()
    result = run("replay", golden(EVENTS), "--out", out, "--rejects", rejects, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet
    assert not (out.parent / "o.rejects.ndjson").exists()
    records = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["reason"]) for r in records] == [(BAD_LINE, "invalid_json")]
    assert out.read_bytes() == golden(EXPECTED).read_bytes()


def test_outcomes_go_to_stdout_without_out(tmp_path: Path) -> None:
    result = subprocess.run(
        [crisiswatch(), "replay", str(golden(EVENTS)), "-q"],
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CRISISWATCH_")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == golden(EXPECTED).read_bytes()
    assert result.stderr == b""
    assert list(tmp_path.iterdir()) == []  # no rejects file without --out or --rejects


def test_golden_counts_from_the_library() -> None:
    lines = golden(EVENTS).read_bytes().splitlines()
    ids = [json.loads(line)["id"] for n, line in enumerate(lines, 1) if n != BAD_LINE]
    rejects = io.StringIO()
    with golden(EVENTS).open("rb") as source:
        result = replay(source, codec=Codec(), rejects=rejects)
    assert result.lines == len(lines)
    assert result.rejected == 1
    assert result.rejections == {"invalid_json": 1}
    assert result.accepted == len(set(ids))
    assert result.duplicates == len(ids) - len(set(ids)) > 0  # the file has exact duplicates
    assert len(result.outcomes) == len(expected_csv().splitlines()) - 1
    assert len(rejects.getvalue().splitlines()) == 1


# -- a tiny file -------------------------------------------------------------------------------

T = "2026-02-03T14:00:00Z"


def at(minutes: int) -> str:
    """T plus `minutes`, as RFC 3339 UTC."""
    hours, rest = divmod(14 * 60 + minutes, 60)
    days, hours = divmod(hours, 24)
    return f"2026-02-{3 + days:02d}T{hours:02d}:{rest:02d}:00Z"


def event(event_id: str, kind: str, minutes: int, **data: Any) -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "urn:nhs:ods:RYX",
            "type": kind,
            "time": at(minutes),
            "data": data,
        }
    )


def received(event_id: str, ref: str, minutes: int, pathway: str = "ucr_2h") -> str:
    return event(
        event_id,
        "referral.received",
        minutes,
        referral_id=ref,
        pathway=pathway,
        provider="RY7",
        icb="QYG",
    )


def contact(event_id: str, ref: str, minutes: int, mode: str = "face_to_face") -> str:
    return event(
        event_id,
        "referral.contact",
        minutes,
        referral_id=ref,
        contact_id=f"c-{event_id}",
        mode=mode,
        attended=True,
    )


def triaged(event_id: str, ref: str, minutes: int) -> str:
    return event(event_id, "referral.triaged", minutes, referral_id=ref, subject_to_standard=True)


def write(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def replay_rows(path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = path.with_suffix(".csv")
    result = run("replay", path, "--out", out, *args, env=env)
    assert result.returncode == 0, result.stderr
    return rows(out.read_text(encoding="utf-8"))


def test_tiny_file_met_without_as_of(tmp_path: Path) -> None:
    events = write(tmp_path / "e.ndjson", [received("e1", "R1", 0), contact("e2", "R1", 100)])
    row = replay_rows(events)["R1"]
    assert row["state"] == "met"
    assert (row["clock_start"], row["clock_stop"], row["wait_seconds"]) == (T, at(100), "6000")


@pytest.mark.parametrize(
    ("as_of", "state"),
    [
        # 89 minutes: still waiting
        (at(89), "waiting"),
        # 95 minutes: at risk (from 90)
        (at(95), "at_risk"),
        # exactly 120:00 is still at risk, not breached
        (at(120), "at_risk"),
        # 121 minutes: breached
        (at(121), "breached"),
        # the same instant written with an offset
        ("2026-02-03T16:35:00+01:00", "at_risk"),
        # lowercase t and z
        (at(95).lower(), "at_risk"),
    ],
)
def test_as_of_judges_open_clocks_and_leaves_out_later_events(
    tmp_path: Path, as_of: str, state: str
) -> None:
    events = write(
        tmp_path / "e.ndjson",
        [
            received("e1", "R1", 0),
            contact("e2", "R1", 130),  # after every --as-of above: left out
            received("e3", "R2", 200),  # a referral the as-of instant has not seen yet
        ],
    )
    table = replay_rows(events, "--as-of", as_of)
    assert list(table) == ["R1"]
    row = table["R1"]
    assert row["state"] == state
    assert (row["clock_start"], row["clock_stop"], row["wait_seconds"]) == (T, "", "")


def test_without_as_of_open_clocks_are_judged_at_the_last_event(tmp_path: Path) -> None:
    events = write(
        tmp_path / "e.ndjson",
        [received("e1", "R1", 0), received("e2", "R2", 95), received("e3", "R3", 121)],
    )
    table = replay_rows(events)
    # Judged at T+121: R1 121 min, R2 26 min, R3 0 min.
    assert [table[r]["state"] for r in ("R1", "R2", "R3")] == ["breached", "waiting", "waiting"]
    assert replay_rows(events, "--as-of", at(96))["R1"]["state"] == "at_risk"


@pytest.mark.parametrize(
    "as_of",
    [
        # no offset
        "2026-02-03T15:35:00",
        # a date only
        "2026-02-03",
        # not a time
        "soon",
        # an impossible offset
        "2026-02-03T15:35:00+25:00",
    ],
)
def test_bad_as_of_is_a_usage_error(tmp_path: Path, as_of: str) -> None:
    events = write(tmp_path / "e.ndjson", [received("e1", "R1", 0)])
    out = tmp_path / "o.csv"
    result = run("replay", events, "--out", out, "--as-of", as_of)
    assert_one_line_error(result, "--as-of")
    assert not out.exists()


def test_start_mode_triaged_starts_the_clock_at_triage(tmp_path: Path) -> None:
    # Received at T, triaged at T+30, visited at T+140: 140 minutes from receipt (not met),
    # 110 minutes from triage (met). STANDARDS R1: a setting moves the start to triage.
    events = write(
        tmp_path / "e.ndjson",
        [received("e1", "R1", 0), triaged("e2", "R1", 30), contact("e3", "R1", 140)],
    )
    default = replay_rows(events)["R1"]
    assert (default["clock_start"], default["wait_seconds"], default["state"]) == (
        T,
        "8400",
        "not_met",
    )
    moved = replay_rows(events, env={"CRISISWATCH_START_MODE": "triaged"})["R1"]
    assert (moved["clock_start"], moved["clock_stop"], moved["wait_seconds"], moved["state"]) == (
        at(30),
        at(140),
        "6600",
        "met",
    )


def test_line_numbers_count_blank_lines_and_crlf_is_accepted(tmp_path: Path) -> None:
    events = tmp_path / "e.ndjson"
    events.write_bytes(
        (
            received("e1", "R1", 0) + "\r\n\r\n" + "{broken\r\n" + contact("e2", "R1", 60) + "\r\n"
        ).encode()
    )
    out = tmp_path / "o.csv"
    result = run("replay", events, "--out", out)
    assert result.returncode == 0, result.stderr
    assert rows(out.read_text(encoding="utf-8"))["R1"]["state"] == "met"
    lines = (tmp_path / "o.rejects.ndjson").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    assert len(lines) == 1
    assert (record["line"], record["reason"], record["text"]) == (3, "invalid_json", "{broken")


# -- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    result = run("replay", tmp_path / "nope.ndjson", "--out", tmp_path / "o.csv")
    assert_one_line_error(result, "nope.ndjson")
    assert not (tmp_path / "o.csv").exists()


def test_a_directory_is_not_an_event_file(tmp_path: Path) -> None:
    assert_one_line_error(run("replay", tmp_path, "--out", tmp_path / "o.csv"))


def test_unknown_option() -> None:
    assert_one_line_error(run("replay", golden(EVENTS), "--frobnicate"), "--frobnicate")


def test_unknown_command() -> None:
    assert_one_line_error(run("frobnicate"), "frobnicate")


def test_missing_argument() -> None:
    assert_one_line_error(run("replay"), "EVENTS")


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["replay", "--help"], ["replay", "-h"]])
def test_help(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: crisiswatch")
    assert result.stderr == ""
    if args[0] == "replay":
        for option in ("--out", "--rejects", "--as-of", "CRISISWATCH_START_MODE"):
            assert option in result.stdout
    else:
        assert "replay" in result.stdout


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert "0.1.0" in result.stdout


def test_unwritable_out_in_proc(tmp_path: Path) -> None:
    # /proc refuses new files; the default rejects file next to it fails first.
    assert_one_line_error(run("replay", golden(EVENTS), "--out", "/proc/x.csv"), "cannot write")


def test_out_under_a_missing_directory(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "o.csv"
    rejects = tmp_path / "r.ndjson"
    result = run("replay", golden(EVENTS), "--out", out, "--rejects", rejects, "-q")
    assert_one_line_error(result, "cannot write", str(out))
    assert not out.parent.exists()


def test_rejects_under_a_missing_directory(tmp_path: Path) -> None:
    rejects = tmp_path / "missing" / "r.ndjson"
    result = run("replay", golden(EVENTS), "--out", tmp_path / "o.csv", "--rejects", rejects)
    assert_one_line_error(result, "cannot write", str(rejects))


@pytest.mark.parametrize(
    ("env", "word"),
    [
        # a time zone that does not exist
        ({"CRISISWATCH_TIMEZONE": "Mars/Base"}, "Mars/Base"),
        # a start mode that does not exist
        ({"CRISISWATCH_START_MODE": "whenever"}, "CRISISWATCH_START_MODE"),
        # a limit that is not a number
        ({"CRISISWATCH_UCR_LIMIT_SECONDS": "two hours"}, "CRISISWATCH_UCR_LIMIT_SECONDS"),
        # a pseudonym key too short to be a secret
        ({"CRISISWATCH_PSEUDONYM_KEY": "short"}, "pseudonym key"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, env: dict[str, str], word: str) -> None:
    out = tmp_path / "o.csv"
    result = run("replay", golden(EVENTS), "--out", out, env=env)
    assert_one_line_error(result, word)
    assert not out.exists()


def test_debug_env_does_not_change_usage_errors() -> None:
    result = run("replay", "--frobnicate", env={"CRISISWATCH_DEBUG": "1"})
    assert_one_line_error(result)


# -- order independence ------------------------------------------------------------------------


def replay_csv(lines: Sequence[bytes]) -> tuple[str, int]:
    """Outcomes CSV text (as the command writes it) and the rejected count."""
    result = replay(io.BytesIO(b"\n".join(lines) + b"\n"), codec=Codec(Pseudonymiser(b"k" * 16)))
    out = io.StringIO(newline="")
    write_outcomes(result.outcomes, out)
    return out.getvalue(), result.rejected


def shuffled_with_duplicates(lines: list[bytes], rng: random.Random) -> list[bytes]:
    copies = rng.sample(lines, k=len(lines) // 10)  # ~10% of lines sent twice
    mixed = lines + copies
    rng.shuffle(mixed)
    return mixed


@pytest.mark.parametrize("seed", [0, 1, 2026])
def test_replay_is_the_same_whatever_the_line_order(seed: int) -> None:
    lines = golden(EVENTS).read_bytes().splitlines()
    mixed = shuffled_with_duplicates(lines, random.Random(seed))
    assert mixed != lines
    text, rejected = replay_csv(mixed)
    assert text == expected_csv()
    assert rejected == mixed.count(lines[BAD_LINE - 1]) >= 1


def test_reversed_file_through_the_command(tmp_path: Path) -> None:
    lines = golden(EVENTS).read_bytes().splitlines()
    events = tmp_path / "reversed.ndjson"
    events.write_bytes(b"\n".join(reversed(lines + lines[:50])) + b"\n")
    out = tmp_path / "o.csv"
    result = run("replay", events, "--out", out, "-q")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == golden(EXPECTED).read_bytes()


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=0, max_value=2**64))
def test_replay_order_property(seed: int) -> None:
    # A seed rather than st.randoms(): 2000 lines of random draws is too big an example.
    lines = golden(EVENTS).read_bytes().splitlines()
    assert replay_csv(shuffled_with_duplicates(lines, random.Random(seed)))[0] == expected_csv()
