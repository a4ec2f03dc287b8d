"""Fetched QuickBooks entities -> follow-ups and canonical events (pure)."""

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
from paywatch.providers.quickbooks import QuickBooksProvider, quickbooks
from paywatch.providers.thin import NOT_FETCHED, ResourceRef
from paywatch.providers.thin.ledger import overdue_identity
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent
from tests.builders.quickbooks import (
    CUSTOMER_ID,
    INVOICE_ID,
    PAYMENT_ID,
    REALM_ID,
    qbo_body,
    qbo_invoice,
    qbo_payment,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "quickbooks"
COORDS = ("webhooks.fetched", 2, 77)
AT = datetime(2026, 6, 15, 9, 30, 12, 123000, tzinfo=UTC)
REF = ResourceRef(
    provider="quickbooks",
    tenant_ref=REALM_ID,
    kind="invoice",
    resource_id=INVOICE_ID,
    event_type="Invoice.Update",
    event_time=AT,
    index=0,
)
PAYMENT_REF = REF.model_copy(
    update={
        "kind": "payment",
        "resource_id": PAYMENT_ID,
        "event_type": "Payment.Create",
        "event_time": datetime(2026, 6, 18, 14, 2, 45, 507000, tzinfo=UTC),
        "index": 3,
    }
)


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _events(
    document: bytes | dict[str, Any],
    ref: ResourceRef = REF,
    provider: QuickBooksProvider = quickbooks,
    status: int = 200,
    index: int = 0,
) -> list[PaymentEvent]:
    body = document if isinstance(document, bytes) else qbo_body(document)
    return provider.normalize_fetched("acme", ref, body, COORDS, index, status=status)


def _one(document: bytes | dict[str, Any], **kwargs: Any) -> PaymentEvent:
    events = _events(document, **kwargs)
    assert len(events) == 1, events
    return events[0]


def _overdue_id(due: str, index: int = 0) -> str:
    fact = f"{REALM_ID}/invoice/{INVOICE_ID}/overdue/{due}"
    return event_id("acme", "quickbooks", fact, index)


# --- overdue ------------------------------------------------------------------------------------


def test_overdue_invoice_is_an_overdue_event_with_the_webhook_time() -> None:
    event = _one(_fixture("invoice.overdue.json"))
    assert event.type is EventType.INVOICE_OVERDUE
    assert (event.tenant, event.provider, event.source_type) == (
        "acme",
        "quickbooks",
        "Invoice.Update",
    )
    assert (event.invoice_ref, event.customer_ref, event.payment_ref) == (
        INVOICE_ID,
        CUSTOMER_ID,
        None,
    )
    assert (event.amount_minor, event.currency) == (4900, "USD")
    assert event.occurred_at == AT
    assert event.decline is not None
    assert (event.decline.code, event.decline.category) == ("overdue", DeclineCategory.ACTION)
    assert event.decline.message == "overdue: due 2026-06-01, unpaid 14 day(s) later"
    assert event.raw is not None
    assert (event.raw.topic, event.raw.partition, event.raw.offset) == COORDS
    assert event.raw.provider_event_id == REF.dedupe_key


def test_overdue_event_id_is_one_fact_per_invoice_and_due_date() -> None:
    body = _fixture("invoice.overdue.json")
    first = _one(body)
    identity = overdue_identity(REF, INVOICE_ID, date(2026, 6, 1))
    assert identity == f"{REALM_ID}/invoice/{INVOICE_ID}/overdue/2026-06-01"
    assert (
        first.event_id == event_id("acme", "quickbooks", identity, 0) == _overdue_id("2026-06-01")
    )
    assert first.event_id != event_id("acme", "quickbooks", REF.dedupe_key, 0)
    # A later update (or an Emailed event) of the still-unpaid invoice: the same fact.
    later = REF.model_copy(
        update={"event_time": datetime(2026, 6, 20, tzinfo=UTC), "event_type": "Invoice.Emailed"}
    )
    again = _one(qbo_invoice(balance="19.50"), ref=later)
    assert again.event_id == first.event_id
    assert again.raw is not None and again.raw.provider_event_id == later.dedupe_key
    # The invoice was rescheduled: a new due date is a new fact.
    moved = _one(qbo_invoice(due=date(2026, 6, 5)), ref=later)
    assert moved.event_id == _overdue_id("2026-06-05") != first.event_id


def test_index_and_tenant_change_the_event_id() -> None:
    body = _fixture("invoice.overdue.json")
    assert _one(body, index=1).event_id == _overdue_id("2026-06-01", 1) != _one(body).event_id
    (other,) = quickbooks.normalize_fetched("globex", REF, body, COORDS)
    assert other.event_id != _one(body).event_id


def test_same_ref_and_document_give_equal_events_on_replay() -> None:
    body = _fixture("invoice.paid.json")
    assert _events(body) == _events(body)
    assert _events(body) == _events(json.dumps(json.loads(body)).encode())


def test_partially_paid_overdue_invoice_is_overdue_for_the_balance() -> None:
    event = _one(qbo_invoice(balance="19.50", total="49.00"))
    assert (event.type, event.amount_minor) == (EventType.INVOICE_OVERDUE, 1950)


def test_not_yet_due_or_due_today_gives_nothing() -> None:
    assert _events(qbo_invoice(due=date(2026, 6, 20))) == []
    assert _events(qbo_invoice(due=date(2026, 6, 15))) == []
    assert _one(qbo_invoice(due=date(2026, 6, 14))).type is EventType.INVOICE_OVERDUE


def test_no_due_date_is_never_overdue() -> None:
    doc = qbo_invoice()
    del doc["Invoice"]["DueDate"]
    assert _events(doc) == []
    doc["Invoice"]["DueDate"] = ""
    assert _events(doc) == []


def test_grace_days_and_category_are_configurable() -> None:
    body = _fixture("invoice.overdue.json")  # 14 days late
    assert _events(body, provider=QuickBooksProvider(grace_days=14)) == []
    strict = QuickBooksProvider(grace_days=13, overdue_category=DeclineCategory.SOFT)
    decline = _one(body, provider=strict).decline
    assert decline is not None and decline.category is DeclineCategory.SOFT
    assert decline.code == "overdue"
    with pytest.raises(ValueError, match="grace_days"):
        QuickBooksProvider(grace_days=366)


def test_a_due_date_in_year_9999_with_grace_days_gives_nothing() -> None:
    lenient = QuickBooksProvider(grace_days=30)
    assert _events(qbo_invoice(due=date(9999, 12, 31)), provider=lenient) == []


# --- paid, voided -------------------------------------------------------------------------------


def test_paid_invoice_is_a_success_with_its_last_payment() -> None:
    event = _one(_fixture("invoice.paid.json"))
    assert event.type is EventType.PAYMENT_SUCCEEDED
    assert (event.amount_minor, event.currency, event.payment_ref) == (4900, "USD", PAYMENT_ID)
    assert (event.invoice_ref, event.customer_ref, event.decline) == (INVOICE_ID, CUSTOMER_ID, None)
    # Not an overdue fact: its id comes from the webhook event.
    assert event.event_id == event_id("acme", "quickbooks", REF.dedupe_key, 0)


def test_payment_ref_is_the_last_linked_payment_only() -> None:
    doc = qbo_invoice(balance="0", payments=("170", "171"))
    doc["Invoice"]["LinkedTxn"].append({"TxnId": "9", "TxnType": "Estimate"})
    doc["Invoice"]["LinkedTxn"].append({"TxnType": "Payment"})
    assert _one(doc).payment_ref == "171"
    assert _one(qbo_invoice(balance="0")).payment_ref is None


def test_paid_amount_is_the_total_even_after_partial_payments() -> None:
    event = _one(qbo_invoice(balance="0.00", total="120.50", payments=("1", "2")))
    assert (event.type, event.amount_minor, event.payment_ref) == (
        EventType.PAYMENT_SUCCEEDED,
        12050,
        "2",
    )


@pytest.mark.parametrize("operation", ["Void", "Delete"])
def test_void_and_delete_events_are_voided_whatever_the_document(operation: str) -> None:
    ref = REF.model_copy(update={"event_type": f"Invoice.{operation}"})
    expected = (EventType.INVOICE_VOIDED, INVOICE_ID, None, None, None)
    for body, status in [
        (_fixture("invoice.voided.json"), 200),
        (_fixture("invoice.overdue.json"), 200),
        (_fixture("fault.object_not_found.json"), 404),
        (b"", NOT_FETCHED),  # a Delete is not fetched
    ]:
        event = _one(body, ref=ref, status=status)
        assert (
            event.type,
            event.invoice_ref,
            event.amount_minor,
            event.customer_ref,
            event.decline,
        ) == expected
        assert event.event_id == event_id("acme", "quickbooks", ref.dedupe_key, 0)
        assert event.source_type == f"Invoice.{operation}"


def test_a_voided_invoice_read_after_an_update_gives_nothing() -> None:
    # QBO zeroes a voided invoice (Balance 0, TotalAmt 0): neither paid nor overdue.
    assert _events(_fixture("invoice.voided.json")) == []


# --- currencies ---------------------------------------------------------------------------------


def test_currency_falls_back_to_the_providers_default_else_none() -> None:
    no_currency = qbo_invoice(currency=None)
    event = _one(no_currency)
    assert (event.type, event.amount_minor, event.currency) == (
        EventType.INVOICE_OVERDUE,
        None,
        None,
    )
    euro = QuickBooksProvider(default_currency="eur")
    in_euro = _one(no_currency, provider=euro)
    assert (in_euro.amount_minor, in_euro.currency) == (4900, "EUR")
    jpy = _one(qbo_invoice(balance="5000", total="5000", currency="JPY"), provider=euro)
    assert (jpy.amount_minor, jpy.currency) == (5000, "JPY")  # CurrencyRef wins


def test_zero_and_three_decimal_currencies() -> None:
    jpy = _one(qbo_invoice(balance="5000", total="5000", currency="JPY"))
    assert (jpy.amount_minor, jpy.currency) == (5000, "JPY")
    tnd = _one(qbo_invoice(balance="12.345", total="12.345", currency="TND"))
    assert (tnd.amount_minor, tnd.currency) == (12345, "TND")
    bhd = _one(qbo_invoice(balance="0", total="7.250", currency="bhd"))
    assert (bhd.type, bhd.amount_minor, bhd.currency) == (EventType.PAYMENT_SUCCEEDED, 7250, "BHD")


@pytest.mark.parametrize(
    ("balance", "currency", "message"),
    [
        ("5000.5", "JPY", "decimals"),
        ("1.2345", "TND", "decimals"),
        ("1.00000000000000000000000000001", "USD", "decimals"),  # 30 digits: no rounding
        ("1E-999999999999999999", "USD", "decimals"),  # not rounded to 0
        ("1E+999999", "USD", "out of range"),
        ("92233720368547758.08", "USD", "out of range"),
    ],
)
def test_amounts_a_currency_cannot_hold_are_malformed(
    balance: str, currency: str, message: str
) -> None:
    body = qbo_body(qbo_invoice(balance="7.77", currency=currency))
    body = body.replace(b'"Balance":7.77', b'"Balance":' + balance.encode())  # a JSON number
    assert balance.encode() in body
    with pytest.raises(PayloadError, match=message):
        _events(body)


# --- payments and follow-ups --------------------------------------------------------------------


def test_a_payment_gives_no_event_but_names_the_invoices_it_pays() -> None:
    body = _fixture("payment.json")
    assert _events(body, ref=PAYMENT_REF) == []
    refs = quickbooks.follow_ups(PAYMENT_REF, body)
    assert [r.resource_id for r in refs] == ["129", "130"]  # sorted by id
    for ref in refs:
        assert (ref.provider, ref.tenant_ref, ref.kind, ref.fetch) == (
            "quickbooks",
            REALM_ID,
            "invoice",
            True,
        )
        assert (ref.event_type, ref.event_time, ref.index) == (
            "Payment.Create",
            PAYMENT_REF.event_time,
            PAYMENT_REF.index,
        )
    # The paid invoice, fetched as a follow-up, is the recovery.
    event = _one(_fixture("invoice.paid.json"), ref=refs[1])
    assert (event.type, event.source_type, event.occurred_at) == (
        EventType.PAYMENT_SUCCEEDED,
        "Payment.Create",
        PAYMENT_REF.event_time,
    )


def test_follow_ups_are_deduplicated_and_only_invoices_with_usable_ids() -> None:
    doc = qbo_payment("130", "130", "129")
    doc["Payment"]["Line"][0]["LinkedTxn"].append({"TxnId": "44", "TxnType": "CreditMemo"})
    doc["Payment"]["Line"].append({"LinkedTxn": [{"TxnId": "../x", "TxnType": "Invoice"}]})
    doc["Payment"]["Line"].append({"LinkedTxn": [{"TxnId": 131, "TxnType": "Invoice"}]})
    doc["Payment"]["Line"].append({"LinkedTxn": "x"})
    doc["Payment"]["Line"].append("x")
    refs = quickbooks.follow_ups(PAYMENT_REF, qbo_body(doc))
    assert [r.resource_id for r in refs] == ["129", "130"]


def test_no_follow_ups_for_invoices_missing_payments_or_other_providers() -> None:
    body = _fixture("payment.json")
    assert quickbooks.follow_ups(REF, body) == []
    assert quickbooks.follow_ups(PAYMENT_REF, body, 404) == []
    assert quickbooks.follow_ups(PAYMENT_REF, b"", NOT_FETCHED) == []
    assert quickbooks.follow_ups(PAYMENT_REF.model_copy(update={"provider": "xero"}), body) == []
    assert quickbooks.follow_ups(PAYMENT_REF, b'{"Fault": {}}') == []
    assert quickbooks.follow_ups(PAYMENT_REF, b"[]") == []
    with pytest.raises(PayloadError, match="not JSON"):
        quickbooks.follow_ups(PAYMENT_REF, b"<Payment/>")


# --- gone, other answers, malformed documents ---------------------------------------------------


@pytest.mark.parametrize("status", [404, 400, NOT_FETCHED])
def test_missing_or_unfetched_invoices_give_nothing(status: int) -> None:
    assert _events(_fixture("fault.object_not_found.json"), status=status) == []
    assert _events(b"", status=status) == []


def test_documents_without_an_invoice_give_nothing() -> None:
    assert _events(_fixture("fault.object_not_found.json")) == []
    assert _events(_fixture("payment.json")) == []
    assert _events(b'{"Invoice": null}') == []


def test_a_document_of_another_invoice_is_malformed() -> None:
    other = REF.model_copy(update={"resource_id": "131"})
    with pytest.raises(PayloadError, match="does not hold the referenced invoice"):
        _events(_fixture("invoice.overdue.json"), ref=other)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("Balance", "lots", "QuickBooks Balance is not a number"),
        ("Balance", True, "QuickBooks Balance is not a number"),
        ("Balance", {"v": 1}, "QuickBooks Balance is not a number"),
        ("Balance", "Infinity", "QuickBooks Balance is not a finite number"),
        ("TotalAmt", [], "QuickBooks TotalAmt is not a number"),
        ("CurrencyRef", {"value": "US"}, "currency is not a 3-letter ISO 4217 code"),
        ("CurrencyRef", {"value": 840}, "currency is not a 3-letter ISO 4217 code"),
        ("DueDate", "soon", "QuickBooks DueDate is not a date"),
        ("DueDate", 20260601, "QuickBooks DueDate is not a date"),
        ("Id", None, "does not hold the referenced invoice"),
        ("Id", 130, "does not hold the referenced invoice"),
    ],
)
def test_malformed_fields_are_payload_errors(field: str, value: Any, message: str) -> None:
    doc = qbo_invoice()
    doc["Invoice"][field] = value
    with pytest.raises(PayloadError) as info:
        _events(doc)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<IntuitResponse/>", "fetched QuickBooks document is not JSON"),
        (b"\xff", "fetched QuickBooks document is not UTF-8"),
        (b"[" * 5000, "JSON nested too deeply"),
        (b'{"Invoice": {"Balance": 1e99999999999999999999}}', "JSON number out of range"),
        (b"[]", "a fetched QuickBooks document is a JSON object"),
        (b"null", "a fetched QuickBooks document is a JSON object"),
    ],
)
def test_not_a_json_object_is_malformed(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        _events(body)


# --- properties ---------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
_AMOUNTS = (
    st.decimals(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["0", "49.00", "-3", "1E+999999", "1E-999999999999999999", "12.345"])
    | st.integers()
    | _JSON
)
_INVOICE = st.fixed_dictionaries(
    {"Id": st.just(INVOICE_ID)},
    optional={
        "Balance": _AMOUNTS,
        "TotalAmt": _AMOUNTS,
        "DueDate": st.sampled_from(["2026-06-01", "2026-07-01", "9999-12-31", "0001-01-01"])
        | st.dates().map(date.isoformat)
        | _JSON,
        "CurrencyRef": st.fixed_dictionaries(
            {"value": st.sampled_from(["USD", "JPY", "TND", "usd", "", "XXXX"]) | _JSON}
        )
        | _JSON,
        "CustomerRef": st.fixed_dictionaries({"value": st.text(max_size=10) | _JSON}) | _JSON,
        "LinkedTxn": st.lists(
            st.fixed_dictionaries(
                {"TxnId": st.text(max_size=5) | _JSON, "TxnType": st.sampled_from(["Payment"])}
            )
            | _JSON,
            max_size=3,
        )
        | _JSON,
    },
)
_REFS = st.sampled_from(
    [
        REF,
        PAYMENT_REF,
        REF.model_copy(update={"event_type": "Invoice.Void"}),
        REF.model_copy(update={"event_time": datetime(9999, 12, 31, tzinfo=UTC)}),
        REF.model_copy(update={"event_time": datetime(1, 1, 1, tzinfo=UTC)}),
    ]
)
_PROVIDERS = st.sampled_from(
    [quickbooks, QuickBooksProvider(grace_days=365, default_currency="JPY")]
)


@settings(max_examples=200, deadline=None)
@given(
    doc=st.fixed_dictionaries({"Invoice": _INVOICE}) | _JSON,
    ref=_REFS,
    provider=_PROVIDERS,
    status=st.sampled_from([200, 404]),
)
def test_random_documents_only_raise_payload_errors(
    doc: Any, ref: ResourceRef, provider: QuickBooksProvider, status: int
) -> None:
    body = qbo_body(doc)
    try:
        events = _events(body, ref=ref, provider=provider, status=status)
    except PayloadError:
        events = []
    assert len(events) <= 1
    for event in events:
        assert event.occurred_at == ref.event_time and event.invoice_ref == INVOICE_ID
    try:
        more = quickbooks.follow_ups(PAYMENT_REF, qbo_body({"Payment": {"Line": doc}}))
    except PayloadError:
        more = []
    assert all(r.kind == "invoice" for r in more)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=256) | st.text(max_size=100).map(str.encode))
def test_random_bytes_only_raise_payload_errors(body: bytes) -> None:
    for ref in (REF, PAYMENT_REF):
        try:
            _events(body, ref=ref)
        except PayloadError:
            pass
        try:
            quickbooks.follow_ups(ref, body)
        except PayloadError:
            pass
