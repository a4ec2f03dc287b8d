"""Adyen parse/subject/normalize: event mapping, scope, batches, amounts, card facts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from paywatch.errors import CardDataError, PayloadError
from paywatch.providers.adyen import AdyenProvider, adyen
from paywatch.providers.base import event_id
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent, RawWebhook
from tests.builders.adyen import (
    adyen_body,
    adyen_failure,
    adyen_item,
    adyen_notification,
    adyen_recovery,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "adyen"
PSP = "QFQTPCQ8HXSKGK82"


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _raw(body: bytes, tenant: str = "acme") -> RawWebhook:
    return RawWebhook(
        ingest_id="ing-1",
        tenant=tenant,
        provider="adyen",
        received_at=datetime(2026, 6, 15, 10, tzinfo=UTC),
        body=body,
    )


def _events(body: bytes, provider: AdyenProvider = adyen) -> list[PaymentEvent]:
    return provider.normalize(_raw(body), "webhooks.raw", 3, 42)


def _one(body: bytes, provider: AdyenProvider = adyen) -> PaymentEvent:
    events = _events(body, provider)
    assert len(events) == 1
    return events[0]


def _doc(*items: dict[str, Any]) -> bytes:
    return adyen_body(adyen_notification(*items))


# --- authorisations ----------------------------------------------------------------------


def test_refused_authorisation_is_a_classified_failure() -> None:
    event = _one(_fixture("authorisation.refused.json"))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.source_type == "AUTHORISATION:false"
    assert (event.invoice_ref, event.payment_ref) == ("INV-2026-0615", PSP)
    assert event.customer_ref == "shopper-7f3a21"
    assert (event.amount_minor, event.currency) == (4900, "EUR")
    assert event.occurred_at == datetime(2026, 6, 15, 9, 30, 12, tzinfo=UTC)
    decline = event.decline
    assert decline is not None
    assert (decline.code, decline.category) == ("not_enough_balance", DeclineCategory.SOFT)
    assert (decline.network, decline.network_code, decline.message) == (
        "visa",
        "51",
        "Not enough balance",
    )
    assert event.payment_method is not None
    assert (event.payment_method.brand, event.payment_method.last4) == ("visa", "0004")
    assert (event.payment_method.exp_month, event.payment_method.exp_year) == (3, 2030)


def test_event_id_is_deterministic_from_the_item_and_raw_ref_names_it() -> None:
    event = _one(_fixture("authorisation.refused.json"))
    item_id = f"{PSP}:AUTHORISATION:false"
    assert event.event_id == event_id("acme", "adyen", item_id, 0)
    assert event.raw is not None
    assert (event.raw.topic, event.raw.partition, event.raw.offset) == ("webhooks.raw", 3, 42)
    assert event.raw.provider_event_id == item_id


def test_mastercard_advice_code_beats_the_static_refusal_table() -> None:
    decline = _one(_fixture("authorisation.refused.mastercard_mac.json")).decline
    assert decline is not None
    assert (decline.code, decline.network, decline.advice_code) == ("refused", "mastercard", "01")
    assert decline.category is DeclineCategory.ACTION


def test_cvc_refusal_is_action_with_the_raw_code_kept() -> None:
    decline = _one(_fixture("authorisation.refused.cvc.json")).decline
    assert decline is not None
    assert (decline.category, decline.network_code) == (DeclineCategory.ACTION, "N7")


def test_successful_authorisation_is_a_recovery_with_card_facts_from_reason() -> None:
    event = _one(_fixture("authorisation.success.json"))
    assert event.type is EventType.PAYMENT_SUCCEEDED
    assert (event.invoice_ref, event.decline) == ("INV-2026-0615", None)
    assert event.occurred_at == datetime(2026, 6, 18, 14, 2, 51, tzinfo=UTC)
    assert event.payment_method is not None
    assert event.payment_method.last4 == "0004"


def test_card_facts_come_from_a_success_reason_when_additional_data_lacks_them() -> None:
    item = adyen_item(success=True, reason="074563:4444:11/2029", additional={})
    del item["additionalData"]
    method = _one(_doc(item)).payment_method
    assert method is not None
    assert (method.last4, method.exp_month, method.exp_year) == ("4444", 11, 2029)


def test_default_scope_maps_one_off_payments_too() -> None:
    assert _one(_fixture("authorisation.success.ecommerce.json")).invoice_ref == "ORDER-55120"


def test_recurring_scope_drops_one_off_failures_and_successes_alike() -> None:
    recurring = AdyenProvider(scope="recurring")
    assert _events(_fixture("authorisation.success.ecommerce.json"), recurring) == []
    one_off_failure = _doc(adyen_item(recurring=False))
    assert _events(one_off_failure, recurring) == []
    assert _one(_fixture("authorisation.refused.json"), recurring).type is EventType.PAYMENT_FAILED
    assert (
        _one(_fixture("authorisation.success.json"), recurring).type is EventType.PAYMENT_SUCCEEDED
    )


@pytest.mark.parametrize(
    "marker",
    [
        {"recurringProcessingModel": "UnscheduledCardOnFile"},
        {"shopperInteraction": "ContAuth"},
        {"recurring.shopperReference": "shopper-1"},
    ],
)
def test_each_recurring_marker_is_enough(marker: dict[str, str]) -> None:
    body = _doc(adyen_item(recurring=False, additional=marker))
    assert len(_events(body, AdyenProvider(scope="recurring"))) == 1


def test_recurring_scope_does_not_filter_modifications() -> None:
    chargeback = _fixture("chargeback.json")
    assert len(_events(chargeback, AdyenProvider(scope="recurring"))) == 1


def test_missing_merchant_reference_falls_back_to_the_psp_reference() -> None:
    assert _one(_doc(adyen_item(merchant_reference=None))).invoice_ref == PSP


def test_amount_value_is_already_minor_units_for_every_exponent() -> None:
    assert _one(_doc(adyen_item(value=5000, currency="JPY"))).amount_minor == 5000
    assert _one(_doc(adyen_item(value=12345, currency="kwd"))).currency == "KWD"


def test_odd_amounts_are_dropped_not_guessed() -> None:
    item = adyen_item()
    item["amount"] = {"value": "12a", "currency": "EURO"}
    event = _one(_doc(item))
    assert (event.amount_minor, event.currency) == (None, None)


# --- modifications -----------------------------------------------------------------------


def test_capture_failed_is_a_failure_of_the_original_payment() -> None:
    event = _one(_fixture("capture_failed.json"))
    assert event.type is EventType.PAYMENT_FAILED
    assert event.payment_ref == "V4HZ4RBFJGXXGN82"
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == (
        "capture_failed",
        DeclineCategory.UNKNOWN,
    )
    assert event.decline.message == "Insufficient balance on payment instrument"


def test_fraud_chargeback_is_fraud() -> None:
    event = _one(_fixture("chargeback.json"))
    assert (event.type, event.payment_ref) == (EventType.PAYMENT_FAILED, "V4HZ4RBFJGXXGN82")
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == (
        "chargeback:10.4",
        DeclineCategory.FRAUD,
    )
    assert event.decline.network == "visa"


def test_other_chargebacks_are_hard() -> None:
    item = adyen_item(event_code="CHARGEBACK", success=True, original_reference=PSP, reason="x")
    item["additionalData"]["chargebackReasonCode"] = "13.1"
    decline = _one(_doc(item)).decline
    assert decline is not None and decline.category is DeclineCategory.HARD
    assert decline.message == "chargeback: x"


@pytest.mark.parametrize("name", ["refund_failed.json"])
def test_refund_failures_are_not_payment_failures(name: str) -> None:
    assert _events(_fixture(name)) == []


def test_unmapped_codes_and_success_values_give_nothing() -> None:
    assert _events(_doc(adyen_item(event_code="REPORT_AVAILABLE", success=True))) == []
    assert _events(_doc(adyen_item(event_code="CAPTURE_FAILED", success=False))) == []


def test_the_event_map_is_configurable() -> None:
    provider = AdyenProvider(events={"NOTIFICATION_OF_CHARGEBACK:true": EventType.PAYMENT_FAILED})
    notice = _doc(adyen_item(event_code="NOTIFICATION_OF_CHARGEBACK", success=True))
    assert _one(notice, provider).source_type == "NOTIFICATION_OF_CHARGEBACK:true"
    assert _events(_fixture("authorisation.refused.json"), provider) == []


# --- batches -----------------------------------------------------------------------------


def test_batch_gives_one_event_per_mapped_item_with_batch_independent_ids() -> None:
    events = _events(_fixture("batch.json"))
    assert [e.type for e in events] == [EventType.PAYMENT_FAILED, EventType.PAYMENT_SUCCEEDED]
    assert [e.invoice_ref for e in events] == ["INV-2026-0615", "INV-2026-0616"]
    alone = json.loads(_fixture("batch.json"))
    alone["notificationItems"] = alone["notificationItems"][2:]
    assert _one(json.dumps(alone).encode()).event_id == events[1].event_id


def test_duplicate_items_in_one_batch_give_one_event() -> None:
    item = adyen_item()
    assert len(_events(_doc(item, item))) == 1


def test_provider_event_id_of_one_item_and_of_a_batch() -> None:
    single = adyen.parse(_fixture("authorisation.refused.json"))
    assert adyen.provider_event_id(single) == f"{PSP}:AUTHORISATION:false"
    batch_id = adyen.provider_event_id(adyen.parse(_fixture("batch.json")))
    assert batch_id.startswith("batch:") and len(batch_id) == 6 + 64
    assert batch_id == adyen.provider_event_id(adyen.parse(_fixture("batch.json")))


def test_subject_is_the_first_items_reference() -> None:
    assert adyen.subject(adyen.parse(_fixture("batch.json"))) == "INV-2026-0615"
    assert adyen.subject(adyen.parse(_doc(adyen_item(merchant_reference=None)))) == PSP
    assert adyen.subject({"notificationItems": "x"}) is None


# --- parse -------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["pspReference", "eventCode"])
def test_items_without_ids_are_malformed(missing: str) -> None:
    item = adyen_item()
    del item[missing]
    with pytest.raises(PayloadError, match="no pspReference or eventCode"):
        adyen.parse(_doc(item))


@pytest.mark.parametrize(
    ("event_date", "message"),
    [(None, "no 'eventDate'"), ("yesterday", "not ISO 8601"), ("2026-06-15T11:30:12", "offset")],
)
def test_event_dates_must_be_iso_with_an_offset(event_date: str | None, message: str) -> None:
    item = adyen_item()
    if event_date is None:
        del item["eventDate"]
    else:
        item["eventDate"] = event_date
    with pytest.raises(PayloadError, match=message):
        _events(_doc(item))


def test_escaped_card_numbers_are_card_data() -> None:
    body = _doc(adyen_item(reason="4242424242424242")).replace(
        b"4242424242424242", b"\\u00342424242424242"
    )
    with pytest.raises(CardDataError):
        adyen.parse(body)


def test_success_body_is_what_adyen_expects() -> None:
    assert (adyen.success_body, adyen.success_media_type) == ("[accepted]", "text/plain")
    assert adyen.secret_names == ("hmac_key",)


def test_samples_are_a_failure_then_its_recovery() -> None:
    failure, recovery = _one(adyen_body(adyen_failure())), _one(adyen_body(adyen_recovery()))
    assert (failure.type, recovery.type) == (EventType.PAYMENT_FAILED, EventType.PAYMENT_SUCCEEDED)
    assert failure.invoice_ref == recovery.invoice_ref
    assert failure.occurred_at < recovery.occurred_at


def test_luhn_valid_network_transaction_ids_are_not_card_data() -> None:
    # A Visa transaction id is 15 digits; about 1 in 10 passes the Luhn check by chance.
    body = _doc(adyen_item(additional={"networkTxReference": "481205917734629"}))
    assert len(adyen.parse(body)["notificationItems"]) == 1
    with pytest.raises(CardDataError):
        adyen.parse(_doc(adyen_item(additional={"cardHolderName": "481205917734629"})))


def test_subject_unfit_for_a_key_is_none() -> None:
    """Same guard as the fuzz findings of issue 12 item 9: a NUL reference names no subject."""
    from paywatch.providers.adyen import adyen

    assert adyen.subject(adyen_failure(merchant_reference="a\x00")) is None
