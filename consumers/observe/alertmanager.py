"""Per-referral pages: at-risk and breached clocks posted straight to Alertmanager.

Prometheus series may not carry a referral id (CONTRACT section 4), so the page that names the
referral comes from the worker itself, through Alertmanager's v2 API (`POST /api/v2/alerts`).
Alertmanager then does what it is good at: routing by region and severity, grouping,
inhibition, silences, repeat and resolve notifications.

Which alerts
------------
One alert per referral at a time, derived from its published outcome (`Change.outcome`):

* ``at_risk``: ``ReferralAtRisk``, starting at the at-risk threshold instant;
  severity ``page``.
* ``breached``: ``ReferralBreached``, starting at the breach threshold instant; severity
  ``page`` on the 2-hour pathway, ``ticket`` on the 2-day one.
* any other state: no alert.

Severity: *at risk* is the moment action still changes the result (30 minutes left on a
2-hour clock; the afternoon of a reablement clock's last day), so it pages on both pathways.
A breached 2-hour clock is a patient in crisis still unseen: it keeps paging. A breached 2-day
clock turns at local midnight, when an on-call manager can do nothing that the at-risk page
of that noon did not already ask for; it becomes a ``ticket`` for the next working day instead
of waking someone. The table is `SEVERITY`; routing treats the label as data.

When an outcome moves, the alert it had is resolved (``endsAt`` = the change's ``now``) and the
new one, if any, fires: at risk -> breached resolves ``ReferralAtRisk`` and fires
``ReferralBreached``; a stop (``met`` or ``not_met``: the visit happened, late or not), an
exclusion, a cancellation, an invalid clock, or a late-recorded contact that withdraws a breach
(breached -> met) resolves whatever was firing. ``startsAt`` is the threshold instant from
`Clock.thresholds`, not the time of posting, so the same alert posted again (after a restart, by
another worker after a rebalance) has the same identity and start in Alertmanager.

Labels are alertname, severity, region, icb, pathway and referral_id (Alertmanager may carry the
referral id; Prometheus may not). Annotations use the keys of the Prometheus rules in `deploy/`
(``summary``, ``description``, ``action``: what to do, ``dashboard``: a link, with
``generatorURL``, when a dashboard URL is configured) plus ``minutes_waiting`` (at the time of
posting), ``deadline`` (the last instant still within the standard, local time:
``14:05 Tue 03 Feb``) and, on resolved alerts, ``resolution``.

Never blocking the stream
-------------------------
`on_changes` is a `Pipeline` listener. It only updates in-memory state, O(changes), and sets an
event; a background task does all I/O. State is two maps:

* ``firing``: referral id -> its current alert, plus a *dirty* set of those not yet delivered
  in their current form;
* ``resolved``: resolutions not yet delivered, oldest first.

Each round the sender posts every queued resolution and every dirty firing alert, and every
`resend_interval` seconds *all* firing alerts. A firing alert is posted with ``endsAt`` = now +
4 x `resend_interval`: re-posting keeps it alive; if the worker dies, Alertmanager resolves it
on its own within minutes (and well within its default ``resolve_timeout`` of 5 minutes, which
only applies to alerts posted without ``endsAt``). Alerts go in batches of `BATCH_SIZE` per
request. After a successful request the posted items are marked delivered only if the state
still holds the very same object, so a change that arrives while a request is in flight is
never lost.

Outages
-------
A failed request (connection refused, timeout, HTTP 5xx/408/429) never raises into the stream:
the sender retries with exponential backoff (`FIRST_RETRY_S` doubling to `MAX_RETRY_S`, with
jitter), each retry carrying the *current* state, and once Alertmanager answers again it
re-posts all firing alerts (a restarted Alertmanager keeps no alerts). Other HTTP 4xx answers
are a bug in what we send, not an outage; retrying would wedge the queue, so the batch is
logged, counted in `rejected` and dropped (Alertmanager stores the valid alerts of a batch even
when it answers 400). Failures are logged with the HTTP status only: Alertmanager's answer
quotes what it refused (label values, generatorURL), referral ids included, so its text is
logged at DEBUG.

Memory is bounded: firing alerts are bounded by the open at-risk and breached clocks the engine
holds anyway; resolutions waiting for delivery are dropped oldest-first as soon as firing plus
waiting exceeds `max_pending`, counted in `dropped`. A dropped resolution is not lost for good:
the alert it would have resolved expires on its own ``endsAt`` (at most 4 x `resend_interval`
after its last post).

Restarts and rebalances
-----------------------
The engine reports a change only when an outcome differs from the one it last published, so a
worker that restores its clocks from PostgreSQL reports nothing for clocks already at risk.
`reconcile(engine.published(), now)` after partitions are assigned or revoked makes the firing
set match the clocks this worker owns: it adopts alerts for owned at-risk/breached clocks (same
identity and ``startsAt`` as before) and forgets, without resolving, those it no longer owns.
A change whose *previous* outcome had an alert that this notifier does not hold (it fired before
a restart) still resolves that alert.

`stop()` makes one last attempt to deliver what is queued, and does not resolve firing alerts:
a worker stopping does not mean the patients were seen.

Secure connections
------------------
`AlertmanagerAccess` holds what an ``https://`` Alertmanager behind basic auth needs: a CA
bundle (``CRISISWATCH_ALERTMANAGER_CAFILE``; certificate and hostname verified) and a user
whose password is read from a file (``CRISISWATCH_ALERTMANAGER_PASSWORD_FILE``) once at the
entry point. Credentials refused (HTTP 401/403) are an outage to the sender, not a bad batch:
it logs the refusal (naming the user, never the password) and retries with backoff, keeping every
alert, so a password rotated on the Alertmanager before the worker's Secret loses nothing.

Counters for metrics: `posted` (alerts accepted), `requests` (requests accepted), `failed`
(failed requests), `dropped` (resolutions dropped by the bound), `rejected` (alerts in batches
refused with 4xx), and the gauges `firing` and `pending`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.engine import Change, Clock, Outcome, Rules
from streams.engine.event import REABLEMENT_2D, UCR_2H
from streams.engine.outcome import (
    AT_RISK,
    BREACHED,
    CANCELLED_STATE,
    EXCLUDED,
    INVALID,
    MET,
    NOT_MET,
    WAITING,
)
from streams.errors import ConfigurationError
from streams.names import ALERT_AT_RISK, ALERT_BREACHED, ALERT_FOR_STATE, PATHWAY_NAMES

__all__ = [
    "ALERT_AT_RISK",
    "ALERT_BREACHED",
    "SEVERITY",
    "AlertmanagerAccess",
    "AlertmanagerNotifier",
    "format_deadline",
]

log = logging.getLogger("crisiswatch.alertmanager")


# (alertname, pathway) -> severity label; see the module docstring for why.
SEVERITY: Final = {
    (ALERT_AT_RISK, UCR_2H): "page",
    (ALERT_AT_RISK, REABLEMENT_2D): "page",
    (ALERT_BREACHED, UCR_2H): "page",
    (ALERT_BREACHED, REABLEMENT_2D): "ticket",
}
DEFAULT_SEVERITY: Final = "page"  # a pathway this table does not know yet still pages

API_PATH: Final = "/api/v2/alerts"
BATCH_SIZE: Final = 500  # alerts per request (~250 KB of JSON)
EXPIRY_RESENDS: Final = 4  # a firing alert's endsAt is this many resend intervals ahead
FIRST_RETRY_S: Final = 0.5  # first backoff after a failed request, seconds
MAX_RETRY_S: Final = 30.0  # backoff ceiling, seconds
# Transient HTTP answers, retried; any other 4xx is a bug in the payload (see docstring).
RETRY_STATUSES: Final = frozenset({408, 429})


ACTIONS: Final = {
    (ALERT_AT_RISK, UCR_2H): (
        "Get a clinician to the patient face to face before the deadline. If the patient has "
        "already been seen, make sure the contact is recorded."
    ),
    (ALERT_BREACHED, UCR_2H): (
        "The 2-hour standard is missed but the patient still needs urgent care: get them seen "
        "face to face now and record the contact; escalate if no clinician is free."
    ),
    (ALERT_AT_RISK, REABLEMENT_2D): (
        "Start reablement face to face before the end of the deadline day. If the first visit "
        "has happened, make sure it is recorded."
    ),
    (ALERT_BREACHED, REABLEMENT_2D): (
        "The 2-day reablement standard is missed: book the first visit at the earliest "
        "opportunity and record it."
    ),
}
DEFAULT_ACTION: Final = "See the referral on the dashboard and get the patient seen."
RESOLVED_ACTION: Final = "Nothing more for this page."

RESOLUTIONS: Final = {
    MET: "seen face to face within the standard",
    NOT_MET: "seen face to face after the deadline",
    EXCLUDED: "excluded from the standard at triage",
    CANCELLED_STATE: "referral cancelled",
    INVALID: "clock invalid (contact before referral): check the source data",
    WAITING: "clock re-timed: no longer at risk",
    AT_RISK: "clock re-timed: at risk, no longer breached",
    BREACHED: "upgraded: breached",
}
WITHDRAWN: Final = "breach withdrawn: an earlier face-to-face contact was recorded late"
DEADLINE_FORMAT: Final = "%H:%M %a %d %b"  # 14:05 Tue 03 Feb

LabelKey = tuple[str, str, str, str, str]  # alertname, referral id, pathway, region, icb


def format_deadline(instant: int, zone: ZoneInfo) -> str:
    """A deadline as people on call read it: local time, weekday, day and month."""
    return datetime.fromtimestamp(instant, zone).strftime(DEADLINE_FORMAT)


def _rfc3339(instant: float) -> str:
    return (
        datetime.fromtimestamp(instant, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class _Alert(NamedTuple):
    """One alert state. Immutable: every change makes a new object (see `_delivered`).

    A NamedTuple because `on_changes` builds one per change and must stay cheap; the
    thresholds (startsAt, deadline) are worked out only when the alert is rendered.
    """

    name: str
    referral_id: str
    pathway: str
    region: str
    icb: str  # the first five fields are the label set, `key`
    provider: str
    clock_type: str
    start: int  # clock start, epoch seconds
    ends_at: int | None = None  # None while firing
    resolution: str | None = None  # why it was resolved

    @property
    def key(self) -> LabelKey:
        return (self.name, self.referral_id, self.pathway, self.region, self.icb)


class _RejectedError(Exception):
    """Alertmanager refused a batch for good (HTTP 4xx other than 401/403/408/429)."""


class _CredentialsRefusedError(aiohttp.ClientError):
    """Alertmanager (or its proxy) refused the credentials: retried (module docstring)."""


class AlertmanagerAccess(BaseSettings):
    """TLS and basic auth of the Alertmanager client (CONTRACT section 7); build it with
    `load` at the entry point. With no field set it changes nothing (plain HTTP or https
    verified against the system's trust store, no credentials)."""

    model_config = SettingsConfigDict(
        env_prefix="CRISISWATCH_ALERTMANAGER_", frozen=True, extra="ignore"
    )

    cafile: Path | None = None
    username: str | None = None
    password_file: Path | None = None

    @classmethod
    def load(
        cls,
        cafile: Path | None = None,
        username: str | None = None,
        password_file: Path | None = None,
    ) -> tuple[AlertmanagerAccess, SecretStr | None]:
        """The settings and the password read from `password_file` (None without one);
        `ConfigurationError` (exit 2) when they do not fit."""
        given: dict[str, Any] = {
            key: value
            for key, value in (
                ("cafile", cafile),
                ("username", username),
                ("password_file", password_file),
            )
            if value is not None
        }
        try:
            access = cls(**given)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "CRISISWATCH_ALERTMANAGER_" + "_".join(map(str, first["loc"])).upper()
            raise ConfigurationError(f"{where}: {first['msg']}") from None
        if (access.username is None) != (access.password_file is None):
            raise ConfigurationError(
                "CRISISWATCH_ALERTMANAGER_USERNAME and CRISISWATCH_ALERTMANAGER_PASSWORD_FILE "
                "go together"
            )
        if access.password_file is None:
            return access, None
        try:
            text = access.password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not readable UTF-8 text"
            raise ConfigurationError(
                f"CRISISWATCH_ALERTMANAGER_PASSWORD_FILE: cannot read {access.password_file}: "
                f"{reason}"
            ) from None
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigurationError(
                f"CRISISWATCH_ALERTMANAGER_PASSWORD_FILE: {access.password_file} is empty"
            )
        return access, SecretStr(password)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying context trusting only `cafile`; None: aiohttp's default (the system's
        trust store, also verifying)."""
        if self.cafile is None:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.cafile))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"CRISISWATCH_ALERTMANAGER_CAFILE: {self.cafile} is not a readable PEM bundle "
                f"({getattr(exc, 'reason', None) or type(exc).__name__})"
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


class AlertmanagerNotifier:
    """Keeps Alertmanager's per-referral alerts equal to the engine's at-risk/breached clocks."""

    def __init__(
        self,
        url: str,
        *,
        rules: Rules,
        dashboard_url: str | None = None,
        resend_interval: float = 60.0,
        max_pending: int = 50_000,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
    ) -> None:
        if resend_interval <= 0:
            raise ValueError("resend_interval must be positive")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.url = url.rstrip("/") + API_PATH
        self.rules = rules
        self.dashboard_url = dashboard_url or None
        self.resend_interval = resend_interval
        self.max_pending = max_pending
        self.timeout = timeout
        self.clock = clock
        self.username = username
        self._ssl_context = ssl_context
        # The Authorization header, built here (aiohttp's BasicAuth is deprecated); it is sent,
        # never logged.
        self._authorization = (
            "Basic "
            + base64.b64encode(f"{username}:{password.get_secret_value()}".encode()).decode()
            if username is not None and password is not None
            else None
        )
        # Counters (monotonic) for the metrics adapter.
        self.posted = 0
        self.requests = 0  # accepted requests (each carries up to BATCH_SIZE alerts)
        self.failed = 0
        self.dropped = 0
        self.rejected = 0
        self.last_success: float | None = None  # wall clock of the last accepted request
        self._firing: dict[str, _Alert] = {}
        self._dirty: dict[str, None] = {}  # referral ids whose firing alert is undelivered
        self._resolved: OrderedDict[LabelKey, _Alert] = OrderedDict()
        self._wake = asyncio.Event()
        self._resync = True  # post all firing alerts at the next round
        self._next_full = 0.0  # loop time of the next full re-post
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # -- gauges ----------------------------------------------------------------------------

    @property
    def firing(self) -> int:
        """Alerts currently firing (at-risk and breached referrals this worker pages for)."""
        return len(self._firing)

    @property
    def pending(self) -> int:
        """Resolutions waiting to be delivered."""
        return len(self._resolved)

    def queued_resolutions(self) -> list[tuple[str, str]]:
        """(alertname, referral id) of the resolutions waiting, oldest first."""
        return [(a.name, a.referral_id) for a in self._resolved.values()]

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background sender (idempotent)."""
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": self._authorization} if self._authorization else {}),
            },
            connector=(
                aiohttp.TCPConnector(ssl=self._ssl_context)
                if self._ssl_context is not None
                else None
            ),
        )
        self._task = asyncio.create_task(self._run(), name="alertmanager-notifier")

    async def stop(self) -> None:
        """Stop the sender after one last attempt to deliver what is queued."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if self._resolved or self._dirty:
                await self._round(session, full=False)
        except Exception as exc:  # shutting down: report, never raise
            log.warning("alertmanager: final delivery failed: %s", exc)
        finally:
            await session.close()
        left = len(self.queued_resolutions())
        if left:
            # The alerts themselves end at their endsAt; the pages' "resolved" notes are lost.
            log.warning("alertmanager: %d resolutions not delivered at shutdown", left)

    # -- input (the pipeline listener) -----------------------------------------------------

    async def on_changes(self, changes: Sequence[Change], now: int) -> None:
        """Take a batch's outcome changes: in-memory work only, then wake the sender."""
        if not changes:
            return
        apply = self._apply
        for change in changes:
            apply(change, now)
        self._trim()
        self._wake.set()

    def reconcile(self, outcomes: Iterable[Outcome], now: int) -> None:
        """Make the firing set match these outcomes (the engine's `published()` ones).

        Adopts alerts for at-risk/breached referrals not held (restored from a database);
        resolves held alerts whose referral is in `outcomes` in another state (a change was
        missed); forgets, without resolving, alerts of referrals not in `outcomes` at all
        (another worker owns them now, or they closed and were resolved already).
        """
        states: dict[str, str] = {}
        wanted: dict[str, _Alert] = {}
        for outcome in outcomes:
            states[outcome.referral_id] = outcome.state
            alert = self._alert_for(outcome)
            if alert is not None:
                wanted[alert.referral_id] = alert
        for referral_id in [r for r in self._firing if r not in states]:
            del self._firing[referral_id]
            self._dirty.pop(referral_id, None)
        for referral_id, current in list(self._firing.items()):
            alert = wanted.get(referral_id)
            if alert is None or alert.key != current.key:
                self._resolve(current, now, RESOLUTIONS.get(states[referral_id], ""))
        for referral_id, alert in wanted.items():
            if referral_id not in self._firing:
                self._fire(alert)
        self._resync = True
        self._trim()
        self._wake.set()

    def _apply(self, change: Change, now: int) -> None:
        outcome = change.outcome
        referral_id = outcome.referral_id
        wanted = self._alert_for(outcome)
        current = self._firing.get(referral_id)
        if current is None and change.previous is not None:
            # Fired before a restart or on another worker: resolve it all the same.
            current = self._alert_for(change.previous)
        if current is not None and (wanted is None or current.key != wanted.key):
            reason = WITHDRAWN if change.breach_withdrawn else RESOLUTIONS.get(outcome.state, "")
            self._resolve(current, now, reason)
        if wanted is not None:
            self._fire(wanted)

    def _fire(self, alert: _Alert) -> None:
        self._resolved.pop(alert.key, None)  # a queued resolution would undo this alert
        self._firing[alert.referral_id] = alert
        self._dirty[alert.referral_id] = None

    def _resolve(self, alert: _Alert, now: int, reason: str) -> None:
        held = self._firing.get(alert.referral_id)
        if held is not None and held.key == alert.key:
            del self._firing[alert.referral_id]
            self._dirty.pop(alert.referral_id, None)
        resolved = alert._replace(ends_at=now, resolution=reason)
        self._resolved.pop(resolved.key, None)
        self._resolved[resolved.key] = resolved  # newest last

    def _trim(self) -> None:
        resolved = self._resolved
        excess = len(resolved) + len(self._firing) - self.max_pending
        while excess > 0 and resolved:
            resolved.popitem(last=False)
            self.dropped += 1
            excess -= 1

    def _alert_for(self, outcome: Outcome) -> _Alert | None:
        name = ALERT_FOR_STATE.get(outcome.state)
        start, clock_type = outcome.clock_start, outcome.clock_type
        if name is None or start is None or clock_type is None:
            return None
        return _Alert(
            name,
            outcome.referral_id,
            outcome.pathway,
            outcome.region,
            outcome.icb,
            outcome.provider,
            clock_type,
            start,
        )

    # -- output (the background sender) ----------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            if not failures:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), max(0.0, self._next_full - loop.time())
                    )
            self._wake.clear()
            session = self._session
            assert session is not None  # set by start() before this task exists
            full = self._resync or loop.time() >= self._next_full
            try:
                await self._round(session, full)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failed = True
                detail = str(exc) or type(exc).__name__
            except Exception as exc:  # the sender must outlive any bug
                log.exception("alertmanager: unexpected error in the sender")
                failed, detail = True, repr(exc)
            else:
                failed = False
            if not failed:
                if failures:
                    log.info("alertmanager: delivering again after %d failed attempts", failures)
                failures = 0
                if full:
                    self._resync = False
                    self._next_full = loop.time() + self.resend_interval
                continue
            failures += 1
            self.failed += 1
            self._resync = True  # it may have restarted and forgotten every alert
            delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (failures - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)  # jitter
            log.warning(
                "alertmanager: post to %s failed (attempt %d), retrying in %.1fs: %s",
                self.url,
                failures,
                delay,
                detail,
            )
            await asyncio.sleep(delay)

    async def _round(self, session: aiohttp.ClientSession, full: bool) -> None:
        """Post queued resolutions, undelivered firing alerts and (if `full`) all firing ones."""
        firing = self._firing
        items = list(self._resolved.values())
        items.extend(firing[r] for r in self._dirty if r in firing)
        if full:
            dirty = self._dirty
            items.extend(a for r, a in firing.items() if r not in dirty)
        for first in range(0, len(items), BATCH_SIZE):
            chunk = items[first : first + BATCH_SIZE]
            now = self.clock()
            body = json.dumps([self._render(a, now) for a in chunk], separators=(",", ":"))
            try:
                await self._post(session, body.encode())
            except _RejectedError as exc:
                self.rejected += len(chunk)
                log.error("alertmanager: refused %d alerts, dropping them: %s", len(chunk), exc)
            else:
                self.posted += len(chunk)
                self.requests += 1
                self.last_success = self.clock()
            self._delivered(chunk)

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> None:
        async with session.post(self.url, data=body) as response:
            if response.status < 300:
                await response.read()
                return
            # Alertmanager's answer quotes what it refused (label values, generatorURL), so it
            # can carry referral ids, which are logged at DEBUG only (consumers.observe.logs): the
            # WARNING/ERROR lines give the status alone.
            text = (await response.text(errors="replace"))[:500]
            log.debug("alertmanager: HTTP %d from %s: %s", response.status, self.url, text)
            if response.status in (401, 403):
                who = f"user {self.username!r}" if self.username else "no credentials"
                raise _CredentialsRefusedError(
                    f"HTTP {response.status}: credentials refused ({who}; check "
                    "CRISISWATCH_ALERTMANAGER_USERNAME and CRISISWATCH_ALERTMANAGER_PASSWORD_FILE)"
                )
            if response.status < 500 and response.status not in RETRY_STATUSES:
                raise _RejectedError(f"HTTP {response.status} {response.reason or ''}".rstrip())
            raise aiohttp.ClientResponseError(
                response.request_info,
                response.history,
                status=response.status,
                message=response.reason or "",
            )

    def _delivered(self, chunk: Sequence[_Alert]) -> None:
        firing, resolved, dirty = self._firing, self._resolved, self._dirty
        for alert in chunk:
            if alert.ends_at is not None:
                if resolved.get(alert.key) is alert:
                    del resolved[alert.key]
            elif firing.get(alert.referral_id) is alert:
                dirty.pop(alert.referral_id, None)

    def _render(self, alert: _Alert, now: float) -> dict[str, object]:
        at_risk_at, breach_at = Clock.thresholds(self.rules, alert.clock_type, alert.start)
        starts_at = at_risk_at if alert.name == ALERT_AT_RISK else breach_at
        pathway_name = PATHWAY_NAMES.get(alert.pathway, alert.pathway)
        deadline = format_deadline(breach_at - 1, self.rules.zone)  # the last second still met
        if alert.ends_at is None:
            ends_at: float = now + EXPIRY_RESENDS * self.resend_interval
            minutes = max(0, int(now) - alert.start) // 60
            state = "at risk" if alert.name == ALERT_AT_RISK else "breached"
            summary = (
                f"{pathway_name} referral {alert.referral_id} {state}: {minutes} min waiting, "
                f"deadline {deadline} (provider {alert.provider}, ICB {alert.icb})"
            )
        else:
            ends_at = alert.ends_at
            minutes = max(0, alert.ends_at - alert.start) // 60
            summary = (
                f"{pathway_name} referral {alert.referral_id} resolved: {alert.resolution} "
                f"(after {minutes} min; deadline {deadline})"
            )
        zone = self.rules.zone
        description = (
            f"Received {format_deadline(alert.start, zone)} by provider {alert.provider} "
            f"(ICB {alert.icb}, region {alert.region}); "
            f"{'at risk' if alert.name == ALERT_AT_RISK else 'breached'} "
            f"since {format_deadline(starts_at, zone)}; deadline {deadline}."
        )
        if alert.ends_at is not None:
            description += f" Resolved {format_deadline(alert.ends_at, zone)}: {alert.resolution}."
        annotations = {
            "summary": summary,
            "description": description,
            "action": (
                ACTIONS.get((alert.name, alert.pathway), DEFAULT_ACTION)
                if alert.ends_at is None
                else RESOLVED_ACTION
            ),
            "minutes_waiting": str(minutes),
            "deadline": deadline,
        }
        if alert.resolution is not None:
            annotations["resolution"] = alert.resolution
        body: dict[str, object] = {
            "labels": {
                "alertname": alert.name,
                "severity": SEVERITY.get((alert.name, alert.pathway), DEFAULT_SEVERITY),
                "region": alert.region,
                "icb": alert.icb,
                "pathway": alert.pathway,
                "referral_id": alert.referral_id,
            },
            "annotations": annotations,
            "startsAt": _rfc3339(starts_at),
            "endsAt": _rfc3339(max(ends_at, starts_at)),
        }
        if self.dashboard_url is not None:
            separator = "&" if "?" in self.dashboard_url else "?"
            link = (
                f"{self.dashboard_url}{separator}var-referral={quote(alert.referral_id, safe='')}"
            )
            annotations["dashboard"] = link
            body["generatorURL"] = link
        return body
