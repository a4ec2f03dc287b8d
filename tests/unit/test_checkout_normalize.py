"""Checkout.com parse/subject/normalize and decline classification."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from paywatch.errors import CardDataError, PayloadError
from paywatch.providers.base import event_id
from paywatch.providers.checkout import CheckoutProvider, checkout, declines
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent, RawWebhook
from tests.builders.checkout import (
    checkout_body,
    checkout_event,
    checkout_failure,
    checkout_payment,
    checkout_recovery,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "checkout"
SOFT, HARD, ACTION, FRAUD, UNKNOWN = (
    DeclineCategory.SOFT,
    DeclineCategory.HARD,
    DeclineCategory.ACTION,
    DeclineCategory.FRAUD,
    DeclineCategory.UNKNOWN,
)


def _raw(body: bytes) -> RawWebhook:
    return RawWebhook(
        ingest_id="ing-1",
        tenant="acme",
        provider="checkout",
        received_at=datetime(2026, 6, 15, 10, tzinfo=UTC),
        body=body,
    )


def _events(body: bytes, provider: CheckoutProvider = checkout) -> list[PaymentEvent]:
    return provider.normalize(_raw(body), "webhooks.raw", 3, 42)


def _one(body: bytes, provider: CheckoutProvider = checkout) -> PaymentEvent:
    events = _events(body, provider)
    assert len(events) == 1
    return events[0]


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _declined(**payment: Any) -> bytes:
    return checkout_body(checkout_event("payment_declined", checkout_payment(**payment)))


# --- events ------------------------------------------------------------------------------


def test_payment_declined_is_a_classified_failure_with_checkouts_retry() -> None:
    event = _one(_fixture("payment_declined.json"))
    assert (event.type, event.source_type) == (EventType.PAYMENT_FAILED, "payment_declined")
    assert (event.invoice_ref, event.payment_ref) == (
        "INV-2026-0615",
        "pay_do6kcxcq4pwehkbrupwnohnbyq",
    )
    assert (event.customer_ref, event.subscription_ref) == (
        "cus_m3cixs4slzcelfjmdcodlgyvkq",
        "sub_pro_monthly_8841",
    )
    assert (event.amount_minor, event.currency, event.attempt) == (4900, "EUR", 1)
    assert event.occurred_at == datetime(2026, 6, 15, 9, 30, 12, 475275, tzinfo=UTC)
    assert event.provider_retry_at == datetime(2026, 6, 18, 9, 30, 12, tzinfo=UTC)
    decline = event.decline
    assert decline is not None
    assert (decline.code, decline.category, decline.network) == ("20051", SOFT, "visa")
    assert (decline.network_code, decline.message) == ("51", "Insufficient Funds")
    method = event.payment_method
    assert method is not None
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == (
        "visa",
        "4242",
        6,
        2029,
    )


def test_event_id_is_deterministic_and_raw_ref_names_the_event() -> None:
    event = _one(_fixture("payment_declined.json"))
    assert event.event_id == event_id("acme", "checkout", "evt_wlbf3ivtsjjuxjabg3jlju4ysa", 0)
    assert event.raw is not None
    assert (event.raw.partition, event.raw.offset) == (3, 42)
    assert event.raw.provider_event_id == "evt_wlbf3ivtsjjuxjabg3jlju4ysa"


def test_mastercard_advice_code_beats_the_soft_range() -> None:
    decline = _one(_fixture("payment_declined.mastercard_mac.json")).decline
    assert decline is not None
    assert (decline.category, decline.network, decline.advice_code) == (HARD, "mastercard", "03")


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("payment_declined.expired_card.json", ACTION),
        ("payment_declined.risk.json", FRAUD),
        ("payment_declined.hard.json", HARD),
        ("payment_capture_declined.json", SOFT),
    ],
)
def test_fixture_categories(name: str, category: DeclineCategory) -> None:
    event = _one(_fixture(name))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.decline is not None and event.decline.category is category


def test_expired_card_without_retry_has_no_provider_retry() -> None:
    event = _one(_fixture("payment_declined.expired_card.json"))
    assert (event.attempt, event.provider_retry_at) == (None, None)


def test_payment_captured_is_the_recovery() -> None:
    event = _one(_fixture("payment_captured.json"))
    assert (event.type, event.invoice_ref) == (EventType.PAYMENT_SUCCEEDED, "INV-2026-0615")
    assert (event.decline, event.attempt, event.provider_retry_at) == (None, None, None)


def test_payment_approved_is_not_mapped_by_default_but_can_be() -> None:
    assert _events(_fixture("payment_approved.json")) == []
    approving = CheckoutProvider(events={"payment_approved": EventType.PAYMENT_SUCCEEDED})
    assert _one(_fixture("payment_approved.json"), approving).type is EventType.PAYMENT_SUCCEEDED
    assert _events(_fixture("payment_captured.json"), approving) == []


def test_payment_type_filter() -> None:
    recurring_only = CheckoutProvider(payment_types={"Recurring", "unscheduled"})
    assert len(_events(_declined(payment_type="RECURRING"), recurring_only)) == 1
    assert _events(_declined(payment_type="Regular"), recurring_only) == []
    assert len(_events(_declined(payment_type="Regular"))) == 1


def test_subscription_metadata_key_is_configurable() -> None:
    provider = CheckoutProvider(subscription_key="plan")
    assert _one(_fixture("payment_declined.json"), provider).subscription_ref is None


def test_missing_reference_falls_back_to_the_payment_id() -> None:
    event = _one(_declined(reference=None))
    assert event.invoice_ref == event.payment_ref == "pay_do6kcxcq4pwehkbrupwnohnbyq"


def test_without_processed_on_the_event_creation_time_is_used() -> None:
    doc = json.loads(_fixture("payment_declined.json"))
    del doc["data"]["processed_on"]
    assert _one(json.dumps(doc).encode()).occurred_at == datetime(
        2026, 6, 15, 9, 30, 14, 335217, tzinfo=UTC
    )


@pytest.mark.parametrize("created_on", [None, "not a time", "2026-06-15T09:30:14"])
def test_without_any_aware_time_the_event_is_malformed(created_on: str | None) -> None:
    doc = json.loads(_fixture("payment_declined.json"))
    del doc["data"]["processed_on"]
    doc["created_on"] = created_on
    with pytest.raises(PayloadError, match="processed_on"):
        _events(json.dumps(doc).encode())


def test_an_impossible_next_attempt_date_is_ignored() -> None:
    # Checkout.com's own example carries "2023-06-34T15:24:56.9871232Z".
    body = checkout_body(
        checkout_failure(retry={"attempts_made": 2, "next_attempt_on": "2023-06-34T15:24:56Z"})
    )
    event = _one(body)
    assert (event.attempt, event.provider_retry_at) == (2, None)


def test_amounts_are_minor_units_for_every_exponent() -> None:
    assert _one(_declined(amount=5000, currency="jpy")).amount_minor == 5000
    assert _one(_declined(amount=12345, currency="KWD")).currency == "KWD"


def test_unknown_event_types_give_nothing() -> None:
    body = checkout_body(checkout_event("dispute_evidence_required", {"id": "dsp_1"}))
    assert _events(body) == []


def test_event_without_reference_or_payment_id_is_malformed() -> None:
    body = checkout_body(checkout_event("payment_declined", {"amount": 1}))
    with pytest.raises(PayloadError, match="no 'reference'"):
        _events(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "JSON object"),
        (b'{"type": "payment_declined", "data": {}}', "'id'"),
        (b'{"id": "evt_1", "data": {}}', "'type'"),
        (b'{"id": "evt_1", "type": "payment_declined"}', "'data'"),
        (b"\xff", "UTF-8"),
        (b"{", "not JSON"),
    ],
)
def test_parse_rejects_malformed_events(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        checkout.parse(body)


def test_escaped_card_numbers_are_card_data() -> None:
    body = _declined(reference="4242424242424242").replace(
        b"4242424242424242", b"\\u00342424242424242"
    )
    with pytest.raises(CardDataError):
        checkout.parse(body)


def test_subject_and_provider_event_id() -> None:
    doc = checkout.parse(_fixture("payment_declined.json"))
    assert checkout.subject(doc) == "INV-2026-0615"
    assert checkout.provider_event_id(doc) == "evt_wlbf3ivtsjjuxjabg3jlju4ysa"
    assert checkout.subject({"data": {"id": "pay_1"}}) == "pay_1"
    assert checkout.subject({}) is None
    with pytest.raises(PayloadError):
        checkout.provider_event_id({})


def test_samples_are_a_failure_then_its_recovery() -> None:
    failure = _one(checkout_body(checkout_failure()))
    recovery = _one(checkout_body(checkout_recovery()))
    assert (failure.invoice_ref, failure.type) == (recovery.invoice_ref, EventType.PAYMENT_FAILED)
    assert recovery.type is EventType.PAYMENT_SUCCEEDED
    assert failure.event_id != recovery.event_id and failure.occurred_at < recovery.occurred_at


# --- declines ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("20005", SOFT),
        ("20051", SOFT),
        ("20099", SOFT),
        ("30004", HARD),
        ("30046", HARD),
        ("40101", FRAUD),
        ("41201", FRAUD),
        ("20054", ACTION),
        ("20154", ACTION),
        ("20062", HARD),
        ("20059", FRAUD),
        ("20183", FRAUD),
        ("10000", UNKNOWN),
        ("2005", UNKNOWN),
        ("abcde", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_ranges_and_overrides(code: str | None, category: DeclineCategory) -> None:
    verdict = declines.explain(code, network="amex")
    assert verdict.category is category
    if category is not UNKNOWN:
        assert verdict.rule is not None and "checkout.com" in verdict.rule.source.lower()


@pytest.mark.parametrize("code", ["20003", "20058"])
def test_merchant_side_codes_are_hard_and_say_so(code: str) -> None:
    decline = declines.decline(
        {"response_code": code, "response_summary": "Invalid merchant"}, "visa"
    )
    assert decline.category is HARD
    assert decline.message == "merchant-side: Invalid merchant"


def test_merchant_side_and_fraud_beat_live_advice() -> None:
    assert declines.explain("20003", network="mastercard", advice_code="02").category is HARD
    assert declines.explain("40101", recommendation="02").category is FRAUD
    assert declines.explain("20059", network="mastercard", advice_code="01").category is FRAUD


@pytest.mark.parametrize(
    ("recommendation", "category"), [("01", ACTION), ("02", SOFT), ("03", HARD)]
)
def test_recommendation_code_beats_the_range(
    recommendation: str, category: DeclineCategory
) -> None:
    assert (
        declines.explain("20005", network="amex", recommendation=recommendation).category
        is category
    )


def test_network_guardrails_beat_the_recommendation() -> None:
    verdict = declines.explain("20005", network="mastercard", advice_code="01", recommendation="03")
    assert verdict.category is ACTION
    assert declines.explain("20014", network="visa", raw="14").category is HARD


@pytest.mark.parametrize(
    ("code", "partner", "raw"),
    [
        ("20051", None, "51"),
        ("20051", "N7", "N7"),
        ("20151", None, None),
        ("30004", None, None),
        (None, None, None),
    ],
)
def test_raw_code(code: str | None, partner: str | None, raw: str | None) -> None:
    assert declines.raw_code(code, partner) == raw


def test_integer_codes_are_read_as_text() -> None:
    data = {"response_code": 20054, "processing": {"partner_merchant_advice_code": 1}}
    decline = declines.decline(data, "mastercard")
    assert (decline.code, decline.advice_code, decline.category) == ("20054", "1", ACTION)


def test_luhn_valid_scheme_transaction_ids_are_not_card_data() -> None:
    # A Visa transaction id is 15 digits; about 1 in 10 passes the Luhn check by chance.
    data = checkout_payment()
    data["scheme_id"] = "481205917734629"
    body = checkout_body(checkout_event("payment_declined", data))
    assert checkout.parse(body)["data"]["scheme_id"] == "481205917734629"
    data["reference"] = "481205917734629"
    with pytest.raises(CardDataError):
        checkout.parse(checkout_body(checkout_event("payment_declined", data)))


def test_subject_unfit_for_a_key_is_none() -> None:
    """Fuzz finding (issue 12 item 9): a NUL reference made RawWebhook refuse the subject."""
    assert checkout.subject(checkout_failure(reference="[\x00x")) is None
