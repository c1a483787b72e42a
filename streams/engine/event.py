"""Engine-side referral events: already validated, pseudonymised, region-resolved.

The codec (`streams.codec`) turns CloudEvents JSON into these; the engine never sees JSON.
One flat slotted class for all four types keeps decoding and dispatch cheap (millions of
events a replay); fields that do not belong to a type are None.

Times are whole epoch seconds (UTC). R3 measures waits in whole seconds; sources record
contacts to the second, and the codec truncates any fraction so that a wait and a live
threshold are judged on the same integer scale.
"""

from __future__ import annotations

from typing import Final, NamedTuple

RECEIVED: Final = "referral.received"
TRIAGED: Final = "referral.triaged"
CONTACT: Final = "referral.contact"
CANCELLED: Final = "referral.cancelled"
EVENT_TYPES: Final = (RECEIVED, TRIAGED, CONTACT, CANCELLED)

UCR_2H: Final = "ucr_2h"
REABLEMENT_2D: Final = "reablement_2d"
PATHWAYS: Final = (UCR_2H, REABLEMENT_2D)

FACE_TO_FACE: Final = "face_to_face"
CONTACT_MODES: Final = (FACE_TO_FACE, "telephone", "video")

EXCLUSION_REASONS: Final = ("patient_requested_later", "clinically_appropriate_later", "other")
CANCEL_REASONS: Final = ("duplicate", "rejected", "not_appropriate", "withdrawn")

UNKNOWN: Final = "unknown"


class Event(NamedTuple):
    """One accepted referral event (a NamedTuple: immutable, and ~3x cheaper to build than a
    frozen dataclass, which matters at a million events a replay)."""

    id: str
    type: str
    time: int  # epoch seconds, UTC, when the thing happened (not when it was sent)
    referral_id: str
    # referral.received (pathway also on a re-triage)
    pathway: str | None = None
    provider: str | None = None
    icb: str | None = None
    region: str | None = None
    # referral.triaged: None means the triage said nothing about the standard
    subject_to_standard: bool | None = None
    exclusion_reason: str | None = None
    # referral.contact
    contact_id: str | None = None
    mode: str | None = None
    attended: bool | None = None
    # referral.cancelled
    reason: str | None = None

    @property
    def stops_clock(self) -> bool:
        """R2: only an attended face-to-face contact stops a clock."""
        return self.type == CONTACT and self.mode == FACE_TO_FACE and self.attended is True
