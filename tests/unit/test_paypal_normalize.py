"""PayPal parse/subject/normalize: every handled event type, money, refs, properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import PayloadError
from paywatch.providers.base import event_id
from paywatch.providers.paypal import PayPalProvider, paypal
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent, RawWebhook
from tests.builders.paypal import (
    CAPTURE_ID,
    EVENT_ID,
    ORDER_ID,
    PAYER_ID,
    SALE_ID,
    SUBSCRIPTION_ID,
    paypal_body,
    paypal_capture,
    paypal_event,
    paypal_payment_failed,
    paypal_sale,
    paypal_sale_completed,
    paypal_subscription,
)

CREATED = datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC)


def _raw(body: bytes, tenant: str = "acme") -> RawWebhook:
    return RawWebhook(
        ingest_id="ing-1", tenant=tenant, provider="paypal", received_at=CREATED, body=body
    )


def _normalize(
    event: dict[str, Any], provider: PayPalProvider = paypal, tenant: str = "acme"
) -> list[PaymentEvent]:
    return provider.normalize(_raw(paypal_body(event), tenant), "webhooks.raw", 2, 17)


def _one(event: dict[str, Any], provider: PayPalProvider = paypal) -> PaymentEvent:
    events = _normalize(event, provider)
    assert len(events) == 1
    return events[0]


def _sub_event(evt_type: str, **kwargs: Any) -> dict[str, Any]:
    return paypal_event(evt_type, paypal_subscription(**kwargs), resource_type="subscription")


# --- subscriptions -----------------------------------------------------------------------


def test_subscription_payment_failed() -> None:
    event = _one(paypal_payment_failed(reason_code="PAYMENT_DENIED", failed_payments_count=2))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.source_type == "BILLING.SUBSCRIPTION.PAYMENT.FAILED"
    assert (event.invoice_ref, event.subscription_ref) == (SUBSCRIPTION_ID, SUBSCRIPTION_ID)
    assert (event.customer_ref, event.payment_ref) == (PAYER_ID, None)
    assert (event.amount_minor, event.currency, event.attempt) == (4999, "USD", 2)
    assert event.occurred_at == CREATED
    assert event.provider_retry_at == datetime(2025, 6, 20, 15, 6, 40, tzinfo=UTC)
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == ("PAYMENT_DENIED", DeclineCategory.SOFT)


def test_ids_are_deterministic_and_raw_coordinates_kept() -> None:
    event = _one(paypal_payment_failed())
    assert event.event_id == event_id("acme", "paypal", EVENT_ID, 0)
    assert event.raw is not None
    assert (event.raw.topic, event.raw.partition, event.raw.offset) == ("webhooks.raw", 2, 17)
    assert event.raw.provider_event_id == EVENT_ID
    assert _one(paypal_payment_failed()).event_id == event.event_id
    assert _normalize(paypal_payment_failed(), tenant="other")[0].event_id != event.event_id


@pytest.mark.parametrize(
    ("reason", "category", "merchant"),
    [
        ("INTERNAL_SERVER_ERROR", DeclineCategory.SOFT, False),
        ("PAYER_CANNOT_PAY", DeclineCategory.ACTION, False),
        ("PAYER_ACCOUNT_RESTRICTED", DeclineCategory.ACTION, False),
        ("SENDING_LIMIT_EXCEEDED", DeclineCategory.ACTION, False),
        ("PAYEE_ACCOUNT_RESTRICTED", DeclineCategory.HARD, True),
        ("TRANSACTION_RECEIVING_LIMIT_EXCEEDED", DeclineCategory.HARD, True),
        ("CURRENCY_MISMATCH", DeclineCategory.HARD, True),
        ("SOMETHING_NEW", DeclineCategory.UNKNOWN, False),
    ],
)
def test_subscription_reason_codes(reason: str, category: DeclineCategory, merchant: bool) -> None:
    decline = _one(paypal_payment_failed(reason_code=reason)).decline
    assert decline is not None and (decline.code, decline.category) == (reason, category)
    assert (decline.message or "").startswith("merchant-side:") is merchant


def test_reason_overrides_are_a_constructor_argument() -> None:
    provider = PayPalProvider(reason_overrides={"sending_limit_exceeded": DeclineCategory.SOFT})
    decline = _one(paypal_payment_failed(reason_code="SENDING_LIMIT_EXCEEDED"), provider).decline
    assert decline is not None and decline.category is DeclineCategory.SOFT


def test_failure_without_last_failed_payment_uses_the_outstanding_balance() -> None:
    event = _one(_sub_event("BILLING.SUBSCRIPTION.PAYMENT.FAILED", failed_payments_count=1))
    assert (event.amount_minor, event.currency, event.attempt) == (4999, "USD", 1)
    assert event.decline is not None and event.decline.category is DeclineCategory.UNKNOWN
    assert event.provider_retry_at is None


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("1200", "JPY", 1200), ("12.345", "TND", 12345), ("0.5", "EUR", 50), ("7", "usd", 700)],
)
def test_amounts_use_the_currency_exponent(amount: str, currency: str, minor: int) -> None:
    event = _one(paypal_payment_failed(amount=amount, currency=currency))
    assert (event.amount_minor, event.currency) == (minor, currency.upper())


def test_amount_with_too_many_decimals_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="more decimals than JPY"):
        _normalize(paypal_payment_failed(amount="12.50", currency="JPY"))


def test_suspended_after_failures_is_past_due() -> None:
    event = _one(
        _sub_event(
            "BILLING.SUBSCRIPTION.SUSPENDED",
            status="SUSPENDED",
            failed_payments_count=3,
            reason_code="PAYMENT_DENIED",
        )
    )
    assert event.type is EventType.SUBSCRIPTION_PAST_DUE
    assert (event.invoice_ref, event.attempt, event.amount_minor) == (SUBSCRIPTION_ID, 3, 4999)
    assert event.provider_retry_at is None  # PayPal stopped retrying
    assert event.decline is not None and event.decline.code == "PAYMENT_DENIED"


def test_suspension_without_failed_payments_is_the_merchants_and_ignored() -> None:
    assert _normalize(_sub_event("BILLING.SUBSCRIPTION.SUSPENDED", status="SUSPENDED")) == []


@pytest.mark.parametrize(
    ("evt_type", "kind"),
    [
        ("BILLING.SUBSCRIPTION.CANCELLED", EventType.SUBSCRIPTION_CANCELED),
        ("BILLING.SUBSCRIPTION.ACTIVATED", EventType.SUBSCRIPTION_REACTIVATED),
        ("BILLING.SUBSCRIPTION.RE-ACTIVATED", EventType.SUBSCRIPTION_REACTIVATED),
    ],
)
def test_subscription_state_changes(evt_type: str, kind: EventType) -> None:
    event = _one(_sub_event(evt_type))
    assert event.type is kind
    assert (event.invoice_ref, event.subscription_ref) == (SUBSCRIPTION_ID, SUBSCRIPTION_ID)
    assert event.customer_ref == PAYER_ID and event.decline is None


# --- sales and captures --------------------------------------------------------------------


def test_sale_completed_recovers_the_subscription() -> None:
    event = _one(paypal_sale_completed())
    assert event.type is EventType.PAYMENT_SUCCEEDED
    assert (event.invoice_ref, event.subscription_ref) == (SUBSCRIPTION_ID, SUBSCRIPTION_ID)
    assert (event.payment_ref, event.amount_minor, event.currency) == (SALE_ID, 4999, "USD")
    assert event.decline is None
    failure = _one(paypal_payment_failed())
    assert failure.invoice_ref == event.invoice_ref  # the recovery closes the same saga


def test_sale_denied() -> None:
    sale = paypal_sale(state="denied", reason_code="UNILATERAL")
    event = _one(paypal_event("PAYMENT.SALE.DENIED", sale, resource_type="sale"))
    assert event.type is EventType.PAYMENT_FAILED and event.invoice_ref == SUBSCRIPTION_ID
    assert event.decline is not None and event.decline.category is DeclineCategory.HARD
    assert (event.decline.message or "").startswith("merchant-side:")


@pytest.mark.parametrize(
    ("extra", "ref"),
    [
        ({"invoice_number": "INV-7"}, "INV-7"),
        ({"parent_payment": "PAYID-M3X2"}, "PAYID-M3X2"),
        ({}, SALE_ID),
    ],
)
def test_one_off_sale_refs(extra: dict[str, str], ref: str) -> None:
    sale = {**paypal_sale(billing_agreement_id=None), **extra}
    event = _one(paypal_event("PAYMENT.SALE.COMPLETED", sale, resource_type="sale"))
    assert (event.invoice_ref, event.subscription_ref) == (ref, None)


@pytest.mark.parametrize("evt_type", ["PAYMENT.CAPTURE.DENIED", "PAYMENT.CAPTURE.DECLINED"])
def test_capture_denied_with_card_processor_data(evt_type: str) -> None:
    capture = paypal_capture(response_code="5120", advice_code="02")
    event = _one(paypal_event(evt_type, capture, resource_type="capture"))
    assert event.type is EventType.PAYMENT_FAILED
    assert (event.invoice_ref, event.payment_ref) == ("INV-2025-0042", CAPTURE_ID)
    assert (event.amount_minor, event.currency) == (10000, "USD")
    assert event.decline is not None
    assert (event.decline.code, event.decline.advice_code) == ("5120", "02")
    assert event.decline.category is DeclineCategory.SOFT
    assert event.decline.message == "INSUFFICIENT_FUNDS"


def test_capture_refs_fall_back_to_order_then_capture() -> None:
    by_order = paypal_capture(invoice_id=None)
    alone = paypal_capture(invoice_id=None, order_id=None)
    assert (
        _one(paypal_event("PAYMENT.CAPTURE.DENIED", by_order, resource_type="capture")).invoice_ref
        == ORDER_ID
    )
    assert (
        _one(paypal_event("PAYMENT.CAPTURE.DENIED", alone, resource_type="capture")).invoice_ref
        == CAPTURE_ID
    )


def test_capture_completed_in_jpy() -> None:
    capture = paypal_capture(status="COMPLETED", value="5000", currency="JPY", response_code=None)
    event = _one(paypal_event("PAYMENT.CAPTURE.COMPLETED", capture, resource_type="capture"))
    assert event.type is EventType.PAYMENT_SUCCEEDED
    assert (event.amount_minor, event.currency, event.decline) == (5000, "JPY", None)


def test_capture_denied_by_the_payees_risk_filters_is_fraud() -> None:
    capture = paypal_capture(response_code=None, status_reason="DECLINED_BY_RISK_FRAUD_FILTERS")
    decline = _one(paypal_event("PAYMENT.CAPTURE.DENIED", capture, resource_type="capture")).decline
    assert decline is not None and decline.category is DeclineCategory.FRAUD


@pytest.mark.parametrize(
    "evt_type",
    ["PAYMENT.CAPTURE.REFUNDED", "BILLING.SUBSCRIPTION.CREATED", "CUSTOMER.DISPUTE.CREATED"],
)
def test_unhandled_event_types_give_nothing(evt_type: str) -> None:
    assert _normalize(paypal_event(evt_type, {"id": "X-1"}, resource_type="x")) == []


# --- parse / subject / ids ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b"[" * 100_000, "nested too deeply|not JSON"),
        (b'{"event_type":"X","resource":{},"create_time":"2025-06-15T15:06:40Z"}', "'id'"),
        (b'{"id":"WH-1","resource":{},"create_time":"2025-06-15T15:06:40Z"}', "'event_type'"),
        (b'{"id":"WH-1","event_type":"X","create_time":"2025-06-15T15:06:40Z"}', "'resource'"),
        (b'{"id":"WH-1","event_type":"X","resource":{}}', "create_time"),
        (b'{"id":"WH-1","event_type":"X","resource":{},"create_time":"soon"}', "create_time"),
    ],
)
def test_unreadable_bodies_are_payload_errors(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        paypal.parse(body)


def test_failure_resource_without_id_is_a_payload_error() -> None:
    event = paypal_payment_failed()
    del event["resource"]["id"]
    with pytest.raises(PayloadError, match="subscription has no id"):
        _normalize(event)


def test_naive_create_time_is_read_as_utc() -> None:
    event = {**paypal_payment_failed(), "create_time": "2025-06-15T15:06:40.123"}
    assert _one(event).occurred_at == datetime(2025, 6, 15, 15, 6, 40, 123000, tzinfo=UTC)


def test_offset_create_time_is_converted_to_utc() -> None:
    event = {**paypal_payment_failed(), "create_time": "2025-06-15T17:06:40+02:00"}
    assert _one(event).occurred_at == CREATED


@pytest.mark.parametrize(
    ("event", "subject"),
    [
        (paypal_payment_failed(), SUBSCRIPTION_ID),
        (paypal_sale_completed(), SUBSCRIPTION_ID),
        (paypal_event("PAYMENT.CAPTURE.DENIED", paypal_capture(), resource_type="capture"),
         "INV-2025-0042"),
        (paypal_event("CUSTOMER.DISPUTE.CREATED", {"id": "PP-D-1"}, resource_type="dispute"),
         "PP-D-1"),
        ({"event_type": 5, "resource": {}}, None),
    ],
)  # fmt: skip
def test_subject(event: dict[str, Any], subject: str | None) -> None:
    assert paypal.subject(event) == subject


def test_provider_event_id_and_names() -> None:
    assert paypal.provider_event_id(paypal_payment_failed()) == EVENT_ID
    with pytest.raises(PayloadError):
        paypal.provider_event_id({"id": 7})
    assert (paypal.name, paypal.secret_names) == ("paypal", ("webhook_id",))
    assert paypal.optional_secret_names == ("api_base", "client_id", "client_secret")


# --- properties -----------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=25,
)
_MONEY = st.fixed_dictionaries(
    {},
    optional={
        "value": st.one_of(st.text(max_size=12), st.integers(), st.floats(), st.booleans()),
        "total": st.text(max_size=12),
        "currency_code": st.text(max_size=4),
        "currency": st.sampled_from(["USD", "JPY", "usd", "US", "XXXX"]),
    },
)
_RESOURCE = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=10), st.integers(), st.none()),
        "billing_agreement_id": _JSON,
        "invoice_id": _JSON,
        "amount": st.one_of(_MONEY, _JSON),
        "subscriber": st.dictionaries(st.just("payer_id"), _JSON),
        "billing_info": st.fixed_dictionaries(
            {},
            optional={
                "failed_payments_count": _JSON,
                "outstanding_balance": _MONEY,
                "last_failed_payment": st.fixed_dictionaries(
                    {},
                    optional={
                        "amount": _MONEY,
                        "reason_code": _JSON,
                        "next_payment_retry_time": st.one_of(st.text(max_size=30), _JSON),
                    },
                ),
            },
        ),
        "processor_response": st.dictionaries(
            st.sampled_from(["response_code", "payment_advice_code"]), _JSON
        ),
        "status_details": st.dictionaries(st.just("reason"), _JSON),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    evt_type=st.sampled_from(
        [
            "BILLING.SUBSCRIPTION.PAYMENT.FAILED",
            "BILLING.SUBSCRIPTION.SUSPENDED",
            "BILLING.SUBSCRIPTION.CANCELLED",
            "BILLING.SUBSCRIPTION.ACTIVATED",
            "PAYMENT.SALE.DENIED",
            "PAYMENT.SALE.COMPLETED",
            "PAYMENT.CAPTURE.DENIED",
            "PAYMENT.CAPTURE.COMPLETED",
            "OTHER.EVENT",
        ]
    ),
    resource=st.one_of(_RESOURCE, _JSON),
    create_time=st.one_of(st.just("2025-06-15T15:06:40Z"), st.text(max_size=30), _JSON),
)
def test_random_events_only_ever_raise_payload_error(
    evt_type: str, resource: Any, create_time: Any
) -> None:
    doc = {"id": "WH-1", "event_type": evt_type, "resource": resource, "create_time": create_time}
    body = json.dumps(doc).encode()
    try:
        events = paypal.normalize(_raw(body), "webhooks.raw", 0, 0)
    except PayloadError:
        return
    assert all(e.invoice_ref and e.occurred_at.tzinfo is not None for e in events)


@settings(max_examples=200, deadline=None)
@given(body=st.one_of(st.binary(max_size=512), _JSON.map(lambda d: json.dumps(d).encode())))
def test_random_bodies_only_ever_raise_payload_error(body: bytes) -> None:
    try:
        doc = paypal.parse(body)
        paypal.subject(doc)
        paypal.normalize(_raw(body), "webhooks.raw", 0, 0)
    except PayloadError:
        pass


def test_decline_fields_the_model_refuses_are_a_payload_error() -> None:
    """Fuzz finding (issue 12 item 9): a NUL reason code escaped as a Decline ValidationError."""
    body = paypal_body(paypal_payment_failed(reason_code="\x00"))
    with pytest.raises(PayloadError):
        paypal.normalize(_raw(body), "webhooks.raw", 0, 0)


def test_subject_unfit_for_a_key_is_none() -> None:
    """Fuzz finding: a lone-surrogate subscription id made RawWebhook refuse the subject."""
    doc = paypal_payment_failed()
    doc["resource"]["id"] = "\udfff\ud800"
    assert paypal.subject(doc) is None
