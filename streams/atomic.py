"""Atomic file writes: a temporary sibling, then one rename, so a reader never sees half a file.

Every file crisiswatch writes for others to read (replay outcomes, exports, generated rules,
dashboards, simulated events) goes through `write_atomic`. The temporary file is a hidden
sibling in the same directory, so the rename stays within one file system; on any error it
is removed and the previous file, if any, is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

__all__ = ["write_atomic", "write_text_atomic", "write_via"]

T = TypeVar("T")


def write_via(path: Path, write: Callable[[Path], T]) -> T:
    """Call `write(tmp)` on a temporary sibling of `path`, then rename it onto `path`.

    Returns what `write` returned. The temporary file is removed if `write` or the rename
    fails (any exception, KeyboardInterrupt included).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        result = write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def write_atomic(path: Path, write: Callable[[IO[str]], T]) -> T:
    """Open a temporary sibling as UTF-8 text (no newline translation), let `write` fill it,
    then rename it onto `path`."""

    def fill(tmp: Path) -> T:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            return write(handle)

    return write_via(path, fill)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` as UTF-8 with `\\n` line ends, atomically."""
    write_atomic(path, lambda handle: handle.write(text))
