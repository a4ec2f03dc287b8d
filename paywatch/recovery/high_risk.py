"""High-risk customers (``TenantPolicy.high_risk``, issue 9): which bands count, and when.

The shell passes ``decide`` the customer's current band from ``risk.scores`` with each
PaymentEvent (None: unknown, or below HIGH). The first event of an open episode whose band
is at or above the option's ``min_band`` makes the episode's customer high-risk for the rest
of the episode (``Saga.high_risk`` keeps the band): timers and permit answers carry no band,
and the escalation re-planned on every status change must keep the earlier time. What that
changes (``reactions``, ``plan``): one request for a new payment method, unless one was
already made in the episode, and the episode's single ESCALATE armed no later than
``escalate_after_days`` after the first failure. Retries are untouched, so the network
limits hold as before (tests/unit/test_recovery_properties.py draws the option and bands).
"""

from __future__ import annotations

from paywatch.recovery.state import Saga
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import RiskBand

ORDER = (RiskBand.LOW, RiskBand.MEDIUM, RiskBand.HIGH, RiskBand.CRITICAL)
"""Bands from the lowest to the highest (the enum's values do not sort that way)."""
RULE = "high_risk"
"""The name of the tenant rule these decisions carry (``commands.tenant_rule``)."""


def at_least(band: RiskBand, floor: RiskBand) -> bool:
    """Is ``band`` ``floor`` or a higher one?"""
    return ORDER.index(band) >= ORDER.index(floor)


def counts(policy: TenantPolicy, band: RiskBand | None) -> bool:
    """Does the tenant's option make a customer in ``band`` high-risk?"""
    option = policy.high_risk
    return option is not None and band is not None and at_least(band, option.min_band)


def escalation_days(saga: Saga, policy: TenantPolicy) -> int | None:
    """Days after the first failure the episode escalates because its customer is high-risk
    (None: not high-risk, or the option does not escalate). The stored band is checked
    against the policy in force, so a policy that later drops or raises it applies."""
    option = policy.high_risk
    if option is None or not counts(policy, saga.high_risk):
        return None
    return option.escalate_after_days


def why(band: RiskBand) -> str:
    """The reason's prefix: names the band."""
    return f"high-risk customer (risk band {band.value})"
