"""PayPal payload fixtures (tests/fixtures/paypal) through the whole pure path, signed here."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from paywatch.errors import VerificationError
from paywatch.providers.pan import contains_pan
from paywatch.providers.paypal import PayPalProvider, paypal
from paywatch.schemas.models import DeclineCategory, EventType, RawWebhook
from tests.builders.paypal import WEBHOOK_ID, make_test_pki, sign_paypal

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "paypal"
NOW = datetime(2025, 6, 20, tzinfo=UTC)
SENT = "2025-06-20T00:00:00Z"  # paypal-transmission-time of the deliveries signed here

EXPECTED: dict[str, tuple[EventType, str, DeclineCategory | None]] = {
    "billing.subscription.payment.failed.json": (
        EventType.PAYMENT_FAILED, "I-BW452GLLEP1G", DeclineCategory.ACTION),
    "billing.subscription.suspended.json": (
        EventType.SUBSCRIPTION_PAST_DUE, "I-BW452GLLEP1G", DeclineCategory.SOFT),
    "billing.subscription.cancelled.json": (
        EventType.SUBSCRIPTION_CANCELED, "I-BW452GLLEP1G", None),
    "billing.subscription.activated.json": (
        EventType.SUBSCRIPTION_REACTIVATED, "I-BW452GLLEP1G", None),
    "payment.sale.completed.json": (EventType.PAYMENT_SUCCEEDED, "I-BW452GLLEP1G", None),
    "payment.sale.denied.json": (EventType.PAYMENT_FAILED, "I-BW452GLLEP1G",
                                 DeclineCategory.UNKNOWN),
    "payment.capture.denied.json": (EventType.PAYMENT_FAILED, "INV-2025-0042",
                                    DeclineCategory.SOFT),
    "payment.capture.completed.jpy.json": (EventType.PAYMENT_SUCCEEDED, "INV-2025-0042", None),
}  # fmt: skip


def _body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_fixture_is_listed() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixtures_are_in_the_documented_shape(name: str) -> None:
    doc = json.loads(_body(name))
    assert doc["id"].startswith("WH-") and doc["event_version"] == "1.0"
    assert doc["event_type"].upper() == name.removesuffix(".json").removesuffix(".jpy").upper()
    assert doc["resource_type"] in {"subscription", "sale", "capture"}
    resource = doc["resource"]
    if doc["resource_type"] == "subscription":
        assert resource["id"].startswith("I-")
        assert {"failed_payments_count", "outstanding_balance"} <= set(resource["billing_info"])
        assert set(resource["subscriber"]) >= {"payer_id", "email_address"}
    elif doc["resource_type"] == "sale":
        assert set(resource["amount"]) >= {"total", "currency"}
    else:
        assert set(resource["amount"]) == {"value", "currency_code"}
    assert not contains_pan(_body(name))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixtures_normalize(name: str) -> None:
    kind, ref, category = EXPECTED[name]
    raw = RawWebhook(
        ingest_id="ing", tenant="acme", provider="paypal", received_at=NOW, body=_body(name)
    )
    [event] = paypal.normalize(raw, "webhooks.raw", 0, 5)
    assert (event.type, event.invoice_ref) == (kind, ref)
    assert paypal.subject(paypal.parse(_body(name))) == ref
    assert (event.decline.category if event.decline else None) == category
    assert event.amount_minor is None or event.amount_minor > 0


async def test_fixtures_verify_when_signed_and_fail_when_altered() -> None:
    pki = make_test_pki(NOW)
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=pki.bundle))
    async with httpx.AsyncClient(transport=transport) as client:
        provider = PayPalProvider(client)
        for name in EXPECTED:
            body = _body(name)
            # Sent now: a transmission older than the freshness window is refused anyway.
            headers = sign_paypal(body, WEBHOOK_ID, pki.leaf_key, transmission_time=SENT)
            await provider.verify_async(body, headers, [{"webhook_id": WEBHOOK_ID}], NOW)
            with pytest.raises(VerificationError, match="does not match"):
                await provider.verify_async(
                    body.replace(b"\n", b"\r\n"), headers, [{"webhook_id": WEBHOOK_ID}], NOW
                )
