"""Where a command's text output goes: standard output, or a file written atomically."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from streams.atomic import write_atomic
from streams.errors import InputError

__all__ = ["write_output"]


def write_output(out: Path | None, write: Callable[[IO[str]], object]) -> None:
    """`write` to standard output when `out` is None or `-`, else to `out` atomically (a
    reader never sees half a file); `InputError` naming the file if it cannot be written."""
    if out is None or str(out) == "-":
        write(sys.stdout)
        return
    try:
        write_atomic(out, write)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
