"""TenantPolicy: safe defaults, JSON round trip, precise validation errors, revisions."""

from __future__ import annotations

from datetime import time
from typing import Any

import pytest
from pydantic import ValidationError

from paywatch.providers.registry import KNOWN_PROVIDERS
from paywatch.recovery.tenant_policy import (
    PROVIDERS,
    Channel,
    DunningStep,
    FinalAction,
    RetryOwner,
    TenantPolicy,
)


def error(data: dict[str, Any]) -> tuple[tuple[str | int, ...], str]:
    """The one validation error `data` gives: (location, message)."""
    with pytest.raises(ValidationError) as info:
        TenantPolicy.model_validate(data)
    (err,) = info.value.errors()
    return tuple(err["loc"]), err["msg"]


def test_defaults_are_the_documented_safe_ones() -> None:
    policy = TenantPolicy()
    assert policy.retry.days == (1, 3, 5, 7)
    assert (policy.retry.at, policy.retry.tz, policy.retry.max_retries) == (time(10), "UTC", 4)
    assert policy.window_days == 30
    assert [(s.day, s.channel, s.template) for s in policy.dunning] == [
        (0, Channel.EMAIL, "payment_failed"),
        (3, Channel.EMAIL, "payment_reminder"),
        (7, Channel.EMAIL, "payment_final_reminder"),
    ]
    assert policy.escalation is not None
    assert (policy.escalation.after_days, policy.escalation.awaiting_customer_days) == (14, 7)
    assert policy.final_action is FinalAction.LEAVE_OPEN
    assert (policy.visa_edition, policy.mastercard_edition) == (
        "visa-core-rules-2026-04-18",
        "mastercard-tpe-2022-10",
    )


def test_providers_that_retry_themselves_own_their_retries_by_default() -> None:
    policy = TenantPolicy()
    owners = {p: policy.owner(p) for p in PROVIDERS}
    assert {p for p, o in owners.items() if o is RetryOwner.PROVIDER} == {
        "stripe",
        "paypal",
        "braintree",
    }
    assert policy.owner("someone-new") is RetryOwner.PAYWATCH
    assert TenantPolicy(owners={"stripe": RetryOwner.PAYWATCH}).owner("stripe") is (
        RetryOwner.PAYWATCH
    )


def test_provider_list_matches_the_registry() -> None:
    assert tuple(PROVIDERS) == tuple(KNOWN_PROVIDERS)


def test_json_round_trip() -> None:
    policy = TenantPolicy(
        owners={"adyen": RetryOwner.PROVIDER},
        dunning=(DunningStep(day=2, channel=Channel.SMS, template="sms_nudge"),),
        final_action=FinalAction.WRITE_OFF,
        escalation=None,
        visa_edition="visa-rules-2021-04",
    )
    data = policy.model_dump(mode="json")
    assert data["owners"] == {"adyen": "provider"}
    assert data["retry"]["at"] == "10:00:00"
    again = TenantPolicy.model_validate(data)
    assert again == policy
    assert again.revision == policy.revision
    assert TenantPolicy.model_validate_json(policy.model_dump_json()) == policy


def test_revision_changes_with_content_only() -> None:
    assert TenantPolicy().revision == TenantPolicy().revision
    assert TenantPolicy(window_days=20).revision != TenantPolicy().revision
    assert len(TenantPolicy().revision) == 16


@pytest.mark.parametrize(
    ("data", "loc", "message"),
    [
        ({"retry": {"days": [1, -3]}}, ("retry", "days"), "days must not be negative: [-3]"),
        (
            {"retry": {"days": [1, 5, 3]}},
            ("retry", "days"),
            "days must be strictly increasing: 3 follows 5",
        ),
        ({"retry": {"days": [2, 2]}}, ("retry", "days"), "strictly increasing: 2 follows 2"),
        ({"retry": {"tz": "Mars/Olympus"}}, ("retry", "tz"), "unknown time zone 'Mars/Olympus'"),
        ({"retry": {"max_retries": -1}}, ("retry", "max_retries"), "greater than or equal to 0"),
        ({"owners": {"stripe": "paywatch", "venmo": "provider"}}, ("owners",), "['venmo']"),
        ({"owners": {"stripe": "somebody"}}, ("owners", "stripe"), "'paywatch' or 'provider'"),
        ({"visa_edition": "visa-1999"}, ("visa_edition",), "unknown Visa edition 'visa-1999'"),
        ({"mastercard_edition": "x"}, ("mastercard_edition",), "unknown Mastercard edition"),
        ({"window_days": 0}, ("window_days",), "greater than or equal to 1"),
        ({"dunning": [{"day": -1, "template": "a"}]}, ("dunning", 0, "day"), "greater than"),
        (
            {"dunning": [{"day": 3, "template": "a"}, {"day": 1, "template": "b"}]},
            ("dunning",),
            "dunning days must be strictly increasing: 1 follows 3",
        ),
        ({"dunning": [{"day": 1, "template": "Bad Name"}]}, ("dunning", 0, "template"), "pattern"),
        ({"final_action": "burn"}, ("final_action",), "'cancel', 'write_off' or 'leave_open'"),
        ({"retries": {}}, ("retries",), "Extra inputs are not permitted"),
        ({"window_days": 5}, (), "retry.days [5, 7] fall outside window_days=5"),
        (
            {"window_days": 9, "dunning": [{"day": 9, "template": "late"}]},
            (),
            "dunning days [9] fall outside window_days=9",
        ),
    ],
)
def test_validation_errors_are_precise(
    data: dict[str, Any], loc: tuple[str | int, ...], message: str
) -> None:
    got_loc, got_message = error(data)
    assert got_loc == loc
    assert message in got_message


def test_revision_does_not_depend_on_the_order_of_owners() -> None:
    from paywatch.recovery.tenant_policy import TenantPolicy

    a = TenantPolicy.model_validate({"owners": {"stripe": "paywatch", "adyen": "provider"}})
    b = TenantPolicy.model_validate({"owners": {"adyen": "provider", "stripe": "paywatch"}})
    assert a.revision == b.revision
