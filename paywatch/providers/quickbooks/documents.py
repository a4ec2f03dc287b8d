"""Fetched QuickBooks Online entities -> follow-up fetches and canonical events (pure).

Documents are the exact answers of ``GET /v3/company/{realmId}/{invoice|payment}/{id}``:
``{"Invoice": {Id, DocNumber, CustomerRef.value, TotalAmt, Balance, DueDate (YYYY-MM-DD),
CurrencyRef.value, LinkedTxn[], MetaData}, "time": ...}`` or ``{"Payment": {..., Line[]:
[{LinkedTxn[]: [{TxnId, TxnType: "Invoice"}]}]}}`` (reference/webhooks.md §3.6 [S]).

Mapping (QBO has no invoice status field; the ``Balance`` tells):

* Invoice Delete or Void (from the event itself, whatever the document says: a voided
  invoice reads as Balance 0 and TotalAmt 0) -> INVOICE_VOIDED, no amount;
* ``Balance`` 0 and ``TotalAmt`` > 0 -> PAYMENT_SUCCEEDED (amount ``TotalAmt``,
  ``payment_ref`` the last linked Payment) [U: standard QBO modelling];
* ``Balance`` > 0 and ``DueDate`` before the event's date -> INVOICE_OVERDUE (amount
  ``Balance``, Decline ``overdue``);
* otherwise, Payments (handled through ``follow_ups``) and other answers -> [].

A Payment document yields no event itself: ``follow_ups`` names the invoices it pays
(``LinkedTxn`` of type Invoice) as further refs with the payment's event type and time, and
their fetched state decides. ``invoice_ref`` is the invoice ``Id`` (unique within the realm;
one tenant secret set is one realm), ``customer_ref`` ``CustomerRef.value``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.quickbooks.events import ID
from paywatch.providers.thin.fields import iso_utc, load_json, obj, text
from paywatch.providers.thin.ledger import (
    LedgerRules,
    RawCoords,
    build_event,
    currency_code,
    decimal_amount,
    is_overdue,
    minor,
    overdue_decline,
    overdue_identity,
)
from paywatch.providers.thin.refs import ResourceRef
from paywatch.schemas.models import EventType, PaymentEvent

DEFAULT_RULES = LedgerRules()
_VOIDING = frozenset({"Invoice.Delete", "Invoice.Void"})


def follow_ups(ref: ResourceRef, document: bytes, status: int = 200) -> list[ResourceRef]:
    """The invoices a fetched Payment pays, as refs to fetch next (sorted by id)."""
    if ref.provider != "quickbooks" or ref.kind != "payment" or status != 200:
        return []
    doc = load_json(document, "fetched QuickBooks document")
    payment = obj(doc, "Payment") if isinstance(doc, dict) else {}
    lines = payment.get("Line")
    ids: set[str] = set()
    for line in lines if isinstance(lines, list) else []:
        linked = line.get("LinkedTxn") if isinstance(line, dict) else None
        for txn in linked if isinstance(linked, list) else []:
            txn_id = text(txn, "TxnId") if isinstance(txn, dict) else None
            if txn_id and txn.get("TxnType") == "Invoice" and ID.fullmatch(txn_id):
                ids.add(txn_id)
    return [
        ref.model_copy(update={"kind": "invoice", "resource_id": txn_id, "fetch": True})
        for txn_id in sorted(ids)
    ]


def normalize_document(
    tenant: str,
    ref: ResourceRef,
    document: bytes,
    raw_coords: RawCoords,
    index: int = 0,
    *,
    status: int = 200,
    rules: LedgerRules = DEFAULT_RULES,
    default_currency: str | None = None,
) -> list[PaymentEvent]:
    """Events of one fetched QuickBooks document (see the module docstring)."""
    if ref.provider != "quickbooks" or ref.kind != "invoice":
        return []
    if ref.event_type in _VOIDING:
        draft = {"type": EventType.INVOICE_VOIDED, "invoice_ref": ref.resource_id}
        return [build_event(tenant, ref, raw_coords, index, draft)]
    if status != 200:
        return []
    doc = load_json(document, "fetched QuickBooks document")
    if not isinstance(doc, dict):
        raise PayloadError("a fetched QuickBooks document is a JSON object")
    invoice = doc.get("Invoice")
    if not isinstance(invoice, dict):
        return []
    if invoice.get("Id") != ref.resource_id:
        raise PayloadError("fetched QuickBooks document does not hold the referenced invoice")
    draft_or_none = _draft(invoice, ref, rules, default_currency)
    if draft_or_none is None:
        return []
    return [build_event(tenant, ref, raw_coords, index, draft_or_none)]


def _draft(
    invoice: Mapping[str, Any],
    ref: ResourceRef,
    rules: LedgerRules,
    default_currency: str | None,
) -> dict[str, Any] | None:
    currency = currency_code(obj(invoice, "CurrencyRef").get("value")) or default_currency
    balance = decimal_amount(invoice.get("Balance"), "QuickBooks Balance")
    total = decimal_amount(invoice.get("TotalAmt"), "QuickBooks TotalAmt")
    base: dict[str, Any] = {
        "invoice_ref": ref.resource_id,
        "customer_ref": text(obj(invoice, "CustomerRef"), "value"),
        "currency": currency,
    }
    if balance == 0 and total is not None and total > 0:
        return {
            **base,
            "type": EventType.PAYMENT_SUCCEEDED,
            "amount_minor": minor(total, currency),
            "payment_ref": _last_payment(invoice),
        }
    due = due_date_of(invoice)
    if balance is not None and balance > 0 and due is not None:
        if is_overdue(due, ref.event_time, rules):
            return {
                **base,
                "type": EventType.INVOICE_OVERDUE,
                "amount_minor": minor(balance, currency),
                "decline": overdue_decline(due, ref.event_time, rules),
                "identity": overdue_identity(ref, ref.resource_id, due),
            }
    return None


def _last_payment(invoice: Mapping[str, Any]) -> str | None:
    linked = invoice.get("LinkedTxn")
    payments = [
        text(txn, "TxnId")
        for txn in (linked if isinstance(linked, list) else [])
        if isinstance(txn, dict) and txn.get("TxnType") == "Payment"
    ]
    known = [p for p in payments if p]
    return known[-1] if known else None


def due_date_of(invoice: Mapping[str, Any]) -> date | None:
    """``DueDate`` (``YYYY-MM-DD``); None when absent, PayloadError when unreadable."""
    value = invoice.get("DueDate")
    if value is None or value == "":
        return None
    parsed = iso_utc(value)
    if parsed is None:
        raise PayloadError("QuickBooks DueDate is not a date")
    return parsed.date()
