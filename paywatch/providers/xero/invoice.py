"""A fetched Xero invoice -> canonical events (pure; reference/webhooks.md §1.5, §3.5).

The document is the exact answer of ``GET /api.xro/2.0/Invoices/{InvoiceID}``:
``{"Invoices": [{InvoiceID, InvoiceNumber, Type, Contact.ContactID, Status, AmountDue,
AmountPaid, Total, CurrencyCode, DueDate, FullyPaidOnDate, Payments[]...}], ...}``. Dates
use Microsoft JSON (``/Date(1508976000000+0000)/``, ms since the epoch); ``DueDateString``
(``2017-10-26T00:00:00``) is the fallback.

Mapping (only sales invoices, ``Type`` ACCREC by default; bills are money the tenant owes):

* ``Status`` VOIDED or DELETED -> INVOICE_VOIDED;
* ``Status`` PAID, or AUTHORISED with ``AmountDue`` 0 after payments -> PAYMENT_SUCCEEDED
  (amount ``AmountPaid``, ``payment_ref`` the last ``Payments[].PaymentID``). Emitted for
  every paid invoice: one that never was overdue creates no read-model row;
* ``Status`` AUTHORISED, ``AmountDue`` > 0 and the due date before the webhook's event date
  -> INVOICE_OVERDUE (amount ``AmountDue``, Decline ``overdue``);
* anything else (DRAFT, SUBMITTED, not yet due) -> [].

``invoice_ref`` is ``InvoiceID`` (stable; ``InvoiceNumber`` can be edited), ``customer_ref``
``Contact.ContactID``. A document that is not an ``Invoices`` answer (an error body) gives
[]; an invoice that does not match the reference or has unreadable fields is a PayloadError.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from paywatch.errors import PayloadError
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

SALES_TYPES = frozenset({"ACCREC"})
DEFAULT_RULES = LedgerRules()
_MS_DATE = re.compile(r"/Date\((-?\d{1,15})([+-]\d{4})?\)/")
_VOID = frozenset({"VOIDED", "DELETED"})


def normalize_invoice(
    tenant: str,
    ref: ResourceRef,
    document: bytes,
    raw_coords: RawCoords,
    index: int = 0,
    *,
    status: int = 200,
    rules: LedgerRules = DEFAULT_RULES,
    invoice_types: Collection[str] = SALES_TYPES,
) -> list[PaymentEvent]:
    """Events of one fetched Xero document (see the module docstring)."""
    if ref.provider != "xero" or ref.kind != "invoice" or status != 200:
        return []
    doc = load_json(document, "fetched Xero document")
    if not isinstance(doc, dict):
        raise PayloadError("a fetched Xero document is a JSON object")
    invoices = doc.get("Invoices")
    if not isinstance(invoices, list) or not invoices:
        return []
    invoice = _matching(invoices, ref.resource_id)
    if text(invoice, "Type") not in invoice_types:
        return []
    draft = _draft(invoice, ref, rules)
    return [] if draft is None else [build_event(tenant, ref, raw_coords, index, draft)]


def _matching(invoices: list[Any], resource_id: str) -> Mapping[str, Any]:
    for invoice in invoices:
        invoice_id = invoice.get("InvoiceID") if isinstance(invoice, dict) else None
        if isinstance(invoice_id, str) and invoice_id.lower() == resource_id:
            found: Mapping[str, Any] = invoice
            return found
    raise PayloadError("fetched Xero document does not hold the referenced invoice")


def _draft(
    invoice: Mapping[str, Any], ref: ResourceRef, rules: LedgerRules
) -> dict[str, Any] | None:
    status = (text(invoice, "Status") or "").upper()
    currency = currency_code(invoice.get("CurrencyCode"))
    base: dict[str, Any] = {
        "invoice_ref": invoice["InvoiceID"],
        "customer_ref": text(obj(invoice, "Contact"), "ContactID"),
        "currency": currency,
    }
    if status in _VOID:
        return {**base, "type": EventType.INVOICE_VOIDED}
    due = decimal_amount(invoice.get("AmountDue"), "Xero AmountDue")
    paid = decimal_amount(invoice.get("AmountPaid"), "Xero AmountPaid")
    if status == "PAID" or (status == "AUTHORISED" and due == 0 and (paid or 0) > 0):
        amount = paid if paid else decimal_amount(invoice.get("Total"), "Xero Total")
        return {
            **base,
            "type": EventType.PAYMENT_SUCCEEDED,
            "amount_minor": minor(amount, currency),
            "payment_ref": _last_payment(invoice),
        }
    due_date = due_date_of(invoice)
    if status == "AUTHORISED" and due is not None and due > 0 and due_date is not None:
        if is_overdue(due_date, ref.event_time, rules):
            return {
                **base,
                "type": EventType.INVOICE_OVERDUE,
                "amount_minor": minor(due, currency),
                "decline": overdue_decline(due_date, ref.event_time, rules),
                "identity": overdue_identity(ref, str(invoice["InvoiceID"]), due_date),
            }
    return None


def _last_payment(invoice: Mapping[str, Any]) -> str | None:
    payments = invoice.get("Payments")
    if not isinstance(payments, list):
        return None
    ids = [text(p, "PaymentID") for p in payments if isinstance(p, dict)]
    known = [i for i in ids if i]
    return known[-1] if known else None


def due_date_of(invoice: Mapping[str, Any]) -> date | None:
    """``DueDate`` (Microsoft JSON or ISO), else ``DueDateString``; PayloadError if unreadable."""
    for key in ("DueDate", "DueDateString"):
        value = invoice.get(key)
        if value is None or value == "":
            continue
        parsed = ms_json_date(value) if isinstance(value, str) else None
        if parsed is None:
            parsed = _iso_date(value)
        if parsed is None:
            raise PayloadError(f"Xero {key} is not a date")
        return parsed
    return None


def ms_json_date(value: str) -> date | None:
    """The calendar date of ``/Date(ms[+hhmm])/`` (local to the offset, UTC without one)."""
    match = _MS_DATE.fullmatch(value.strip())
    if match is None:
        return None
    millis, offset = int(match.group(1)), match.group(2) or "+0000"
    shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    try:
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
        return (at + shift if offset[0] == "+" else at - shift).date()
    except OverflowError as exc:
        raise PayloadError("Xero date out of range") from exc


def _iso_date(value: Any) -> date | None:
    parsed = iso_utc(value)
    return parsed.date() if parsed is not None else None
