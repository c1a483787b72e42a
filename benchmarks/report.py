"""How every benchmark reports: a Markdown table on standard output, optionally JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table (cells as given; `|` in a cell is escaped)."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *map(line, rows)])


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def report(result: dict[str, Any], json_path: Path | None = None) -> None:
    """One row per key of `result` on standard output; the same as JSON to `json_path`."""
    print(markdown_table(("measure", "value"), list(result.items())))
    if json_path is not None:
        write_json(result, json_path)
