"""Authorize.Net parse/subject/normalize/declines over tests/fixtures/authorizenet."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from paywatch.errors import CardDataError, PayloadError
from paywatch.providers.authorizenet import AuthorizeNetProvider, authorizenet
from paywatch.providers.authorizenet.declines import MERCHANT_SIDE, REASON_CODES, explain
from paywatch.providers.base import Provider, event_id
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent, RawWebhook
from tests.builders.authorizenet import (
    FRAUD_DECLINED,
    PAYMENT_AUTHCAPTURE,
    SIGNATURE_KEY,
    authorizenet_body,
    authorizenet_event,
    authorizenet_failure,
    authorizenet_headers,
    authorizenet_recovery,
    authorizenet_transaction,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "authorizenet"
NOW = datetime(2026, 7, 20, tzinfo=UTC)


def _fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def _raw(body: bytes, tenant: str = "acme") -> RawWebhook:
    return RawWebhook(
        ingest_id="i", tenant=tenant, provider="authorizenet", received_at=NOW, body=body
    )


def _events(body: bytes, provider: AuthorizeNetProvider = authorizenet) -> list[PaymentEvent]:
    # Each fixture is verified first, signed here by the documented algorithm.
    provider.verify(body, authorizenet_headers(body), [{"signature_key": SIGNATURE_KEY}], NOW)
    return provider.normalize(_raw(body), "webhooks.raw", 1, 99)


def _one(body: bytes, provider: AuthorizeNetProvider = authorizenet) -> PaymentEvent:
    events = _events(body, provider)
    assert len(events) == 1
    return events[0]


def test_declined_authcapture_fixture() -> None:
    event = _one(_fixture("authcapture.declined"))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.source_type == "net.authorize.payment.authcapture.created"
    assert event.occurred_at == datetime(2026, 6, 15, 9, 30, 12, 8009, tzinfo=UTC)
    assert (event.invoice_ref, event.payment_ref) == ("INV-10442", "60020981676")
    assert (event.amount_minor, event.currency) == (4500, "USD")
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == (None, DeclineCategory.UNKNOWN)
    assert event.decline.message == "This transaction has been declined."
    assert event.raw is not None
    assert event.raw.provider_event_id == "d0e8e7fe-c3e7-4add-a480-27bc5ce28934"


def test_error_authcapture_fixture_is_a_failure() -> None:
    event = _one(_fixture("authcapture.error"))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.decline is not None
    assert event.decline.message == "There has been an error processing this transaction."


def test_approved_authcapture_recovers_the_same_invoice() -> None:
    failed = _one(_fixture("authcapture.declined"))
    paid = _one(_fixture("authcapture.approved"))
    assert paid.type is EventType.PAYMENT_SUCCEEDED
    assert paid.invoice_ref == failed.invoice_ref
    assert (paid.payment_ref, paid.decline, paid.amount_minor) == ("60020990315", None, 4500)


def test_enriched_decline_is_classified_from_its_reason_code() -> None:
    event = _one(_fixture("authcapture.declined.enriched"))
    assert event.invoice_ref == "ORD-88213"  # merchantReferenceId when no invoiceNumber
    assert event.amount_minor == 199999
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == ("8", DeclineCategory.ACTION)
    assert event.decline.message == "The credit card has expired."


def test_fraud_declined_fixture_is_fraud() -> None:
    event = _one(_fixture("fraud.declined"))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.decline is not None and event.decline.category is DeclineCategory.FRAUD
    assert (event.invoice_ref, event.amount_minor) == ("INV-10450", 31050)


@pytest.mark.parametrize("name", ["fraud.held", "refund.created"])
def test_unhandled_fixtures_give_no_events(name: str) -> None:
    assert _events(_fixture(name)) == []


def test_subscription_suspended_fixture_is_past_due() -> None:
    event = _one(_fixture("subscription.suspended"))
    assert event.type is EventType.SUBSCRIPTION_PAST_DUE
    assert (event.invoice_ref, event.subscription_ref) == ("sub:6910462", "6910462")
    assert (event.customer_ref, event.amount_minor, event.currency) == ("1509284", 12900, "USD")


def test_subscription_terminated_fixture_closes_it() -> None:
    event = _one(_fixture("subscription.terminated"))
    assert event.type is EventType.SUBSCRIPTION_CANCELED
    assert event.invoice_ref == "sub:6910462"


@pytest.mark.parametrize(
    ("event_type", "code", "expected"),
    [
        ("net.authorize.payment.authorization.created", 2, EventType.PAYMENT_FAILED),
        ("net.authorize.payment.authorization.created", 1, None),
        ("net.authorize.payment.capture.created", 1, EventType.PAYMENT_SUCCEEDED),
        ("net.authorize.payment.priorAuthCapture.created", 3, EventType.PAYMENT_FAILED),
        ("net.authorize.payment.authcapture.created", 4, None),
        ("net.authorize.payment.authcapture.created", "2", EventType.PAYMENT_FAILED),
        ("net.authorize.payment.fraud.approved", 1, EventType.PAYMENT_SUCCEEDED),
        ("net.authorize.payment.void.created", 1, None),
        ("net.authorize.customer.subscription.cancelled", 1, EventType.SUBSCRIPTION_CANCELED),
        ("net.authorize.customer.subscription.expiring", 1, None),
        ("net.authorize.customer.paymentProfile.updated", 1, None),
    ],
)
def test_event_type_and_response_code_mapping(
    event_type: str, code: int | str, expected: EventType | None
) -> None:
    payload = authorizenet_transaction(response_code=1)
    payload["responseCode"] = code
    events = _events(authorizenet_body(authorizenet_event(event_type, payload)))
    assert [e.type for e in events] == ([expected] if expected else [])


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [("USD", 45.0, 4500), ("JPY", 4500, 4500), ("JPY", 4500.0, 4500), ("TND", 12.345, 12345)],
)
def test_amounts_use_the_configured_currency(currency: str, amount: float, minor: int) -> None:
    provider = AuthorizeNetProvider(default_currency=currency)
    event = _one(authorizenet_body(authorizenet_failure(amount=amount)), provider)
    assert (event.amount_minor, event.currency) == (minor, currency)


def test_decimal_amounts_are_exact() -> None:
    body = _fixture("authcapture.declined").replace(b'"authAmount":45.00', b'"authAmount":0.29')
    assert _one(body).amount_minor == 29


def test_amount_with_too_many_decimals_is_a_payload_error() -> None:
    body = authorizenet_body(authorizenet_failure(amount=45.5))
    with pytest.raises(PayloadError, match="more decimals than JPY"):
        _events(body, AuthorizeNetProvider(default_currency="JPY"))


# --- declines -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("2", DeclineCategory.SOFT),
        ("11", DeclineCategory.SOFT),
        ("36", DeclineCategory.SOFT),
        ("122", DeclineCategory.SOFT),
        ("4", DeclineCategory.HARD),
        ("6", DeclineCategory.ACTION),
        ("8", DeclineCategory.ACTION),
        ("27", DeclineCategory.ACTION),
        ("317", DeclineCategory.ACTION),
        ("41", DeclineCategory.FRAUD),
        ("251", DeclineCategory.FRAUD),
        ("999", DeclineCategory.UNKNOWN),
        (None, DeclineCategory.UNKNOWN),
    ],
)
def test_reason_code_table(reason: str | None, category: DeclineCategory) -> None:
    assert explain(reason, fraud_event=False).category is category


def test_fraud_event_beats_any_reason_code() -> None:
    verdict = explain("2", fraud_event=True)
    assert verdict.category is DeclineCategory.FRAUD
    assert verdict.rule is not None and verdict.rule.id == "authorizenet.event.fraud_declined"


@pytest.mark.parametrize("reason", [17, 28])
def test_merchant_side_reasons_are_hard_and_say_so(reason: int) -> None:
    event = _one(authorizenet_body(authorizenet_failure(reason_code=reason)))
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == (str(reason), DeclineCategory.HARD)
    assert event.decline.message is not None
    assert event.decline.message.startswith(f"{MERCHANT_SIDE} ")


def test_customer_declines_carry_no_merchant_side_prefix() -> None:
    event = _one(authorizenet_body(authorizenet_failure(reason_code=2, reason_text="Declined.")))
    assert event.decline is not None and event.decline.message == "Declined."


def test_every_rule_names_its_source_and_edition() -> None:
    for rule in REASON_CODES.rules:
        assert rule.source and rule.edition and rule.id.startswith("authorizenet.")


# --- ids, subject, parse errors ------------------------------------------------------------------


def test_event_ids_are_deterministic_and_follow_base_event_id() -> None:
    body = _fixture("authcapture.declined")
    first, again = _one(body), _one(body)
    expected = event_id("acme", "authorizenet", "d0e8e7fe-c3e7-4add-a480-27bc5ce28934", 0)
    assert first.event_id == again.event_id == expected
    other = authorizenet.normalize(_raw(body, "globex"), "webhooks.raw", 1, 99)[0]
    assert other.event_id != expected


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("authcapture.declined", "INV-10442"),
        ("authcapture.declined.enriched", "ORD-88213"),
        ("refund.created", "60020995521"),
        ("subscription.suspended", "sub:6910462"),
    ],
)
def test_subject(name: str, subject: str) -> None:
    doc = authorizenet.parse(_fixture(name))
    assert authorizenet.subject(doc) == subject
    assert authorizenet.provider_event_id(doc) == doc["notificationId"]


def _with(**changes: Any) -> bytes:
    event = authorizenet_failure()
    event.update(changes)
    return authorizenet_body({k: v for k, v in event.items() if v is not None})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not JSON"),
        (_with(notificationId=None), "notificationId"),
        (_with(eventType=""), "eventType"),
        (_with(payload=[]), "payload"),
        (_with(eventDate=None), "no eventDate"),
        (_with(eventDate="29/03/2017"), "not ISO 8601"),
    ],
)
def test_unreadable_notifications_are_payload_errors(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        authorizenet.parse(body)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"id": "1"}, "no integer payload.responseCode"),
        ({"id": "1", "responseCode": True}, "no integer payload.responseCode"),
        ({"responseCode": 2}, "no payload.id"),
        ({"id": "1", "responseCode": 2, "authAmount": "abc"}, "not a number"),
    ],
)
def test_unreadable_payment_payloads_are_payload_errors(
    payload: dict[str, Any], message: str
) -> None:
    body = authorizenet_body(authorizenet_event(PAYMENT_AUTHCAPTURE, payload))
    with pytest.raises(PayloadError, match=message):
        authorizenet.normalize(_raw(body), "webhooks.raw", 0, 0)


def test_escaped_card_numbers_are_card_data_errors() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in "4242424242424242")
    body = authorizenet_body(authorizenet_failure()).replace(
        b'"avsResponse":"Y"', f'"description":"{escaped}"'.encode()
    )
    assert b"4242" not in body and json.loads(body)["payload"]["description"] == "4242424242424242"
    with pytest.raises(CardDataError):
        authorizenet.parse(body)


def test_recovery_sample_matches_the_failure_sample() -> None:
    failed = _one(authorizenet_body(authorizenet_failure()))
    paid = _one(authorizenet_body(authorizenet_recovery()))
    assert (failed.type, paid.type) == (EventType.PAYMENT_FAILED, EventType.PAYMENT_SUCCEEDED)
    assert failed.invoice_ref == paid.invoice_ref and paid.occurred_at > failed.occurred_at
    assert FRAUD_DECLINED.endswith("fraud.declined")


def test_the_module_implements_the_provider_port() -> None:
    port: Provider = authorizenet  # mypy checks the structural match
    assert port.name == "authorizenet"


def test_decline_text_the_model_refuses_is_a_payload_error() -> None:
    """Fuzz finding (issue 12 item 9): a lone surrogate in the reason escaped as ValidationError."""
    body = authorizenet_body(authorizenet_failure(reason_code=2, reason_text="\ud800"))
    with pytest.raises(PayloadError):
        authorizenet.normalize(_raw(body), "webhooks.raw", 0, 0)


def test_subject_unfit_for_a_key_is_none() -> None:
    """Fuzz finding: a NUL invoice number made the ingest's RawWebhook refuse the subject."""
    assert authorizenet.subject(authorizenet_failure(invoice_number="\x00")) is None


def test_exponent_decimal_cannot_hold_is_a_payload_error() -> None:
    """Fuzz finding (issue 12 item 9): exact parsing raised decimal.InvalidOperation."""
    body = b'{"notificationId":"n","eventType":"x","payload":{"authAmount":1e99999999999999999999}}'
    with pytest.raises(PayloadError):
        authorizenet.parse(body)
