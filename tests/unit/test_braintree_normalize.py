"""Braintree parse/subject/normalize over the fixtures (tests/fixtures/braintree), signed here."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from paywatch.errors import PayloadError
from paywatch.providers.base import Provider, event_id
from paywatch.providers.braintree import BraintreeProvider, braintree
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent, RawWebhook
from tests.builders.braintree import (
    braintree_body,
    braintree_failure,
    braintree_form,
    braintree_notification_xml,
    braintree_recovery,
    braintree_subscription_xml,
    braintree_transaction_xml,
    sign_braintree,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "braintree"
NOW = datetime(2026, 6, 25, tzinfo=UTC)


def _xml(name: str) -> str:
    return (FIXTURES / f"{name}.xml").read_text("utf-8")


def _raw(body: bytes, tenant: str = "acme") -> RawWebhook:
    return RawWebhook(
        ingest_id="i", tenant=tenant, provider="braintree", received_at=NOW, body=body
    )


def _events(
    xml: str, provider: BraintreeProvider = braintree, offset: int = 7
) -> list[PaymentEvent]:
    return provider.normalize(_raw(braintree_body(xml)), "webhooks.raw", 2, offset)


def _one(xml: str, provider: BraintreeProvider = braintree) -> PaymentEvent:
    events = _events(xml, provider)
    assert len(events) == 1
    return events[0]


def test_charged_unsuccessfully_fixture() -> None:
    event = _one(_xml("subscription_charged_unsuccessfully"))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.source_type == "subscription_charged_unsuccessfully"
    assert event.occurred_at == datetime(2026, 6, 15, 9, 30, 12, tzinfo=UTC)
    assert (event.invoice_ref, event.subscription_ref) == ("f7kq2m:2026-06-12", "f7kq2m")
    assert (event.customer_ref, event.payment_ref) == ("41982277", "9z2c4w1p")
    assert (event.amount_minor, event.currency, event.attempt) == (12900, "USD", 2)
    assert event.provider_retry_at == datetime(2026, 6, 18, tzinfo=UTC)
    assert event.decline is not None
    assert event.decline.category is DeclineCategory.SOFT
    assert (event.decline.code, event.decline.message) == ("2001", "Insufficient Funds")
    assert (event.decline.network, event.decline.network_code) == ("visa", "51")
    assert event.payment_method is not None
    assert event.payment_method.model_dump() == {
        "brand": "visa",
        "last4": "1111",
        "exp_month": 11,
        "exp_year": 2028,
        "fingerprint": "c6e4bd5a8f0e2f0a1d4c73b9e2f1a6d0",
    }


def test_charged_successfully_recovers_the_same_billing_cycle() -> None:
    failed = _one(_xml("subscription_charged_unsuccessfully"))
    paid = _one(_xml("subscription_charged_successfully"))
    assert paid.type is EventType.PAYMENT_SUCCEEDED
    assert paid.invoice_ref == failed.invoice_ref
    assert (paid.amount_minor, paid.currency, paid.payment_ref) == (12900, "USD", "3m8d6q0n")
    assert paid.decline is None and paid.payment_method is None and paid.attempt is None


def test_next_cycle_failure_gets_a_new_invoice_ref() -> None:
    first = _one(braintree_failure())
    later = braintree_transaction_xml(period_start="2026-07-15")
    second = _one(braintree_failure(timestamp="2026-07-15T09:30:12Z", transaction=later))
    assert first.invoice_ref != second.invoice_ref
    assert second.invoice_ref.endswith(":2026-07-15")


def test_went_past_due_fixture() -> None:
    event = _one(_xml("subscription_went_past_due"))
    assert event.type is EventType.SUBSCRIPTION_PAST_DUE
    assert event.invoice_ref == "f7kq2m:2026-06-12"
    assert (event.attempt, event.provider_retry_at) == (1, datetime(2026, 6, 15, tzinfo=UTC))
    assert (event.amount_minor, event.currency, event.decline) == (None, None, None)


def test_canceled_fixture_closes_the_cycle() -> None:
    event = _one(_xml("subscription_canceled"))
    assert event.type is EventType.SUBSCRIPTION_CANCELED
    assert event.invoice_ref == "f7kq2m:2026-06-12"
    assert event.provider_retry_at is None


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("subscription_expired", EventType.SUBSCRIPTION_CANCELED),
        ("subscription_went_active", EventType.SUBSCRIPTION_REACTIVATED),
        ("subscription_charged_successfully", EventType.PAYMENT_SUCCEEDED),
    ],
)
def test_other_subscription_kinds(kind: str, expected: EventType) -> None:
    xml = braintree_notification_xml(kind, braintree_subscription_xml(status="Active"))
    assert _one(xml).type is expected


def test_settlement_declined_fixture_is_tracked_under_the_transaction() -> None:
    event = _one(_xml("transaction_settlement_declined"))
    assert event.type is EventType.PAYMENT_FAILED
    assert (event.invoice_ref, event.payment_ref, event.subscription_ref) == (
        "7b1x5k9e",
        "7b1x5k9e",
        None,
    )
    assert (event.amount_minor, event.currency, event.customer_ref) == (25000, "USD", "77120465")
    assert event.decline is not None
    assert (event.decline.code, event.decline.message) == ("4001", "Settlement Declined")
    assert event.payment_method is None


def test_settled_subscription_transaction_uses_its_billing_cycle() -> None:
    txn = braintree_transaction_xml(
        status="settled", response_code="1000", response_type="approved"
    )
    event = _one(braintree_notification_xml("transaction_settled", txn))
    assert event.type is EventType.PAYMENT_SUCCEEDED
    assert event.invoice_ref == "bt_sub_7hq2k9:2026-06-15"


@pytest.mark.parametrize("kind", ["check", "dispute_opened", "disbursement", "unheard_of_kind"])
def test_unhandled_kinds_give_no_events(kind: str) -> None:
    assert _events(braintree_notification_xml(kind, "<check type='boolean'>true</check>")) == []


def test_check_fixture_parses_and_gives_nothing() -> None:
    doc = braintree.parse(braintree_body(_xml("check")))
    assert doc["kind"] == "check" and doc["subject"] == {"check": "true"}
    assert braintree.subject(doc) is None
    assert _events(_xml("check")) == []


def test_sdk_minimal_shape_without_currency() -> None:
    event = _one(_xml("sdk_minimal_charged_unsuccessfully"))
    assert (event.invoice_ref, event.payment_ref) == ("sub_minimal", "sub_minimal")
    assert (event.amount_minor, event.currency) == (None, None)
    assert event.decline is not None and event.decline.category is DeclineCategory.UNKNOWN


def test_default_currency_applies_when_the_payload_names_none() -> None:
    event = _one(
        _xml("sdk_minimal_charged_unsuccessfully"), BraintreeProvider(default_currency="EUR")
    )
    assert (event.amount_minor, event.currency) == (4999, "EUR")
    # A currency in the payload wins over the default.
    event = _one(
        _xml("subscription_charged_unsuccessfully"), BraintreeProvider(default_currency="EUR")
    )
    assert event.currency == "USD"


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("5000", "JPY", 5000), ("12.345", "TND", 12345), ("49.99", "usd", 4999)],
)
def test_amounts_use_the_currency_exponent(amount: str, currency: str, minor: int) -> None:
    event = _one(
        braintree_failure(transaction=braintree_transaction_xml(amount=amount, currency=currency))
    )
    assert (event.amount_minor, event.currency) == (minor, currency.upper())


def test_amount_with_too_many_decimals_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="more decimals than JPY"):
        _events(
            braintree_failure(transaction=braintree_transaction_xml(amount="10.5", currency="JPY"))
        )


# --- ids -------------------------------------------------------------------------------------


def test_event_ids_are_deterministic_and_follow_base_event_id() -> None:
    xml = _xml("subscription_charged_unsuccessfully")
    first, again = _one(xml), _one(xml)
    doc = braintree.parse(braintree_body(xml))
    key = braintree.provider_event_id(doc)
    assert first.event_id == again.event_id == event_id("acme", "braintree", key, 0)
    assert first.raw is not None
    assert (first.raw.topic, first.raw.partition, first.raw.offset) == ("webhooks.raw", 2, 7)
    assert first.raw.provider_event_id == key


def test_dedupe_key_ignores_base64_wrapping_and_signature() -> None:
    xml = _xml("subscription_charged_unsuccessfully")
    wrapped = base64.b64encode(xml.encode()).decode()
    other = braintree_form(sign_braintree(wrapped, "pk", "sk"), wrapped)
    doc_a = braintree.parse(braintree_body(xml))
    doc_b = braintree.parse(other)
    assert braintree.provider_event_id(doc_a) == braintree.provider_event_id(doc_b)


@pytest.mark.parametrize(
    "xml",
    [
        braintree_failure(timestamp="2026-06-15T09:30:13Z"),
        braintree_notification_xml(
            "subscription_went_past_due",
            braintree_subscription_xml(),
            timestamp="2026-06-15T09:30:12Z",
        ),
        braintree_failure(transaction=braintree_transaction_xml(transaction_id="bt_txn_other")),
    ],
)
def test_dedupe_key_changes_with_kind_timestamp_or_transaction(xml: str) -> None:
    base = braintree.provider_event_id(braintree.parse(braintree_body(braintree_failure())))
    assert braintree.provider_event_id(braintree.parse(braintree_body(xml))) != base


def test_dedupe_key_is_bounded_and_prefixed() -> None:
    key = braintree.provider_event_id(braintree.parse(braintree_body(braintree_failure())))
    assert key.startswith("bt_") and len(key) == 43


def test_tenant_changes_event_ids() -> None:
    body = braintree_body(braintree_failure())
    a = braintree.normalize(_raw(body, "acme"), "webhooks.raw", 0, 0)[0]
    b = braintree.normalize(_raw(body, "globex"), "webhooks.raw", 0, 0)[0]
    assert a.event_id != b.event_id


@pytest.mark.parametrize(
    ("xml", "subject"),
    [
        (braintree_failure(), "bt_sub_7hq2k9"),
        (braintree_recovery(), "bt_sub_7hq2k9"),
        (_xml("transaction_settlement_declined"), "7b1x5k9e"),
    ],
)
def test_subject_is_the_subscription_else_the_transaction(xml: str, subject: str) -> None:
    assert braintree.subject(braintree.parse(braintree_body(xml))) == subject


# --- timestamps and required fields ------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-06-15T09:30:12Z", datetime(2026, 6, 15, 9, 30, 12, tzinfo=UTC)),
        ("2026-06-15T11:30:12+02:00", datetime(2026, 6, 15, 9, 30, 12, tzinfo=UTC)),
        ("2026-06-15T09:30:12", datetime(2026, 6, 15, 9, 30, 12, tzinfo=UTC)),
    ],
)
def test_timestamps_become_aware_utc(timestamp: str, expected: datetime) -> None:
    event = _one(braintree_failure(timestamp=timestamp))
    assert event.occurred_at == expected and event.occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    "timestamp", ["", "yesterday", "2026-13-01T00:00:00Z", "0001-01-01T00:00:00+05:00"]
)
def test_bad_timestamps_are_payload_errors(timestamp: str) -> None:
    with pytest.raises(PayloadError, match="timestamp"):
        braintree.parse(braintree_body(braintree_failure(timestamp=timestamp)))


def test_missing_kind_is_a_payload_error() -> None:
    xml = '<notification><timestamp type="datetime">2026-06-15T09:30:12Z</timestamp></notification>'
    with pytest.raises(PayloadError, match="no kind"):
        braintree.parse(braintree_body(xml))


def test_handled_kind_without_any_id_is_a_payload_error() -> None:
    xml = braintree_notification_xml(
        "subscription_canceled", "<subscription><status>x</status></subscription>"
    )
    with pytest.raises(PayloadError, match="names no subscription or transaction"):
        _events(xml)


def test_provider_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="default_currency"):
        BraintreeProvider(default_currency="usd")
    with pytest.raises(ValueError, match="max_xml_bytes"):
        BraintreeProvider(max_xml_bytes=0)
    assert (braintree.name, braintree.secret_names) == ("braintree", ("public_key", "private_key"))


def test_the_module_implements_the_provider_port() -> None:
    port: Provider = braintree  # mypy checks the structural match
    assert port.name == "braintree"


def test_subject_unfit_for_a_key_is_none() -> None:
    """Fuzz finding (issue 12 item 9): a 10,000-character id made RawWebhook refuse it."""
    xml = braintree_failure().replace("bt_sub_7hq2k9", "A" * 10_000)
    doc = braintree.parse(braintree_body(xml))
    assert braintree.subject(doc) is None


def test_a_card_field_out_of_bounds_is_a_payload_error() -> None:
    """Fuzz finding (issue 12 item 9, atheris): a 300-character card fingerprint made the
    PaymentMethod model raise ValidationError out of normalize (not a domain error)."""
    from tests.builders.braintree import CARD_FINGERPRINT

    xml = braintree_failure().replace(CARD_FINGERPRINT, "A" * 300)
    assert "A" * 300 in xml
    with pytest.raises(PayloadError, match="unexpected field values"):
        _events(xml)
