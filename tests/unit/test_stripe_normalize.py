"""Stripe parse/subject/normalize: both invoice shapes, every handled event type."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import PayloadError, UnknownProvider
from paywatch.providers import registry
from paywatch.providers.base import event_id
from paywatch.providers.stripe import StripeProvider, stripe
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent, RawWebhook
from tests.builders.stripe import (
    BASIL_API_VERSION,
    CHARGE_ID,
    CREATED,
    CUSTOMER_ID,
    DAY,
    INVOICE_ID,
    LEGACY_API_VERSION,
    PAYMENT_INTENT_ID,
    SUBSCRIPTION_ID,
    stripe_body,
    stripe_charge_failed,
    stripe_event,
    stripe_invoice,
    stripe_payment_intent_failed,
    stripe_subscription,
)

EVT = "evt_1RaQ2xLkdIwHu7ixY3nB8cDe"


def _raw(body: bytes, tenant: str = "acme") -> RawWebhook:
    return RawWebhook(
        ingest_id="ing-1",
        tenant=tenant,
        provider="stripe",
        received_at=datetime.fromtimestamp(CREATED, UTC),
        body=body,
    )


def _normalize(
    event: dict[str, Any], *, tenant: str = "acme", offset: int = 42
) -> list[PaymentEvent]:
    return stripe.normalize(_raw(stripe_body(event), tenant), "webhooks.raw", 3, offset)


def _one(event: dict[str, Any]) -> PaymentEvent:
    events = _normalize(event)
    assert len(events) == 1
    return events[0]


def _invoice_event(evt_type: str, basil: bool, **kwargs: Any) -> dict[str, Any]:
    version = BASIL_API_VERSION if basil else LEGACY_API_VERSION
    return stripe_event(evt_type, stripe_invoice(basil=basil, **kwargs), api_version=version)


# --- invoices, both shapes ---------------------------------------------------------------

BOTH = pytest.mark.parametrize("basil", [True, False], ids=["basil", "legacy"])


@BOTH
def test_invoice_payment_failed(basil: bool) -> None:
    event = _one(_invoice_event("invoice.payment_failed", basil, attempt_count=2))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.source_type == "invoice.payment_failed"
    assert (event.invoice_ref, event.customer_ref) == (INVOICE_ID, CUSTOMER_ID)
    assert (event.subscription_ref, event.payment_ref) == (SUBSCRIPTION_ID, PAYMENT_INTENT_ID)
    assert (event.amount_minor, event.currency, event.attempt) == (4900, "USD", 2)
    assert event.decline is not None and event.decline.category is DeclineCategory.UNKNOWN
    assert event.provider_retry_at == datetime.fromtimestamp(CREATED + 3 * DAY, UTC)
    assert event.occurred_at == datetime.fromtimestamp(CREATED, UTC)


def test_basil_invoice_without_the_includable_payments_list_has_no_payment_ref() -> None:
    event = _one(_invoice_event("invoice.payment_failed", True, with_payments=False))
    assert event.payment_ref is None
    assert event.subscription_ref == SUBSCRIPTION_ID


def test_basil_invoice_prefers_the_default_payment() -> None:
    invoice = stripe_invoice(basil=True)
    default = invoice["payments"]["data"][0]
    other = {
        **default,
        "is_default": False,
        "payment": {"type": "payment_intent", "payment_intent": "pi_other"},
    }
    invoice["payments"]["data"] = [other, default]
    assert _one(stripe_event("invoice.payment_failed", invoice)).payment_ref == PAYMENT_INTENT_ID


def test_one_off_invoice_has_no_subscription() -> None:
    event = _one(_invoice_event("invoice.payment_failed", True, subscription=None))
    assert event.subscription_ref is None
    assert event.invoice_ref == INVOICE_ID


@BOTH
def test_invoice_payment_action_required_is_an_action_failure(basil: bool) -> None:
    event = _one(_invoice_event("invoice.payment_action_required", basil))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.decline is not None
    assert event.decline.code == "authentication_required"
    assert event.decline.category is DeclineCategory.ACTION


@BOTH
@pytest.mark.parametrize("evt_type", ["invoice.paid", "invoice.payment_succeeded"])
def test_invoice_success_uses_amount_paid(basil: bool, evt_type: str) -> None:
    event = _one(_invoice_event(evt_type, basil, paid=True, amount_due=12_345, attempt_count=3))
    assert event.type is EventType.PAYMENT_SUCCEEDED
    assert (event.amount_minor, event.attempt, event.invoice_ref) == (12_345, 3, INVOICE_ID)
    assert event.decline is None and event.provider_retry_at is None


def test_invoice_paid_out_of_band_reports_amount_paid_not_amount_due() -> None:
    invoice = stripe_invoice(basil=True, paid=True)
    invoice["amount_paid"] = 1_000
    assert _one(stripe_event("invoice.paid", invoice)).amount_minor == 1_000


@BOTH
@pytest.mark.parametrize(
    ("evt_type", "kind"),
    [
        ("invoice.voided", EventType.INVOICE_VOIDED),
        ("invoice.marked_uncollectible", EventType.INVOICE_UNCOLLECTIBLE),
        ("invoice.overdue", EventType.INVOICE_OVERDUE),
    ],
)
def test_invoice_terminal_and_overdue_events(basil: bool, evt_type: str, kind: EventType) -> None:
    event = _one(_invoice_event(evt_type, basil))
    assert (event.type, event.invoice_ref, event.decline) == (kind, INVOICE_ID, None)


def test_invoice_failure_amount_falls_back_to_amount_remaining() -> None:
    invoice = stripe_invoice(basil=True, amount_due=4900)
    del invoice["amount_due"]
    invoice["amount_remaining"] = 2_500
    assert _one(stripe_event("invoice.payment_failed", invoice)).amount_minor == 2_500


def test_null_next_payment_attempt_means_stripe_will_not_retry() -> None:
    event = _one(_invoice_event("invoice.payment_failed", True, next_payment_attempt=None))
    assert event.provider_retry_at is None


def test_currency_is_upper_cased() -> None:
    assert _one(_invoice_event("invoice.payment_failed", True, currency="eur")).currency == "EUR"


def test_legacy_invoice_with_expanded_charge_carries_its_decline_and_card() -> None:
    charge = stripe_charge_failed(
        basil=False, invoice=INVOICE_ID, reason="expired_card", brand="mastercard", last4="4444"
    )
    event = _one(_invoice_event("invoice.payment_failed", False, charge=charge))
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == ("expired_card", DeclineCategory.ACTION)
    assert event.payment_method is not None
    assert (event.payment_method.brand, event.payment_method.last4) == ("mastercard", "4444")


def test_basil_invoice_with_expanded_payment_intent_carries_its_decline() -> None:
    intent = stripe_payment_intent_failed(decline_code="lost_card")
    event = _one(_invoice_event("invoice.payment_failed", True, payment_intent=intent))
    assert event.payment_ref == PAYMENT_INTENT_ID
    assert event.decline is not None and event.decline.category is DeclineCategory.HARD


def test_invoice_last_finalization_error_is_used_as_decline() -> None:
    invoice = stripe_invoice(basil=True)
    invoice["last_finalization_error"] = {
        "code": "card_declined",
        "decline_code": "do_not_honor",
        "message": "Your card was declined.",
        "type": "card_error",
    }
    decline = _one(stripe_event("invoice.payment_failed", invoice)).decline
    assert decline is not None
    assert (decline.code, decline.category) == ("do_not_honor", DeclineCategory.SOFT)


# --- charges and payment intents ---------------------------------------------------------


def test_basil_charge_failed_is_tracked_under_its_payment_intent() -> None:
    event = _one(stripe_event("charge.failed", stripe_charge_failed()))
    assert event.type is EventType.PAYMENT_FAILED
    assert (event.invoice_ref, event.payment_ref) == (PAYMENT_INTENT_ID, PAYMENT_INTENT_ID)
    assert (event.amount_minor, event.currency, event.attempt) == (4900, "USD", None)
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == (
        "insufficient_funds",
        DeclineCategory.SOFT,
    )
    assert event.decline.message == "Your card has insufficient funds."


def test_legacy_charge_failed_is_tracked_under_its_invoice() -> None:
    charge = stripe_charge_failed(basil=False, invoice=INVOICE_ID)
    event = _one(stripe_event("charge.failed", charge, api_version=LEGACY_API_VERSION))
    assert event.invoice_ref == INVOICE_ID


def test_charge_without_payment_intent_is_tracked_under_the_charge() -> None:
    event = _one(stripe_event("charge.failed", stripe_charge_failed(payment_intent=None)))
    assert (event.invoice_ref, event.payment_ref) == (CHARGE_ID, CHARGE_ID)


def test_charge_network_advice_goes_to_advice_code_and_wins() -> None:
    charge = stripe_charge_failed(
        brand="mastercard",
        reason="do_not_honor",
        advice_code="try_again_later",
        network_advice_code="03",
        network_decline_code="05",
    )
    decline = _one(stripe_event("charge.failed", charge)).decline
    assert decline is not None
    assert (decline.advice_code, decline.network_code, decline.network) == (
        "03",
        "05",
        "mastercard",
    )
    assert decline.category is DeclineCategory.HARD


def test_charge_stripe_advice_code_used_when_no_network_advice() -> None:
    charge = stripe_charge_failed(reason="generic_decline", advice_code="do_not_try_again")
    decline = _one(stripe_event("charge.failed", charge)).decline
    assert decline is not None
    assert (decline.advice_code, decline.category) == ("do_not_try_again", DeclineCategory.HARD)


def test_radar_blocked_charge_is_fraud() -> None:
    charge = stripe_charge_failed(
        outcome_type="blocked", reason="highest_risk_level", advice_code="try_again_later"
    )
    decline = _one(stripe_event("charge.failed", charge)).decline
    assert decline is not None
    assert (decline.code, decline.category) == ("highest_risk_level", DeclineCategory.FRAUD)


def test_charge_card_keeps_only_safe_facts() -> None:
    event = _one(stripe_event("charge.failed", stripe_charge_failed(brand="amex", last4="0005")))
    assert event.payment_method is not None
    assert event.payment_method.model_dump() == {
        "brand": "amex",
        "last4": "0005",
        "exp_month": 12,
        "exp_year": 2030,
        "fingerprint": "Xt5EWLLDS7FJjR1c",
    }


def test_malformed_last4_is_dropped() -> None:
    charge = stripe_charge_failed()
    charge["payment_method_details"]["card"]["last4"] = "42424242"
    event = _one(stripe_event("charge.failed", charge))
    assert event.payment_method is not None and event.payment_method.last4 is None


@pytest.mark.parametrize(("basil", "invoice_ref"), [(True, PAYMENT_INTENT_ID), (False, INVOICE_ID)])
def test_payment_intent_payment_failed(basil: bool, invoice_ref: str) -> None:
    intent = stripe_payment_intent_failed(
        basil=basil,
        invoice=INVOICE_ID,
        decline_code="expired_card",
        amount=990,
        currency="gbp",
        brand="visa",
        last4="1881",
    )
    event = _one(stripe_event("payment_intent.payment_failed", intent))
    assert (event.type, event.invoice_ref, event.payment_ref) == (
        EventType.PAYMENT_FAILED,
        invoice_ref,
        PAYMENT_INTENT_ID,
    )
    assert (event.amount_minor, event.currency) == (990, "GBP")
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == ("expired_card", DeclineCategory.ACTION)
    assert event.decline.network == "visa"
    assert event.payment_method is not None and event.payment_method.last4 == "1881"


def test_payment_intent_network_decline_code_is_used() -> None:
    intent = stripe_payment_intent_failed(decline_code="generic_decline", network_decline_code="R1")
    decline = _one(stripe_event("payment_intent.payment_failed", intent)).decline
    assert decline is not None
    assert (decline.network_code, decline.category) == ("R1", DeclineCategory.HARD)


def test_payment_intent_without_error_has_unknown_decline() -> None:
    intent = stripe_payment_intent_failed()
    intent["last_payment_error"] = None
    decline = _one(stripe_event("payment_intent.payment_failed", intent)).decline
    assert decline is not None and decline.category is DeclineCategory.UNKNOWN


# --- subscriptions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        ("active", "past_due", EventType.SUBSCRIPTION_PAST_DUE),
        ("active", "unpaid", EventType.SUBSCRIPTION_PAST_DUE),
        ("past_due", "active", EventType.SUBSCRIPTION_REACTIVATED),
        ("unpaid", "active", EventType.SUBSCRIPTION_REACTIVATED),
    ],
)
def test_subscription_status_changes(before: str, after: str, kind: EventType) -> None:
    event = _one(
        stripe_event(
            "customer.subscription.updated",
            stripe_subscription(status=after),
            previous_attributes={"status": before},
        )
    )
    assert event.type is kind
    assert (event.invoice_ref, event.subscription_ref) == (INVOICE_ID, SUBSCRIPTION_ID)
    assert event.customer_ref == CUSTOMER_ID


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("trialing", "active"),
        ("active", "canceled"),
        ("incomplete", "active"),
        (None, "past_due"),
    ],
)
def test_other_subscription_updates_give_nothing(before: str | None, after: str) -> None:
    previous = {"status": before} if before else {"cancel_at_period_end": True}
    event = stripe_event(
        "customer.subscription.updated",
        stripe_subscription(status=after),
        previous_attributes=previous,
    )
    assert _normalize(event) == []


def test_subscription_without_latest_invoice_is_keyed_by_subscription() -> None:
    sub = stripe_subscription(basil=False, status="past_due", latest_invoice=None)
    event = _one(
        stripe_event("customer.subscription.updated", sub, previous_attributes={"status": "active"})
    )
    assert event.invoice_ref == f"sub:{SUBSCRIPTION_ID}"


def test_subscription_deleted_is_canceled() -> None:
    event = _one(
        stripe_event("customer.subscription.deleted", stripe_subscription(status="canceled"))
    )
    assert (event.type, event.invoice_ref) == (EventType.SUBSCRIPTION_CANCELED, INVOICE_ID)


# --- unknown types, ids, provenance ------------------------------------------------------


@pytest.mark.parametrize(
    "evt_type",
    ["charge.succeeded", "invoice.created", "customer.created", "invoiceitem.created", "x"],
)
def test_unknown_types_give_nothing(evt_type: str) -> None:
    assert _normalize(stripe_event(evt_type, {"id": "obj_1"})) == []


def test_event_ids_are_deterministic_and_distinct() -> None:
    failed = _invoice_event("invoice.payment_failed", True)
    first, again = _one(failed), _normalize(failed, offset=999)[0]
    assert first.event_id == again.event_id == event_id("acme", "stripe", EVT, 0)
    assert first.event_id != event_id("acme", "stripe", EVT, 1)
    other = _invoice_event("invoice.payment_failed", True)
    other["id"] = "evt_1RaQ2xLkdIwHu7ixOTHER000"
    assert _one(other).event_id != first.event_id
    assert _normalize(failed, tenant="globex")[0].event_id != first.event_id


def test_provenance_is_recorded() -> None:
    event = _normalize(_invoice_event("invoice.payment_failed", True), offset=7)[0]
    assert event.raw is not None
    assert (event.raw.topic, event.raw.partition, event.raw.offset) == ("webhooks.raw", 3, 7)
    assert event.raw.provider_event_id == EVT
    assert (event.tenant, event.provider) == ("acme", "stripe")


# --- parse, subject, errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"not json",
        b"[]",
        b"42",
        b'"evt"',
        b"{}",
        b'{"id": "evt_1", "type": "invoice.paid"}',
        b'{"id": "evt_1", "type": "invoice.paid", "data": {"object": []}}',
        b'{"id": 5, "type": "invoice.paid", "data": {"object": {}}}',
        b'{"id": "evt_1", "type": "", "data": {"object": {}}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"id": "evt_1", "n": ' + b"9" * 5_000 + b"}",
    ],
)
def test_unreadable_bodies_raise_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        stripe.parse(body)
    with pytest.raises(PayloadError):
        stripe.normalize(_raw(body), "webhooks.raw", 0, 0)


def test_non_utf8_encodings_of_a_valid_event_are_refused() -> None:
    # json.loads(bytes) would sniff and accept UTF-16; Stripe sends UTF-8 only.
    body = json.dumps(_invoice_event("invoice.payment_failed", True)).encode("utf-16")
    with pytest.raises(PayloadError, match="not UTF-8"):
        stripe.parse(body)


@pytest.mark.parametrize("created", [None, "1750000000", 10**20, True])
def test_bad_created_raises_payload_error(created: Any) -> None:
    event = _invoice_event("invoice.payment_failed", True)
    event["created"] = created
    with pytest.raises(PayloadError):
        _normalize(event)


def test_handled_object_without_id_raises_payload_error() -> None:
    with pytest.raises(PayloadError, match="invoice has no id"):
        _normalize(stripe_event("invoice.payment_failed", {"object": "invoice"}))


def test_parse_returns_the_document() -> None:
    event = _invoice_event("invoice.payment_failed", True)
    assert stripe.parse(stripe_body(event)) == event
    assert stripe.provider_event_id(event) == EVT


@pytest.mark.parametrize(
    ("event", "subject"),
    [
        (stripe_event("invoice.payment_failed", stripe_invoice(basil=True)), INVOICE_ID),
        (
            stripe_event("charge.failed", stripe_charge_failed(basil=False, invoice=INVOICE_ID)),
            INVOICE_ID,
        ),
        (stripe_event("charge.failed", stripe_charge_failed()), CUSTOMER_ID),
        (
            stripe_event("payment_intent.payment_failed", stripe_payment_intent_failed()),
            CUSTOMER_ID,
        ),
        (stripe_event("customer.subscription.updated", stripe_subscription()), INVOICE_ID),
        (
            stripe_event("customer.subscription.deleted", stripe_subscription(latest_invoice=None)),
            CUSTOMER_ID,
        ),
        (stripe_event("balance.available", {"object": "balance"}), None),
    ],
)
def test_subject_names_invoice_else_customer(event: dict[str, Any], subject: str | None) -> None:
    assert stripe.subject(event) == subject


def test_registry_serves_stripe_and_knows_the_contract_list() -> None:
    assert registry.get_provider("stripe") is stripe
    assert isinstance(stripe, StripeProvider)
    assert (stripe.name, stripe.secret_names) == ("stripe", ("signing_secret",))
    assert set(registry.KNOWN_PROVIDERS) == {
        "stripe",
        "paypal",
        "braintree",
        "authorizenet",
        "xero",
        "quickbooks",
        "adyen",
        "checkout",
        "generic",
    }
    assert set(registry.PROVIDERS) == set(registry.KNOWN_PROVIDERS)  # every one enabled
    with pytest.raises(UnknownProvider, match="not enabled"):
        registry.get_provider("xero", {"stripe": stripe})
    with pytest.raises(UnknownProvider, match="unknown provider"):
        registry.get_provider("venmo")


# --- robustness: any JSON in a handled event type gives events or PayloadError ----------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "customer",
                    "status",
                    "invoice",
                    "payment_intent",
                    "charge",
                    "amount",
                    "amount_due",
                    "currency",
                    "outcome",
                    "reason",
                    "card",
                    "last_payment_error",
                    "payment_method",
                    "payments",
                    "data",
                    "payment",
                    "parent",
                    "subscription_details",
                    "subscription",
                    "latest_invoice",
                    "next_payment_attempt",
                    "attempt_count",
                    "payment_method_details",
                    "last4",
                    "exp_month",
                    "networks",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(
    evt_type=st.sampled_from(
        [
            "invoice.payment_failed",
            "invoice.paid",
            "charge.failed",
            "payment_intent.payment_failed",
            "customer.subscription.updated",
            "customer.subscription.deleted",
            "invoice.overdue",
        ]
    ),
    obj=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "customer",
                "status",
                "currency",
                "charge",
                "payments",
                "last_payment_error",
                "outcome",
                "payment_method_details",
                "latest_invoice",
                "amount",
                "next_payment_attempt",
            ]
        ),
        _JSON,
    ),
    previous=_JSON,
    created=st.one_of(st.integers(0, 2**32), st.integers(), st.none(), st.text(max_size=3)),
    with_id=st.booleans(),
)
def test_any_json_in_handled_types_gives_events_or_payload_error(
    evt_type: str, obj: dict[str, Any], previous: Any, created: Any, with_id: bool
) -> None:
    if with_id:
        obj = {**obj, "id": "obj_1"}
    doc = {
        "id": EVT,
        "type": evt_type,
        "created": created,
        "data": {"object": obj, "previous_attributes": previous},
    }
    try:
        events = stripe.normalize(_raw(json.dumps(doc).encode()), "webhooks.raw", 0, 0)
    except PayloadError:
        return
    assert all(isinstance(e, PaymentEvent) for e in events)


def test_provider_with_custom_tolerance_is_still_a_provider() -> None:
    assert (
        StripeProvider(tolerance=60)
        .normalize(
            _raw(stripe_body(_invoice_event("invoice.paid", True, paid=True))),
            "t",
            0,
            0,
        )[0]
        .type
        is EventType.PAYMENT_SUCCEEDED
    )


def test_card_fields_the_model_refuses_are_a_payload_error() -> None:
    """Fuzz finding (issue 12 item 9): an absurd ``exp_month`` escaped as ValidationError."""
    charge = stripe_charge_failed(basil=False, invoice="in_fuzz")
    charge["payment_method_details"]["card"]["exp_month"] = 10**18
    body = stripe_body(stripe_event("charge.failed", charge))
    with pytest.raises(PayloadError):
        stripe.normalize(_raw(body), "webhooks.raw", 0, 0)


@pytest.mark.parametrize("bad", ["a\x00b", "x" * 256, "\ud800"])
def test_subject_unfit_for_a_key_is_none(bad: str) -> None:
    """Fuzz finding: the ingest puts ``subject`` into RawWebhook, which refused these (500)."""
    charge = stripe_charge_failed(basil=False, invoice=bad)
    doc = stripe_event("charge.failed", charge)
    assert stripe.subject(doc) is None
