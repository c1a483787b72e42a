"""Worker logs: one JSON object per line (default) or plain text, on standard error.

A JSON line carries `time` (RFC 3339, UTC, milliseconds), `level`, `logger`, `message`, then
any `extra=` fields of the call (sorted), and `exception` (the formatted traceback) when there
is one. Log collectors (Loki, CloudWatch, Elastic) index these fields without a parser.

Referral identifiers are patient-adjacent data: they may be logged at DEBUG only. The
convention is to pass them as the extra fields in `REFERRAL_FIELDS`; the formatter drops those
fields from any record above DEBUG, so a careless `log.info(..., extra={"referral_id": r})`
leaks nothing. (Message *text* is not scanned: no INFO-or-above call in `consumers/` puts a
referral id in its message; `tests/integration/test_worker_ops.py` checks the worker's
output.)
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = ["FORMATS", "REFERRAL_FIELDS", "JsonFormatter", "configure_logging"]

FORMATS: Final = ("json", "text")
#: Extra fields that may hold referral identifiers: kept at DEBUG, dropped above it.
REFERRAL_FIELDS: Final = frozenset({"referral_id", "referral_ids"})
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in sorted(vars(record).keys() - _STANDARD):
            if key in REFERRAL_FIELDS and record.levelno > logging.DEBUG:
                continue
            if key not in entry:
                entry[key] = vars(record)[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


LIBRARY_LOGGERS = ("aiokafka", "kafka", "faust", "mode", "psycopg", "aiohttp")


def configure_logging(level: str, fmt: str = "json", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers by one writing `fmt` lines to `stream` (stderr).

    Raises `ValueError` for an unknown level or format (the CLI turns it into exit code 2).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (expected one of {', '.join(FORMATS)})")
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    # Client libraries log message keys and payloads at DEBUG (aiokafka prints produce
    # requests): they never go below INFO, so DEBUG shows crisiswatch's own detail only.
    for library in LIBRARY_LOGGERS:
        logging.getLogger(library).setLevel(max(number, logging.INFO))
