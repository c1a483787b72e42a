"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def crisiswatch() -> str:
    """The installed `crisiswatch` entry point (beside this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / "crisiswatch"
    found = str(beside) if beside.is_file() else shutil.which("crisiswatch")
    if found is None:
        pytest.fail("the crisiswatch entry point is not installed (pip install -e .)")
    return found
