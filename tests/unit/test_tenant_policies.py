"""Tenant policy writes, pure parts: validation messages, canonical form, change order, rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paywatch.errors import ConfigError, InvalidPolicy
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PolicyChanged
from paywatch.tenants import policy_rows as rows
from paywatch.tenants.policy_input import canonical_json, parse_policy
from paywatch.tenants.policy_store import _after

T0 = datetime(2026, 11, 2, 9, 0, 0, 123456, tzinfo=UTC)


def errors(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidPolicy) as raised:
        parse_policy(data)
    return list(raised.value.errors)


def test_every_field_error_is_listed_with_its_path() -> None:
    found = errors(
        {
            "window_days": 0,
            "retry": {"days": [3, 1], "tz": "Mars/Olympus"},
            "dunning": [{"day": -1, "template": "payment_failed"}],
            "owners": {"stripe": "somebody"},
            "colour": "red",
        }
    )
    assert [field for field, _ in found] == [
        "window_days",
        "retry.days",
        "retry.tz",
        "dunning[0].day",
        "owners.stripe",
        "colour",
    ]
    reasons = dict(found)
    assert reasons["retry.days"] == "days must be strictly increasing: 1 follows 3"
    assert reasons["retry.tz"] == "unknown time zone 'Mars/Olympus'"  # no "Value error," prefix
    assert reasons["window_days"] == "Input should be greater than or equal to 1 (got 0)"
    assert reasons["colour"].startswith("Extra inputs are not permitted")


def test_whole_policy_errors_and_non_objects_name_the_policy() -> None:
    assert errors({"window_days": 5}) == [
        ("(policy)", "retry.days [5, 7] fall outside window_days=5")
    ]
    [(field, reason)] = errors([1, 2])
    assert field == "(policy)" and "valid dictionary" in reason


def test_invalid_policy_is_a_config_error_whose_message_lists_each_field() -> None:
    with pytest.raises(ConfigError) as raised:  # the CLI's exit 2
        parse_policy({"window_days": 0, "update_template": "Bad Name"})
    message = str(raised.value)
    assert message.splitlines()[0] == "invalid policy (2 errors):"
    assert message.splitlines()[1].startswith("  window_days: ")
    assert message.splitlines()[2].startswith("  update_template: String should match pattern")


def test_long_inputs_are_cut_in_messages() -> None:
    [(_, reason)] = errors({"update_template": "x" * 500})
    assert reason.endswith("...)") and len(reason) < 200


def test_equal_policies_get_equal_revisions_whatever_the_key_order() -> None:
    a = parse_policy({"owners": {"stripe": "paywatch", "adyen": "provider"}})
    b = parse_policy({"owners": {"adyen": "provider", "stripe": "paywatch"}})
    assert a == b and a.revision == b.revision
    assert parse_policy({}).revision == TenantPolicy().revision  # defaults keep their revision


def test_canonical_json_is_sorted_compact_and_round_trips() -> None:
    policy = parse_policy({"owners": {"stripe": "paywatch", "adyen": "provider"}})
    text = canonical_json(policy)
    assert " " not in text.replace("leave_open", "")
    assert text.index('"adyen"') < text.index('"stripe"')
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert TenantPolicy.model_validate_json(text).revision == policy.revision


def test_changed_at_is_millisecond_precise_and_never_goes_back() -> None:
    assert _after(T0, None) == T0.replace(microsecond=123000)
    earlier = T0.replace(microsecond=123000)
    assert _after(T0, earlier - timedelta(seconds=1)) == earlier
    later = T0 + timedelta(hours=1)  # the previous change came from a host whose clock is ahead
    assert _after(T0, later) == later + timedelta(milliseconds=1)
    assert _after(earlier, earlier) == earlier + timedelta(milliseconds=1)


def test_projection_row_carries_the_policy_as_a_json_object() -> None:
    policy = TenantPolicy(window_days=20)
    change = PolicyChanged(
        tenant="acme",
        revision=policy.revision,
        policy_json=canonical_json(policy),
        previous_revision="0" * 16,
        changed_at=T0,
        changed_by="api:operator",
        reason="shorter window",
    )
    row = rows.row(change, Coords("recovery.policies", 2, 41))
    assert row[0] == "acme" and row[1]["window_days"] == 20
    assert row[2:] == (
        policy.revision, "0" * 16, T0, "api:operator", "shorter window",
        "recovery.policies", 2, 41,
    )  # fmt: skip
    # Both statements take the same ten values.
    assert "$10)" in rows.INSERT_CHANGE and "$10)" in rows.UPSERT
