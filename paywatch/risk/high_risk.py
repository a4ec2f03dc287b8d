"""Customers entering the high bands: one incident per stay, opened, updated, resolved.

A customer whose score reaches ``HIGH`` (or ``CRITICAL``) opens a ``HIGH_RISK_CUSTOMER``
incident; it is updated only when its severity changes (HIGH <-> CRITICAL) and resolved when
the score falls below ``HIGH``. Its id names the tenant, the customer and when it opened, so
every record of one stay carries the same ``alert_id``. Pure: the risk agent keeps ``since``
in the customer's table entry and passes the scores in.
"""

from __future__ import annotations

from datetime import datetime

from paywatch.risk.model import Score
from paywatch.schemas.models import Alert, AlertStatus, AlertWindow, RiskBand, Severity

KIND = "HIGH_RISK_CUSTOMER"
HIGH = frozenset({RiskBand.HIGH, RiskBand.CRITICAL})


def _severity(score: Score) -> Severity:
    return Severity.CRITICAL if score.band is RiskBand.CRITICAL else Severity.WARNING


def high_risk_alert(
    tenant: str,
    customer_ref: str,
    since: datetime | None,
    old: Score | None,
    new: Score,
    threshold: float,
) -> tuple[datetime | None, Alert | None]:
    """(when the customer's current stay in the high bands began, the record to emit).

    ``since`` is the stay's start as stored (None: not in the high bands); ``old`` the last
    score emitted; ``threshold`` the model's HIGH cut-off, the alert's baseline.
    """
    high = new.band in HIGH
    if not high and since is None:
        return None, None
    if high and since is not None and old is not None and _severity(old) is _severity(new):
        return since, None  # the same stay at the same severity: no update
    opened = since or new.as_of
    resolved = not high
    reasons = ", ".join(r.feature for r in new.reasons) or "no single reason"
    alert = Alert(
        tenant=tenant,
        kind=KIND,
        severity=Severity.INFO if resolved else _severity(new),
        window=AlertWindow(start=opened, end=new.as_of),
        observed=new.value,
        baseline=threshold,
        message=f"customer {customer_ref}: risk {new.value:.2f} ({new.band.value.lower()}): "
        f"{reasons}",
        alert_id=f"{tenant}/{KIND}/{customer_ref}/{int(opened.timestamp() * 1000)}",
        status=AlertStatus.RESOLVED if resolved else AlertStatus.OPEN,
        customer_ref=customer_ref,
        opened_at=opened,
        resolved_at=new.as_of if resolved else None,
    )
    return (None if resolved else opened), alert
