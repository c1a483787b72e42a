"""The pure clock engine: the national rules, once (stdlib only; no I/O, no wall clock).

See `engine.py` for the design; `clock.py` for the rules of one referral.
"""

from streams.engine.clock import Clock
from streams.engine.engine import Change, Engine
from streams.engine.event import Event
from streams.engine.outcome import COLUMNS, Outcome, format_instant
from streams.engine.rules import Rules, StartMode

__all__ = [
    "COLUMNS",
    "Change",
    "Clock",
    "Engine",
    "Event",
    "Outcome",
    "Rules",
    "StartMode",
    "format_instant",
]
