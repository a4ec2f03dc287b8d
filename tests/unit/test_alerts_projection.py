"""The `alerts` read model's pure parts: which record of an incident wins, its row, and the
route's parameters."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from paywatch.api.query.deps import ApiError
from paywatch.api.query.routes.alerts import CURSOR, parse_kind, parse_status
from paywatch.projections.alerts import COLUMNS, WRITE, latest, row
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import Alert, AlertStatus, AlertWindow, Severity

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
ID = "acme/PROVIDER_FAILURE_SPIKE/stripe/1793610000000"


def alert(minute: int, status: AlertStatus = AlertStatus.OPEN, **kw: object) -> Alert:
    end = T0 + timedelta(minutes=minute)
    fields: dict[str, object] = {
        "tenant": "acme",
        "kind": "PROVIDER_FAILURE_SPIKE",
        "severity": Severity.WARNING,
        "window": AlertWindow(start=end - timedelta(minutes=10), end=end),
        "observed": 40.0 + minute,
        "baseline": 2.5,
        "message": f"stripe: {40 + minute} failures in 10 min vs 2.5 expected",
        "alert_id": ID,
        "status": status,
        "provider": "stripe",
        "opened_at": T0,
        "resolved_at": end if status is AlertStatus.RESOLVED else None,
    }
    return Alert.model_validate(fields | kw)


def at(offset: int, partition: int = 0) -> Coords:
    return Coords("alerts", partition, offset)


def test_the_greatest_coordinates_of_an_incident_win_whatever_the_batch_order() -> None:
    opened, resolved = alert(1), alert(12, AlertStatus.RESOLVED)
    other = alert(3, alert_id="acme/DECLINE_CODE_SPIKE/do_not_honor/1793610000000")
    for batch in ([(opened, at(3)), (resolved, at(7)), (other, at(5))],
                  [(resolved, at(7)), (other, at(5)), (opened, at(3))]):  # fmt: skip
        kept = {(a.alert_id, a.status, c.offset) for a, c in latest(batch)}
        assert kept == {(ID, AlertStatus.RESOLVED, 7), (other.alert_id, AlertStatus.OPEN, 5)}


def test_offsets_win_over_the_records_own_times() -> None:
    """The log's order is the decision order: a later record wins even with an older window."""
    [(kept, where)] = latest([(alert(9), at(1)), (alert(2, severity=Severity.CRITICAL), at(2))])
    assert (kept.severity, where.offset) == (Severity.CRITICAL, 2)


def test_the_same_id_in_another_tenant_is_another_incident() -> None:
    mine, theirs = alert(1), alert(1, tenant="other")
    assert len(latest([(mine, at(1)), (theirs, at(2))])) == 2


def test_row_holds_the_latest_record_and_its_window_end_as_updated_at() -> None:
    record = alert(12, AlertStatus.RESOLVED, severity=Severity.CRITICAL)
    values = dict(zip(COLUMNS, row(record, at(42, partition=2)), strict=True))
    end = T0 + timedelta(minutes=12)
    assert values == {
        "tenant": "acme",
        "alert_id": ID,
        "kind": "PROVIDER_FAILURE_SPIKE",
        "severity": "CRITICAL",
        "status": "RESOLVED",
        "provider": "stripe",
        "decline_code": None,
        "customer_ref": None,
        "observed": 52.0,
        "baseline": 2.5,
        "window_start": end - timedelta(minutes=10),
        "window_end": end,
        "message": "stripe: 52 failures in 10 min vs 2.5 expected",
        "opened_at": T0,
        "updated_at": end,
        "resolved_at": end,
        "topic": "alerts",
        "partition": 2,
        "offset": 42,
    }


@pytest.mark.parametrize(
    "broken",
    [{"alert_id": ""}, {"opened_at": None}, {"observed": math.inf}, {"baseline": math.nan}],
)
def test_a_record_naming_no_incident_or_no_figure_is_the_records_fault(
    broken: dict[str, object],
) -> None:
    with pytest.raises(ValueError, match=r"alert_id|finite"):
        row(alert(1, **broken), at(1))


def test_the_write_replaces_a_row_only_from_greater_coordinates() -> None:
    assert 'ON CONFLICT ("tenant", "alert_id") DO UPDATE' in WRITE.merge
    assert WRITE.merge.endswith(
        'WHERE (t."topic", t."partition", t."offset")'
        ' < (EXCLUDED."topic", EXCLUDED."partition", EXCLUDED."offset")'
    )
    # updated_at comes from the record (its window end), never from the clock of the write.
    assert '"updated_at" = EXCLUDED."updated_at"' in WRITE.merge
    assert "now()" not in WRITE.merge
    assert WRITE.columns == COLUMNS


@pytest.mark.parametrize(
    ("given", "stored"),
    [("open", "OPEN"), ("RESOLVED", "RESOLVED"), ("Open", "OPEN"), (None, None)],
)
def test_status_parameter_is_case_insensitive(given: str | None, stored: str | None) -> None:
    assert parse_status(given) == stored


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("provider_failure_spike", "PROVIDER_FAILURE_SPIKE"),
        ("Decline_Code_Spike", "DECLINE_CODE_SPIKE"),
        ("HIGH_RISK_CUSTOMER", "HIGH_RISK_CUSTOMER"),
        (None, None),
    ],
)
def test_kind_parameter_is_case_insensitive(given: str | None, stored: str | None) -> None:
    assert parse_kind(given) == stored


@pytest.mark.parametrize("given", ["", "closed", "open ", "x" * 500])
def test_unknown_status_names_the_allowed_ones(given: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_status(given)
    assert caught.value.status_code == 400
    assert "open, resolved" in caught.value.detail
    assert len(caught.value.detail) < 200


@pytest.mark.parametrize("given", ["", "spike", "provider-failure-spike"])
def test_unknown_kind_names_the_allowed_ones(given: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_kind(given)
    assert caught.value.status_code == 400
    detail = caught.value.detail
    assert "PROVIDER_FAILURE_SPIKE, DECLINE_CODE_SPIKE, HIGH_RISK_CUSTOMER" in detail


def test_the_cursor_carries_the_time_to_the_microsecond_and_the_id_with_slashes() -> None:
    key = (T0 + timedelta(microseconds=123_457), ID)
    assert CURSOR.decode(CURSOR.encode(key)) == key
