"""Stripe payload fixtures (tests/fixtures/stripe) through the whole pure path.

Each fixture is the exact bytes of one delivery in a documented API shape
(reference/webhooks.md §3.1): signed, verified, PAN-checked, parsed, keyed, normalized.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from paywatch.errors import VerificationError
from paywatch.providers.base import event_id
from paywatch.providers.pan import contains_pan
from paywatch.providers.registry import get_provider
from paywatch.schemas.models import DeclineCategory, EventType, RawWebhook
from tests.builders.stripe import BASIL_API_VERSION, LEGACY_API_VERSION, sign_stripe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stripe"
SECRET = "whsec_test_contract_5f2d8a"
LEGACY_INVOICE = "in_1PqK7aLkdIwHu7ixR2d4Fg8H"
BASIL_INVOICE = "in_1RaQ1sLkdIwHu7ixK9pLm2Qw"
CUSTOMER = "cus_SVq8dXnWkY3hTz"


@dataclass(frozen=True)
class Expected:
    """What one fixture must normalize to."""

    type: EventType
    invoice_ref: str
    subject: str
    amount_minor: int | None = None
    currency: str | None = None
    attempt: int | None = None
    category: DeclineCategory | None = None
    subscription_ref: str | None = None
    advice_code: str | None = None


EXPECTED = {
    "invoice.payment_failed.legacy.json": Expected(
        EventType.PAYMENT_FAILED,
        LEGACY_INVOICE,
        LEGACY_INVOICE,
        2900,
        "USD",
        2,
        DeclineCategory.UNKNOWN,
        "sub_1PpZ3xLkdIwHu7ixB5c6D7e8",
    ),
    "invoice.payment_failed.basil.json": Expected(
        EventType.PAYMENT_FAILED,
        BASIL_INVOICE,
        BASIL_INVOICE,
        4900,
        "EUR",
        1,
        DeclineCategory.UNKNOWN,
        "sub_1RaPzWLkdIwHu7ixV4bNc7Rt",
    ),
    "invoice.paid.json": Expected(
        EventType.PAYMENT_SUCCEEDED,
        BASIL_INVOICE,
        BASIL_INVOICE,
        4900,
        "EUR",
        2,
        None,
        "sub_1RaPzWLkdIwHu7ixV4bNc7Rt",
    ),
    "charge.failed.json": Expected(
        EventType.PAYMENT_FAILED,
        LEGACY_INVOICE,
        LEGACY_INVOICE,
        2900,
        "USD",
        None,
        DeclineCategory.HARD,
        advice_code="03",
    ),
    "payment_intent.payment_failed.json": Expected(
        EventType.PAYMENT_FAILED,
        "pi_3RaQ1tLkdIwHu7ix0Zq5Hx2M",
        CUSTOMER,
        1500,
        "USD",
        None,
        DeclineCategory.ACTION,
    ),
    "customer.subscription.updated.past_due.json": Expected(
        EventType.SUBSCRIPTION_PAST_DUE,
        BASIL_INVOICE,
        BASIL_INVOICE,
        None,
        "USD",
        subscription_ref="sub_1RaPzWLkdIwHu7ixV4bNc7Rt",
    ),
    "customer.subscription.updated.reactivated.json": Expected(
        EventType.SUBSCRIPTION_REACTIVATED,
        BASIL_INVOICE,
        BASIL_INVOICE,
        None,
        "USD",
        subscription_ref="sub_1RaPzWLkdIwHu7ixV4bNc7Rt",
    ),
    "customer.subscription.deleted.json": Expected(
        EventType.SUBSCRIPTION_CANCELED,
        BASIL_INVOICE,
        BASIL_INVOICE,
        None,
        "USD",
        subscription_ref="sub_1RaPzWLkdIwHu7ixV4bNc7Rt",
    ),
}


def _body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_fixture_has_an_expectation() -> None:
    assert {p.name for p in FIXTURES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_through_the_pure_path(name: str) -> None:
    expected = EXPECTED[name]
    body = _body(name)
    doc = json.loads(body)
    now = datetime.fromtimestamp(doc["created"] + 5, UTC)
    stripe = get_provider("stripe")

    stripe.verify(
        body,
        {"stripe-signature": sign_stripe(body, SECRET, doc["created"])},
        [{"signing_secret": SECRET}],
        now,
    )
    assert not contains_pan(body)
    parsed = stripe.parse(body)
    assert stripe.subject(parsed) == expected.subject
    assert stripe.provider_event_id(parsed) == doc["id"]

    raw = RawWebhook(
        ingest_id="ing-1", tenant="acme", provider="stripe", received_at=now, body=body
    )
    [event] = stripe.normalize(raw, "webhooks.raw", 1, 17)
    assert event.type is expected.type
    assert event.event_id == event_id("acme", "stripe", doc["id"], 0)
    assert (event.invoice_ref, event.amount_minor, event.currency, event.attempt) == (
        expected.invoice_ref,
        expected.amount_minor,
        expected.currency,
        expected.attempt,
    )
    assert event.subscription_ref == expected.subscription_ref
    assert event.customer_ref == CUSTOMER
    assert event.occurred_at == datetime.fromtimestamp(doc["created"], UTC)
    assert (event.decline.category if event.decline else None) == expected.category
    if expected.advice_code:
        assert event.decline is not None and event.decline.advice_code == expected.advice_code


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_signature_does_not_survive_reserialization(name: str) -> None:
    body = _body(name)
    doc = json.loads(body)
    header = {"stripe-signature": sign_stripe(body, SECRET, doc["created"])}
    now = datetime.fromtimestamp(doc["created"], UTC)
    with pytest.raises(VerificationError):
        get_provider("stripe").verify(
            json.dumps(doc).encode(), header, [{"signing_secret": SECRET}], now
        )


def test_fixtures_are_in_the_documented_shapes() -> None:
    legacy = json.loads(_body("invoice.payment_failed.legacy.json"))
    basil = json.loads(_body("invoice.payment_failed.basil.json"))
    assert legacy["api_version"] == LEGACY_API_VERSION
    assert basil["api_version"] == BASIL_API_VERSION
    old, new = legacy["data"]["object"], basil["data"]["object"]
    assert {"subscription", "payment_intent", "charge"} <= old.keys()
    assert "parent" not in old and "payments" not in old
    assert not {"subscription", "payment_intent", "charge"} & new.keys()
    assert new["parent"]["subscription_details"]["subscription"].startswith("sub_")
    assert new["payments"]["data"][0]["payment"]["payment_intent"].startswith("pi_")
    outcome = json.loads(_body("charge.failed.json"))["data"]["object"]["outcome"]
    assert outcome["network_advice_code"] == "03"
    previous = json.loads(_body("customer.subscription.updated.past_due.json"))["data"]
    assert previous["previous_attributes"] == {"status": "active"}


def _cards(node: object) -> list[dict[str, object]]:
    if isinstance(node, list):
        return [card for item in node for card in _cards(item)]
    if not isinstance(node, dict):
        return []
    own = [node] if "last4" in node else []
    return own + [card for value in node.values() for card in _cards(value)]


def test_fixture_cards_carry_no_card_number() -> None:
    cards = [card for name in EXPECTED for card in _cards(json.loads(_body(name)))]
    assert cards  # the failure fixtures do carry card facts
    for card in cards:
        assert not {"number", "cvc", "cvv"} & card.keys()
        assert len(str(card["last4"])) == 4
