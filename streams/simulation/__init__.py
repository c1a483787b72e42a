"""Synthetic referral events shaped like England's 2024-25 urgent community response.

The simulator writes CloudEvents 1.0 JSON lines (CONTRACT section 1) for made-up referrals
whose volumes, performance and recording habits look like the published national figures in
``streams/data`` (NHS England 2-hour UCR workbook, 2024-25). No patient-level data is used or
produced: every identifier is synthetic.

Model
-----
* **Arrivals.** Referral receipts form a Poisson process in *event time* (exponential gaps),
  with a piecewise-constant rate per UTC hour: England's published type-05 rate for that
  calendar month (``england_monthly_2024_25.csv``), times a weekday/weekend factor and a
  time-of-day profile (busy 08:00-20:00 Europe/London, quiet at night), both normalised to
  mean 1 so the long-run mean is unchanged. The total rate is scaled up so that the referrals
  which end up as type-05 clocks (UCR, subject to the standard, not cancelled) arrive at the
  published rate; reablement, excluded and cancelled referrals come on top. ``speed``
  multiplies that rate (speed 1 = England in real time, about 70,000 type-05 referrals a
  month, roughly 100 an hour).
* **Geography.** Each receipt picks an ICB in proportion to its published mean monthly
  referrals (``icbs.csv``), then one of the ICB's 2-6 synthetic providers. Provider codes
  ("R" + two alphanumerics) are derived from the ICB code alone, so they are the same in every
  run whatever the seed. About 3% of referrals omit ``icb`` and ``region`` (they count under
  region ``unknown``), most omit ``region`` (derived from ``icb`` downstream), some send it.
* **Pathway and triage.** ``reablement_share`` of referrals arrive on the 2-day reablement
  pathway, the rest on 2-hour UCR. About 75% get a ``referral.triaged`` event minutes after
  receipt; 3% of UCR referrals are triaged as not subject to the standard (type 07, with an
  exclusion reason), 2% are moved to the other pathway. 2.5% are cancelled, usually soon after
  receipt, and then get no contacts.
* **Response.** For a UCR referral the first *attended face-to-face* contact (the clock stop,
  STANDARDS R2) comes 10 minutes plus a lognormal delay after receipt. The lognormal's median
  is solved per provider so that the share within 2 hours equals the provider's target; the
  targets of an ICB's providers scatter around the ICB's published mean monthly % and average
  back to it, weighted by volume. Reablement visits fall on a local day 0-5 days after receipt
  (80% within two days, STANDARDS R5) between 08:00 and 18:00. Around the stop come
  telephone/video contacts (often before the visit), some did-not-attend visits and follow-ups,
  about 2.3 contacts per referral in all, like the published contacts/referrals ratio. About
  1% of referrals are never visited (their clocks stay open and breach).
* **Recording.** Each event has an *arrival* time (when the source system sends it) at or after
  its event ``time``. Receipts, triages and cancellations are sent within seconds to minutes;
  most contacts within minutes, but ``late_contact_share`` of them 30 minutes to several
  hours late, so live monitors see provisional breaches later withdrawn (STANDARDS R7).
* **Noise.** ``duplicate_rate`` of events are sent twice (same bytes, same id, a little
  later); ``bad_rate`` of all lines are deliberately invalid (not JSON, unknown type, missing
  field, bad time, wrong value types). ``nhs_number_rate`` of referrals carry a valid-looking
  NHS number as ``patient_ref`` (from the 999 range, which is never issued to patients) so that
  downstream scrubbing is exercised. Times are RFC 3339 UTC with ``Z`` in whole seconds, a few
  with the ``+01:00`` offset during British Summer Time.

Output is produced lazily in arrival order. Events of a referral are planned when it is
received and wait in a heap keyed by arrival time; anything that arrives no later than the
next receipt can be emitted, since every later event arrives after its own referral's receipt.
Memory is therefore bounded by rate x the span of one referral's events (a few days), not by
the duration. The same config gives byte-identical output.
"""

from streams.simulation.generator import (
    SimulatedLine,
    simulate,
    valid_nhs_number,
    write_ndjson,
)
from streams.simulation.profile import (
    IcbProfile,
    ProviderProfile,
    SimulationConfig,
    icb_profiles,
)

__all__ = [
    "IcbProfile",
    "ProviderProfile",
    "SimulatedLine",
    "SimulationConfig",
    "icb_profiles",
    "simulate",
    "valid_nhs_number",
    "write_ndjson",
]
