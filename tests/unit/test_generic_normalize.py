"""Generic payload schema: parse/subject/normalize and the decline rules behind it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import CardDataError, PayloadError
from paywatch.providers.base import event_id
from paywatch.providers.generic import declines, generic
from paywatch.providers.generic.schema import TYPES
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent, RawWebhook
from tests.builders.generic import (
    MSG_ID,
    generic_body,
    generic_failure,
    generic_payload,
    generic_recovery,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "generic"
HEADER_ID = "msg_header_2Kq8vZ3mTnW6"


def _raw(body: bytes, msg_id: str | None = HEADER_ID) -> RawWebhook:
    headers = {"content-type": "application/json"}
    if msg_id is not None:
        headers["webhook-id"] = msg_id
    return RawWebhook(
        ingest_id="ing-1",
        tenant="acme",
        provider="generic",
        received_at=datetime(2026, 6, 15, 10, tzinfo=UTC),
        headers=headers,
        body=body,
    )


def _events(body: bytes, msg_id: str | None = HEADER_ID) -> list[PaymentEvent]:
    return generic.normalize(_raw(body, msg_id), "webhooks.raw", 3, 42)


def _one(body: bytes, msg_id: str | None = HEADER_ID) -> PaymentEvent:
    events = _events(body, msg_id)
    assert len(events) == 1
    return events[0]


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _payload(**fields: Any) -> bytes:
    return generic_body({k: v for k, v in generic_payload(**fields).items() if v is not None})


# --- events ------------------------------------------------------------------------------


def test_payment_failed_carries_every_schema_field() -> None:
    event = _one(_fixture("payment.failed.json"))
    assert (event.type, event.source_type) == (EventType.PAYMENT_FAILED, "payment.failed")
    assert (event.invoice_ref, event.customer_ref, event.subscription_ref) == (
        "INV-2026-0615",
        "cus_4f2a91",
        "sub_pro_monthly_8841",
    )
    assert (event.payment_ref, event.amount_minor, event.currency, event.attempt) == (
        "pay_7d1e02",
        4999,
        "EUR",
        2,
    )
    assert event.occurred_at == datetime(2026, 6, 15, 9, 30, 12, tzinfo=UTC)
    assert event.provider_retry_at == datetime(2026, 6, 18, 9, 30, 12, tzinfo=UTC)
    decline = event.decline
    assert decline is not None
    assert (decline.code, decline.category, decline.network, decline.network_code) == (
        "insufficient_funds",
        DeclineCategory.SOFT,
        "visa",
        "51",
    )
    assert event.payment_method is not None and event.payment_method.last4 == "4242"


def test_the_webhook_id_header_is_the_event_id() -> None:
    event = _one(_fixture("payment.failed.json"))
    assert event.event_id == event_id("acme", "generic", HEADER_ID, 0)
    assert event.raw is not None and event.raw.provider_event_id == HEADER_ID
    assert (event.raw.topic, event.raw.partition, event.raw.offset) == ("webhooks.raw", 3, 42)


def test_without_the_header_the_body_id_then_a_content_hash_is_used() -> None:
    assert _one(_fixture("payment.failed.json"), None).raw.provider_event_id == MSG_ID  # type: ignore[union-attr]
    body = _payload(id=None)
    first, again = _one(body, None), _one(body, None)
    assert first.event_id == again.event_id
    assert first.raw is not None and first.raw.provider_event_id.startswith("sha256:")
    assert generic.provider_event_id(generic.parse(body)) == first.raw.provider_event_id


def test_content_hash_ignores_key_order() -> None:
    doc = generic_payload(id=None)
    del doc["id"]
    reordered = dict(reversed(list(doc.items())))
    assert generic.provider_event_id(doc) == generic.provider_event_id(reordered)


def test_mastercard_advice_beats_the_senders_category() -> None:
    decline = _one(_fixture("payment.failed.mastercard.json")).decline
    assert decline is not None
    assert (decline.category, decline.network, decline.advice_code) == (
        DeclineCategory.HARD,
        "mastercard",
        "03",
    )


def test_merchant_side_declines_are_hard_and_say_so() -> None:
    event = _one(_fixture("payment.failed.merchant_side.json"))
    assert event.decline is not None
    assert event.decline.category is DeclineCategory.HARD
    assert event.decline.message == "merchant-side: Currency not enabled on the merchant account"
    assert (event.amount_minor, event.currency) == (5000, "JPY")


def test_payment_succeeded_is_the_recovery() -> None:
    event = _one(_fixture("payment.succeeded.json"))
    assert (event.type, event.invoice_ref, event.decline) == (
        EventType.PAYMENT_SUCCEEDED,
        "INV-2026-0615",
        None,
    )


def test_subscription_events_without_invoice_use_the_subscription() -> None:
    event = _one(_fixture("subscription.canceled.json"))
    assert (event.type, event.invoice_ref) == (
        EventType.SUBSCRIPTION_CANCELED,
        "sub:sub_pro_monthly_8841",
    )
    assert event.occurred_at == datetime(2026, 7, 14, 22, tzinfo=UTC)


def test_card_expiring_falls_back_to_the_customer() -> None:
    event = _one(_fixture("card.expiring.json"))
    assert (event.type, event.invoice_ref) == (EventType.CARD_EXPIRING, "cus:cus_4f2a91")


def test_unknown_types_give_nothing() -> None:
    assert _events(_fixture("unknown.type.json")) == []


@pytest.mark.parametrize("event_type", sorted(TYPES))
def test_every_documented_type_maps(event_type: str) -> None:
    assert _one(_payload(event_type=event_type)).type is TYPES[event_type]


def test_failure_without_decline_gets_an_unknown_one() -> None:
    decline = _one(_payload(event_type="payment.failed")).decline
    assert decline is not None and decline.category is DeclineCategory.UNKNOWN


# --- amounts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("49.99", "EUR", 4999),
        ("1000", "JPY", 1000),
        ("1.234", "TND", 1234),
        (49.99, "usd", 4999),
        (12, "EUR", 1200),
    ],
)
def test_decimal_amounts_use_the_currency_exponent(
    amount: object, currency: str, minor: int
) -> None:
    event = _one(_payload(amount=amount, currency=currency))
    assert (event.amount_minor, event.currency) == (minor, currency.upper())


def test_json_numbers_are_read_exactly() -> None:
    body = _payload().replace(b'"49.99"', b"0.29")
    assert generic.parse(body)["amount"] == Decimal("0.29")
    assert _one(body).amount_minor == 29


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"amount": "49.999"}, "more decimals"),
        ({"amount": "1.5", "currency": "JPY"}, "more decimals"),
        ({"amount": "abc"}, "not a number"),
        ({"amount": True}, "decimal string"),
        ({"amount": "1", "currency": None}, "needs a 'currency'"),
        ({"amount": "1", "amount_minor": 100}, "not both"),
        ({"amount": None, "amount_minor": "100"}, "integer"),
        ({"currency": "EURO"}, "ISO 4217"),
        ({"attempt": 0}, "'attempt'"),
        ({"invoice_ref": 5}, "must be a string"),
        ({"occurred_at": None}, "no 'occurred_at'"),
        ({"occurred_at": "2026-06-15T09:30:12"}, "UTC offset"),
        ({"occurred_at": "soon"}, "ISO 8601"),
        ({"next_retry_at": "later"}, "ISO 8601"),
        ({"decline": "soft"}, "must be an object"),
        ({"decline": {"category": "MAYBE"}}, "SOFT, HARD"),
        ({"decline": {"merchant_side": "yes"}}, "true or false"),
        ({"payment_method": {"last4": "42"}}, "four digits"),
        ({"payment_method": {"exp_month": 13}}, "exp_month"),
        (
            {"invoice_ref": None, "subscription_ref": None, "customer_ref": None},
            "names no invoice_ref",
        ),
    ],
)
def test_schema_violations_are_malformed(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        _events(_payload(event_type="payment.failed", **fields))


def test_lower_case_category_and_unknown_keys_are_accepted() -> None:
    body = _payload(decline={"category": "action"}, extra_field={"anything": 1})
    decline = _one(body).decline
    assert decline is not None and decline.category is DeclineCategory.ACTION


# --- parse / subject ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "JSON object"),
        (b"{}", "'type'"),
        (b'{"type": 5}', "'type'"),
        (b"\xff", "UTF-8"),
        (b"{", "not JSON"),
    ],
)
def test_parse_rejects_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        generic.parse(body)


def test_escaped_card_numbers_are_card_data() -> None:
    body = _payload(payment_ref="4242424242424242").replace(
        b"4242424242424242", b"\\u00342424242424242"
    )
    with pytest.raises(CardDataError):
        generic.parse(body)


def test_subject_prefers_invoice_then_subscription_then_customer() -> None:
    assert generic.subject(generic_payload()) == "INV-2026-0615"
    assert generic.subject({"subscription_ref": "sub_1", "customer_ref": "c"}) == "sub_1"
    assert generic.subject({"customer_ref": "c"}) == "c"
    assert generic.subject({}) is None


def test_samples_are_a_failure_then_its_recovery() -> None:
    failure = _one(generic_body(generic_failure()), None)
    recovery = _one(generic_body(generic_recovery()), None)
    assert failure.invoice_ref == recovery.invoice_ref
    assert (failure.type, recovery.type) == (EventType.PAYMENT_FAILED, EventType.PAYMENT_SUCCEEDED)
    assert failure.event_id != recovery.event_id


# --- declines ----------------------------------------------------------------------------


def test_sender_fraud_is_never_overridden() -> None:
    verdict = declines.explain(
        DeclineCategory.FRAUD, merchant_side=True, network="mastercard", advice_code="01"
    )
    assert verdict.category is DeclineCategory.FRAUD


def test_network_rules_beat_the_senders_category() -> None:
    verdict = declines.explain(DeclineCategory.SOFT, network="visa", network_code="14")
    assert verdict.category is DeclineCategory.HARD
    assert verdict.rule is not None and verdict.rule.id == "visa.category1"


def test_sender_category_is_used_with_its_source() -> None:
    verdict = declines.explain(DeclineCategory.ACTION)
    assert verdict.category is DeclineCategory.ACTION
    assert verdict.rule is not None and "generic" in verdict.rule.source
    assert declines.explain(DeclineCategory.UNKNOWN).rule is None


_FIELDS = st.fixed_dictionaries(
    {"type": st.sampled_from([*sorted(TYPES), "other"])},
    optional={
        "occurred_at": st.one_of(
            st.text(max_size=30), st.just("2026-06-15T09:30:12Z"), st.integers()
        ),
        "invoice_ref": st.one_of(st.none(), st.text(max_size=10), st.integers()),
        "customer_ref": st.one_of(st.none(), st.text(max_size=10)),
        "amount": st.one_of(
            st.text(max_size=8), st.integers(), st.floats(allow_nan=False, allow_infinity=False)
        ),
        "amount_minor": st.one_of(st.integers(), st.text(max_size=5)),
        "currency": st.one_of(st.text(max_size=4), st.sampled_from(["EUR", "JPY", "TND"])),
        "attempt": st.one_of(st.integers(), st.text(max_size=3)),
        "next_retry_at": st.text(max_size=30),
        "decline": st.one_of(
            st.text(max_size=5),
            st.dictionaries(
                st.sampled_from(
                    [
                        "code",
                        "category",
                        "message",
                        "network",
                        "network_code",
                        "advice_code",
                        "merchant_side",
                    ]
                ),
                st.one_of(st.text(max_size=8), st.booleans(), st.integers(), st.none()),
            ),
        ),
        "payment_method": st.dictionaries(
            st.sampled_from(["brand", "last4", "exp_month", "exp_year", "fingerprint"]),
            st.one_of(st.text(max_size=6), st.integers(), st.none()),
        ),
    },
)


@settings(max_examples=400, deadline=None)
@given(doc=_FIELDS, header=st.one_of(st.none(), st.text(min_size=1, max_size=20)))
def test_random_payloads_normalize_or_raise_payload_errors_only(
    doc: dict[str, Any], header: str | None
) -> None:
    try:
        body = json.dumps(doc).encode("utf-8")
    except UnicodeEncodeError:
        return
    try:
        _events(body, header)
    except (PayloadError, CardDataError):
        pass


def test_subject_unfit_for_a_key_is_none() -> None:
    """Same guard as the fuzz findings of issue 12 item 9: an over-long ref names no subject."""
    from paywatch.providers.generic import generic

    assert generic.subject(generic_failure(invoice_ref="x" * 256)) is None
