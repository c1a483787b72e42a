"""Render the dashboards deterministically and write them as files.

    crisiswatch dashboards build --out deploy/grafana/dashboards

One file per dashboard, `<uid>.json`: keys sorted, two-space indent, a final newline, no
timestamps; `tests/integration/test_dashboards.py` rebuilds and compares with the committed files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dashboards import compliance, operations, pipeline
from dashboards.model import Dashboard
from streams.atomic import write_text_atomic


def dashboards() -> tuple[Dashboard, ...]:
    """Every dashboard, in a fixed order."""
    return (operations.dashboard(), compliance.dashboard(), pipeline.dashboard())


def render(dashboard: Dashboard | dict[str, Any]) -> str:
    data = dashboard.to_dict() if isinstance(dashboard, Dashboard) else dashboard
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def files() -> dict[str, str]:
    """File name -> contents of every dashboard."""
    return {f"{d.uid}.json": render(d) for d in dashboards()}


def write(out: Path) -> list[Path]:
    """Write every dashboard into `out` (created if missing), each via a temporary sibling and
    a rename; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files().items():
        path = out / name
        write_text_atomic(path, text)
        written.append(path)
    return written
