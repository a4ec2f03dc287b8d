"""Outbound events as Slack incoming-webhook messages: facts, links, escaping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paywatch.outbound.events import EVENT_TYPES, OutboundEvent
from paywatch.outbound.mapping import to_event
from paywatch.outbound.slack import escape, money, slack_body
from paywatch.schemas.models import (
    Alert,
    AlertStatus,
    AlertWindow,
    CommandType,
    DeclineCategory,
    RecoveryCommand,
    RuleRef,
    Severity,
)

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
BASE = "https://paywatch.example.com/api/"


def escalation(**changes: Any) -> OutboundEvent:
    values: dict[str, Any] = {
        "command_id": "esc-1",
        "type": CommandType.ESCALATE,
        "tenant": "acme",
        "invoice_ref": "in_42",
        "due_at": AT,
        "reason": "escalation: 7 days awaiting the customer without payment",
        "rule": RuleRef(id="tenant.escalation", edition="tenant-policy/3", source="policy"),
        "amount_minor": 4900,
        "currency": "USD",
        "customer_ref": "cus_1",
        "decline_category": DeclineCategory.HARD,
        "channel": "slack",
    }
    event = to_event(RecoveryCommand(**{**values, **changes}))
    assert event is not None
    return OutboundEvent(
        event.id,
        event.type,
        event.tenant,
        event.created_at,
        {**event.data, "state": "awaiting_customer"},
    )


def alert(status: AlertStatus) -> OutboundEvent:
    end = AT if status is AlertStatus.OPEN else AT + timedelta(minutes=40)
    record = Alert(
        tenant="acme",
        kind="PROVIDER_FAILURE_SPIKE",
        severity=Severity.CRITICAL,
        window=AlertWindow(start=AT - timedelta(minutes=14), end=end),
        observed=120.0,
        baseline=3.0,
        message="stripe: 120 failures in 15 min vs 3.0 expected",
        alert_id="acme/PROVIDER_FAILURE_SPIKE/stripe/1",
        status=status,
        provider="stripe",
        opened_at=AT,
        resolved_at=end if status is AlertStatus.RESOLVED else None,
    )
    event = to_event(record)
    assert event is not None
    return event


def message(event: OutboundEvent | dict[str, Any], base: str = BASE) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(slack_body(event, base))
    return body


def everything(body: dict[str, Any]) -> str:
    return json.dumps(body)


def test_escalation_shows_state_amount_rule_and_links_the_timeline() -> None:
    body = message(escalation())
    assert "in_42" in body["text"] and "Escalation" in body["text"]
    fields = [f["text"] for b in body["blocks"] if "fields" in b for f in b["fields"]]
    assert "*State*\nawaiting_customer" in fields
    assert "*Amount*\n49.00 USD" in fields
    assert "*Rule*\ntenant.escalation (tenant-policy/3)" in fields
    assert "*Decline*\nHARD" in fields
    [context] = [b for b in body["blocks"] if b["type"] == "context"]
    link = context["elements"][0]["text"]
    assert link == "<https://paywatch.example.com/api/v1/invoices/in_42/timeline|Invoice timeline>"


def test_the_envelope_from_the_delivery_log_renders_the_same_as_the_event() -> None:
    event = escalation()
    stored = json.loads(json.dumps(event.envelope()))  # what deliveries.body holds
    assert slack_body(stored, BASE) == slack_body(event, BASE)


@pytest.mark.parametrize(
    ("status", "verb", "icon"),
    [
        (AlertStatus.OPEN, "opened", ":rotating_light:"),
        (AlertStatus.RESOLVED, "resolved", ":white"),
    ],
)
def test_alerts_say_what_opened_or_resolved(status: AlertStatus, verb: str, icon: str) -> None:
    body = message(alert(status))
    assert body["text"].startswith(icon)
    assert f"Alert {verb}" in body["text"] and "PROVIDER_FAILURE_SPIKE" in body["text"]
    assert "120 failures" in body["text"] and "CRITICAL" in body["text"]
    fields = [f["text"] for b in body["blocks"] if "fields" in b for f in b["fields"]]
    assert "*Provider*\nstripe" in fields
    assert not [b for b in body["blocks"] if b["type"] == "context"]  # no invoice, no link


def test_refs_cannot_make_links_or_mentions() -> None:
    body = everything(message(escalation(invoice_ref="<!channel>|x", reason="<https://evil|ok>")))
    assert "<!channel>" not in body and "<https://evil" not in body
    assert "&lt;!channel&gt;" in body
    assert (
        "/v1/invoices/%3C%21channel%3E%7Cx/timeline|" in body
    )  # the link's path is percent-encoded


def test_every_type_gets_a_message() -> None:
    for kind in EVENT_TYPES:
        event = OutboundEvent("evt_1", kind, "acme", AT, {"invoice_ref": "in_1"})
        body = message(event)
        assert body["text"] and body["blocks"][0]["type"] == "section", kind


def test_money_uses_the_currency_exponent() -> None:
    assert money(4900, "USD") == "49.00 USD"
    assert money(123456789, "eur") == "1,234,567.89 EUR"
    assert money(4900, "JPY") == "4,900 JPY"
    assert money(4900, "KWD") == "4.900 KWD"
    assert money(-250, "GBP") == "-2.50 GBP"
    assert money(None, "USD") == "?"


def test_escape_and_long_texts_stay_within_slack_limits() -> None:
    assert escape("a & <b>") == "a &amp; &lt;b&gt;"
    body = message(escalation(reason="r" * 1_900), base=BASE)
    assert all(len(b["text"]["text"]) <= 3000 for b in body["blocks"] if "text" in b)
