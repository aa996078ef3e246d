"""The one decision "may this purpose run?": its reasons, its rule and its answer.

Every caller (the public check and its fast path, the server check, the bulk check,
the suppression list, exports and the visitor's own state) gathers the facts its own
way, in as few statements as it can, and hands them to :func:`decide`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol


class Reason(StrEnum):
    """Why a check answers as it does; only ``granted``, ``required`` and
    ``opt_out_default`` allow."""

    GRANTED = "granted"
    REQUIRED = "required"
    #: No standing choice, under an opt-out (or notice) rule the site set for a region
    #: outside the EEA, the UK and Switzerland, for a purpose it marked (``consent.regions``).
    OPT_OUT_DEFAULT = "opt_out_default"
    DENIED = "denied"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    STALE_POLICY = "stale_policy"
    NO_DECISION = "no_decision"
    UNKNOWN_PURPOSE = "unknown_purpose"
    ERASED = "erased"
    #: The bulk check's answer for an entry that is no email or user id.
    INVALID = "invalid"
    #: A check that could not be answered (the API's error handlers) still denies.
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    ERROR = "error"


class StoredChoice(Protocol):
    """A current-state row, or a result row with the same columns."""

    is_granted: bool
    is_withdrawal: bool
    decided_at: datetime
    expires_at: datetime
    policy_published_at: datetime | None


@dataclass(frozen=True)
class Verdict:
    """The answer to "may I?" for one purpose (and optionally one service)."""

    allowed: bool
    reason: Reason
    decided_at: datetime | None = None
    expires_at: datetime | None = None

    def body(self, purpose: str, service: str | None = None) -> dict[str, Any]:
        """Return the check's answer for this verdict, as ``CheckSchema`` dumps it."""
        return {
            "allowed": self.allowed,
            "purpose": purpose,
            "service": service,
            "reason": self.reason,
            "decided_at": self.decided_at,
            "expires_at": self.expires_at,
        }


def decide(
    *,
    is_known: bool,
    is_required: bool,
    is_erased: bool,
    purpose_state: StoredChoice | None,
    service_state: StoredChoice | None = None,
    lifetime_days: int,
    material_published_at: datetime | None,
    now: datetime,
    is_default_allowed: bool = False,
) -> Verdict:
    """Decide whether a purpose (or one service in it) may run; whatever is unclear denies.

    ``is_known``: the site has the purpose (and the service, if one is asked about).
    ``is_erased``: the subject, or the email or user id that named them, was erased.
    ``purpose_state`` and ``service_state``: the subject's stored choices, if any.
    ``is_default_allowed``: the visitor's region rule lets the purpose run until the
    person opts out (``regions.allows_by_default``). A recorded choice wins over it, and
    an opt-out stands even once expired or stale: only a grant lapses into the default.
    """
    if not is_known:
        return Verdict(False, Reason.UNKNOWN_PURPOSE)
    if is_required:
        return Verdict(True, Reason.REQUIRED)
    if is_erased:
        return Verdict(False, Reason.ERASED)
    if purpose_state is None:
        if is_default_allowed:
            return Verdict(True, Reason.OPT_OUT_DEFAULT)
        return Verdict(False, Reason.NO_DECISION)
    state = service_state or purpose_state
    decided_at = state.decided_at
    expires_at = min(state.expires_at, decided_at + timedelta(days=lifetime_days))
    refusal = next(
        (choice for choice in (purpose_state, service_state) if choice and not choice.is_granted),
        None,
    )
    lapsed = None
    if now >= expires_at:
        lapsed = Reason.EXPIRED
    elif material_published_at is not None and (
        state.policy_published_at is None or state.policy_published_at < material_published_at
    ):
        lapsed = Reason.STALE_POLICY
    if lapsed is not None and not (is_default_allowed and refusal is not None):
        if is_default_allowed:
            return Verdict(True, Reason.OPT_OUT_DEFAULT, decided_at, expires_at)
        return Verdict(False, lapsed, decided_at, expires_at)
    if refusal is not None:
        reason = Reason.WITHDRAWN if refusal.is_withdrawal else Reason.DENIED
        return Verdict(False, reason, refusal.decided_at, expires_at)
    return Verdict(True, Reason.GRANTED, decided_at, expires_at)
