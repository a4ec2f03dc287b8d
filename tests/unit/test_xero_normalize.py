"""Fetched Xero invoices -> canonical events (pure): overdue, paid, voided, currencies."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import PayloadError
from paywatch.providers.base import event_id
from paywatch.providers.thin import ResourceRef
from paywatch.providers.xero import XeroProvider, xero
from paywatch.providers.xero.invoice import ms_json_date
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent
from tests.builders.xero import (
    CONTACT_ID,
    INVOICE_ID,
    PAYMENT_ID,
    TENANT_ID,
    xero_body,
    xero_invoice,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xero"
COORDS = ("webhooks.fetched", 3, 41)
AT = datetime(2026, 6, 15, 9, 30, 12, 123000, tzinfo=UTC)
REF = ResourceRef(
    provider="xero",
    tenant_ref=TENANT_ID,
    kind="invoice",
    resource_id=INVOICE_ID,
    event_type="INVOICE.UPDATE",
    event_time=AT,
    index=0,
)


def _events(
    document: bytes | dict[str, Any],
    ref: ResourceRef = REF,
    provider: XeroProvider = xero,
    status: int = 200,
) -> list[PaymentEvent]:
    body = document if isinstance(document, bytes) else xero_body(document)
    return provider.normalize_fetched("acme", ref, body, COORDS, status=status)


def _one(document: bytes | dict[str, Any], **kwargs: Any) -> PaymentEvent:
    events = _events(document, **kwargs)
    assert len(events) == 1
    return events[0]


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_overdue_invoice_is_an_overdue_event_with_the_webhook_time() -> None:
    event = _one(_fixture("invoice.overdue.json"))
    assert event.type is EventType.INVOICE_OVERDUE
    assert (event.tenant, event.provider, event.source_type) == ("acme", "xero", "INVOICE.UPDATE")
    assert (event.invoice_ref, event.customer_ref) == (INVOICE_ID, CONTACT_ID)
    assert (event.amount_minor, event.currency) == (4900, "USD")
    assert event.occurred_at == AT
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == ("overdue", DeclineCategory.ACTION)
    assert event.decline.message == "overdue: due 2026-06-01, unpaid 14 day(s) later"
    overdue_fact = f"{REF.tenant_ref}/invoice/{INVOICE_ID}/overdue/2026-06-01"
    assert event.event_id == event_id("acme", "xero", overdue_fact, 0)
    assert event.raw is not None
    assert (event.raw.topic, event.raw.partition, event.raw.offset) == COORDS
    assert event.raw.provider_event_id == REF.dedupe_key


def test_same_ref_and_document_give_the_same_event_on_replay() -> None:
    body = _fixture("invoice.overdue.json")
    assert _events(body) == _events(body)
    later = REF.model_copy(update={"event_time": datetime(2026, 6, 16, tzinfo=UTC)})
    # Overdue is one fact per invoice and due date: a later update of the unpaid invoice
    # is the same event (no second failure, no second attempt) ...
    assert _one(body, ref=later).event_id == _one(body).event_id
    # ... while a new due date (the invoice was rescheduled) is a new fact.
    moved = body.replace(b"2026-06-01", b"2026-06-05").replace(b"1780272000000", b"1780617600000")
    assert _one(moved, ref=later).event_id != _one(body).event_id


def test_index_changes_the_event_id() -> None:
    body = _fixture("invoice.overdue.json")
    (first,) = xero.normalize_fetched("acme", REF, body, COORDS, 0)
    (second,) = xero.normalize_fetched("acme", REF, body, COORDS, 1)
    assert first.event_id != second.event_id


def test_not_yet_due_or_due_today_gives_nothing() -> None:
    assert _events(xero_invoice(due=date(2026, 6, 20))) == []
    assert _events(xero_invoice(due=date(2026, 6, 15))) == []
    assert _one(xero_invoice(due=date(2026, 6, 14))).type is EventType.INVOICE_OVERDUE


def test_grace_days_and_category_are_configurable() -> None:
    lenient = XeroProvider(grace_days=14, overdue_category=DeclineCategory.SOFT)
    assert _events(_fixture("invoice.overdue.json"), provider=lenient) == []
    strict = XeroProvider(grace_days=13, overdue_category=DeclineCategory.SOFT)
    decline = _one(_fixture("invoice.overdue.json"), provider=strict).decline
    assert decline is not None and decline.category is DeclineCategory.SOFT
    with pytest.raises(ValueError, match="grace_days"):
        XeroProvider(grace_days=-1)


def test_paid_invoice_is_a_success_with_its_payment() -> None:
    event = _one(_fixture("invoice.paid.json"))
    assert event.type is EventType.PAYMENT_SUCCEEDED
    assert (event.amount_minor, event.currency, event.payment_ref) == (4900, "USD", PAYMENT_ID)
    assert event.decline is None and event.invoice_ref == INVOICE_ID


def test_authorised_with_nothing_left_due_after_payments_is_a_success() -> None:
    doc = xero_invoice(amount_due="0.00", amount_paid="49.00", payments=[PAYMENT_ID])
    assert _one(doc).type is EventType.PAYMENT_SUCCEEDED


def test_partially_paid_overdue_invoice_is_overdue_for_the_rest() -> None:
    event = _one(xero_invoice(amount_due="19.50", amount_paid="29.50"))
    assert (event.type, event.amount_minor) == (EventType.INVOICE_OVERDUE, 1950)


@pytest.mark.parametrize("status", ["VOIDED", "DELETED"])
def test_voided_and_deleted_invoices_are_voided(status: str) -> None:
    event = _one(xero_invoice(status=status, amount_due="0.00"))
    assert (event.type, event.invoice_ref, event.amount_minor) == (
        EventType.INVOICE_VOIDED,
        INVOICE_ID,
        None,
    )
    assert _one(_fixture("invoice.voided.json")).type is EventType.INVOICE_VOIDED


def test_jpy_has_no_minor_digits() -> None:
    event = _one(_fixture("invoice.jpy.overdue.json"))
    assert (event.amount_minor, event.currency) == (5000, "JPY")


def test_three_decimal_currency() -> None:
    event = _one(xero_invoice(amount_due="12.345", currency="TND"))
    assert (event.amount_minor, event.currency) == (12345, "TND")
    paid = _one(xero_invoice(status="PAID", amount_due="0", amount_paid="7.250", currency="bhd"))
    assert (paid.amount_minor, paid.currency) == (7250, "BHD")


def test_more_decimals_than_the_currency_allows_is_malformed() -> None:
    with pytest.raises(PayloadError, match="decimals"):
        _events(xero_invoice(amount_due="5000.5", currency="JPY"))


@pytest.mark.parametrize("name", ["bill.overdue.json", "invoice.draft.json"])
def test_bills_and_drafts_give_nothing(name: str) -> None:
    assert _events(_fixture(name)) == []


def test_watched_invoice_types_are_configurable() -> None:
    both = XeroProvider(invoice_types={"ACCREC", "ACCPAY"})
    assert _one(_fixture("bill.overdue.json"), provider=both).type is EventType.INVOICE_OVERDUE


@pytest.mark.parametrize("status", [404, 400, 0])
def test_unfetched_or_missing_documents_give_nothing(status: int) -> None:
    assert _events(b"", status=status) == []
    assert _events(b'{"Title":"Not Found"}', status=status) == []


@pytest.mark.parametrize(
    "body", [b'{"Title":"Validation error"}', b'{"Invoices": []}', b'{"Invoices": null}']
)
def test_documents_without_invoices_give_nothing(body: bytes) -> None:
    assert _events(body) == []


def test_other_references_give_nothing() -> None:
    payment = REF.model_copy(update={"kind": "payment"})
    assert _events(_fixture("invoice.overdue.json"), ref=payment) == []


def test_a_document_of_another_invoice_is_malformed() -> None:
    other = REF.model_copy(update={"resource_id": "7a9f3c21-54e8-4b1d-a0c6-3e2f1d4b5c6a"})
    with pytest.raises(PayloadError, match="referenced invoice"):
        _events(_fixture("invoice.overdue.json"), ref=other)


def test_invoice_id_matches_case_insensitively() -> None:
    doc = xero_invoice(invoice_id=INVOICE_ID.upper())
    assert _one(doc).invoice_ref == INVOICE_ID.upper()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("AmountDue", "lots"),
        ("AmountDue", True),
        ("AmountDue", {"v": 1}),
        ("CurrencyCode", "US"),
        ("CurrencyCode", 840),
        ("DueDate", "/Date(abc)/"),
        ("DueDate", "soon"),
        ("InvoiceID", None),
    ],
)
def test_malformed_fields_are_payload_errors(field: str, value: Any) -> None:
    doc = xero_invoice()
    doc["Invoices"][0][field] = value
    with pytest.raises(PayloadError):
        _events(doc)


def test_not_json_is_malformed() -> None:
    for body in (b"<Invoices/>", b"\xff", b"[]", b"[" * 5000):
        with pytest.raises(PayloadError):
            _events(body)


def test_due_date_formats() -> None:
    assert ms_json_date("/Date(1780272000000+0000)/") == date(2026, 6, 1)
    assert ms_json_date("/Date(1780272000000)/") == date(2026, 6, 1)
    assert ms_json_date("/Date(1780268400000+1300)/") == date(2026, 6, 1)  # 23:00 UTC + 13 h
    assert ms_json_date("2026-06-01") is None
    doc = xero_invoice()
    del doc["Invoices"][0]["DueDate"]
    assert _one(doc).type is EventType.INVOICE_OVERDUE  # DueDateString is the fallback
    del doc["Invoices"][0]["DueDateString"]
    assert _events(doc) == []  # no due date: never overdue


# --- properties -------------------------------------------------------------------------------

_AMOUNTS = st.decimals(allow_nan=True, allow_infinity=True, places=3) | st.text(max_size=8)
_INVOICES = st.fixed_dictionaries(
    {"InvoiceID": st.just(INVOICE_ID)},
    optional={
        "Type": st.sampled_from(["ACCREC", "ACCPAY"]) | st.text(max_size=5),
        "Status": st.sampled_from(["AUTHORISED", "PAID", "VOIDED", "DRAFT"]) | st.none(),
        "AmountDue": _AMOUNTS | st.none(),
        "AmountPaid": _AMOUNTS,
        "Total": _AMOUNTS,
        "CurrencyCode": st.sampled_from(["USD", "JPY", "TND", "usd", "", "XXXX"]) | st.integers(),
        "DueDate": st.sampled_from(["/Date(1780272000000+0000)/", "/Date(-99999999999999)/"])
        | st.text(max_size=30),
        "Contact": st.dictionaries(
            st.sampled_from(["ContactID"]), st.text(max_size=10) | st.none()
        ),
        "Payments": st.lists(st.dictionaries(st.just("PaymentID"), st.text(max_size=5)), max_size=2)
        | st.text(max_size=3),
    },
)


@settings(max_examples=300, deadline=None)
@given(invoice=_INVOICES, status=st.sampled_from([200, 404]))
def test_random_invoices_only_raise_payload_errors(invoice: dict[str, Any], status: int) -> None:
    body = xero_body({"Invoices": [invoice]})
    try:
        events = _events(body, status=status)
    except PayloadError:
        return
    assert len(events) <= 1
    for event in events:
        assert event.occurred_at == AT and event.invoice_ref == INVOICE_ID


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=512) | st.text(max_size=200).map(str.encode))
def test_random_bytes_only_raise_payload_errors(body: bytes) -> None:
    try:
        _events(body)
    except PayloadError:
        pass
    try:
        inner = json.loads(body)
    except (ValueError, RecursionError):
        inner = None
    try:
        _events(json.dumps({"Invoices": [inner]}).encode())
    except PayloadError:
        pass
