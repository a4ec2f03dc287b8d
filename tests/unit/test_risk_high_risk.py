"""A customer's stay in the high bands is one incident: opened, updated on severity, resolved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paywatch.risk.high_risk import KIND, high_risk_alert
from paywatch.risk.model import Reason, Score
from paywatch.schemas.models import Alert, AlertStatus, RiskBand, Severity

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _score(value: float, band: RiskBand, minutes: int) -> Score:
    reasons = (Reason("open_invoices", 0.8, 1.0),)
    return Score(value, band, reasons, "risk-v1", T0 + timedelta(minutes=minutes))


def _walk(scores: list[Score]) -> list[Alert]:
    since, last, out = None, None, []
    for new in scores:
        since, alert = high_risk_alert("acme", "cus_1", since, last, new, 0.4)
        out += [alert] if alert else []
        last = new
    return out


def test_one_stay_is_one_incident_with_updates_only_on_severity() -> None:
    alerts = _walk(
        [
            _score(0.1, RiskBand.LOW, 0),
            _score(0.45, RiskBand.HIGH, 1),  # opens
            _score(0.55, RiskBand.HIGH, 2),  # same severity: nothing
            _score(0.75, RiskBand.CRITICAL, 3),  # escalates
            _score(0.3, RiskBand.MEDIUM, 4),  # resolves
            _score(0.1, RiskBand.LOW, 5),  # nothing
        ]
    )
    assert [(a.status, a.severity) for a in alerts] == [
        (AlertStatus.OPEN, Severity.WARNING),
        (AlertStatus.OPEN, Severity.CRITICAL),
        (AlertStatus.RESOLVED, Severity.INFO),
    ]
    opened = T0 + timedelta(minutes=1)
    assert {a.alert_id for a in alerts} == {f"acme/{KIND}/cus_1/{int(opened.timestamp() * 1000)}"}
    assert all(a.opened_at == opened and a.customer_ref == "cus_1" for a in alerts)
    assert alerts[-1].resolved_at == T0 + timedelta(minutes=4)
    assert (alerts[0].observed, alerts[0].baseline) == (0.45, 0.4)
    assert "open_invoices" in (alerts[0].message or "")


def test_a_second_stay_is_a_second_incident() -> None:
    alerts = _walk(
        [
            _score(0.5, RiskBand.HIGH, 0),
            _score(0.2, RiskBand.MEDIUM, 10),
            _score(0.5, RiskBand.HIGH, 20),
        ]
    )
    assert [a.status for a in alerts] == [AlertStatus.OPEN, AlertStatus.RESOLVED, AlertStatus.OPEN]
    assert len({a.alert_id for a in alerts}) == 2


def test_a_customer_never_high_raises_nothing() -> None:
    assert _walk([_score(v, RiskBand.MEDIUM, i) for i, v in enumerate((0.2, 0.3, 0.39))]) == []
