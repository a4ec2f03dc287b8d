"""Builders of realistic Xero webhooks and fetched invoices, plus a fake Xero API.

Shapes follow reference/webhooks.md §3.5 and ``XeroAPI/Xero-OpenAPI``: the batch envelope
(``events``, ``firstEventSequence``, ``lastEventSequence``, ``entropy``), the intent-to-
receive batch (no events, sequences 0) and the ``GET Invoices/{id}`` answer (``Invoices``
list, Microsoft JSON dates). ``sign_xero`` is §2.5. ``FakeLedgerApi`` is an
``httpx.MockTransport`` handler acting as the OAuth server (rotating refresh tokens) and the
resource API; the QuickBooks builders reuse it. Pure builders with fixed defaults.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import httpx

WEBHOOK_KEY = "xero-dev-webhook-key-0123456789abcdefABCDEF+/=="
"""A dev webhook key (Xero shows a long base64-looking string; it is used as text)."""
TENANT_ID = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
INVOICE_ID = "243216c5-369e-4056-ac67-05388f86dc81"
CONTACT_ID = "025867f1-d741-4d6b-b1af-9ac774b59ba7"
PAYMENT_ID = "0d666415-cf77-43fa-80c7-56775591d426"
CLIENT_ID = "XERODEVCLIENT0001"
CLIENT_SECRET = "xero-dev-client-secret"
REFRESH_TOKEN = "xero-dev-refresh-token"
FAILED_AT = "2026-06-15T09:30:12.123"
RECOVERED_AT = "2026-06-18T14:02:45.507"
DUE = date(2026, 6, 1)
XERO_TOKEN_URL = "https://identity.xero.com/connect/token"
XERO_API_BASE = "https://api.xero.com/api.xro/2.0"


def xero_event(
    resource_id: str = INVOICE_ID,
    *,
    category: str = "INVOICE",
    event_type: str = "UPDATE",
    event_date: str = FAILED_AT,
    tenant_id: str = TENANT_ID,
) -> dict[str, Any]:
    """One batch event (``resourceUrl`` as Xero writes it)."""
    path = {"INVOICE": "Invoices", "CONTACT": "Contacts", "CREDITNOTE": "CreditNotes"}
    return {
        "resourceUrl": f"{XERO_API_BASE}/{path.get(category, category.title())}/{resource_id}",
        "resourceId": resource_id,
        "eventDateUtc": event_date,
        "eventType": event_type,
        "eventCategory": category,
        "tenantId": tenant_id,
        "tenantType": "ORGANISATION",
    }


def xero_batch(
    *events: dict[str, Any], first_sequence: int = 1, entropy: str = "S0m3r4Nd0mt3xtXYZABC"
) -> dict[str, Any]:
    """A batch of ``events`` with consecutive sequence numbers."""
    return {
        "events": list(events),
        "firstEventSequence": first_sequence,
        "lastEventSequence": first_sequence + max(len(events) - 1, 0),
        "entropy": entropy,
    }


def xero_itr(entropy: str = "FXNGWLCCGVANWHKILRUB") -> dict[str, Any]:
    """An intent-to-receive batch: no events, sequences 0."""
    return {"events": [], "lastEventSequence": 0, "firstEventSequence": 0, "entropy": entropy}


def xero_failure() -> dict[str, Any]:
    """The webhook of an invoice update seen after its due date (fetch: ``xero_overdue``)."""
    return xero_batch(xero_event(event_date=FAILED_AT))


def xero_recovery() -> dict[str, Any]:
    """The webhook of the same invoice's payment (fetch: ``xero_paid``)."""
    return xero_batch(xero_event(event_date=RECOVERED_AT), first_sequence=2)


def xero_body(doc: Any, *, indent: int | None = None) -> bytes:
    """JSON bytes; Decimal amounts are written as the numbers they spell (``49.00``)."""
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(_mark(doc), separators=separators, indent=indent)
    return _MARKED.sub(lambda m: m.group(1), text).encode()


_MARKED = re.compile(r'"\\u0000([-0-9.]+)\\u0000"')


def _mark(doc: Any) -> Any:
    if isinstance(doc, Decimal):
        return f"\0{doc}\0"
    if isinstance(doc, dict):
        return {k: _mark(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_mark(v) for v in doc]
    return doc


def sign_xero(body: bytes, key: str = WEBHOOK_KEY) -> str:
    """``x-xero-signature``: base64(HMAC-SHA256(key as UTF-8, raw body))."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def xero_headers(body: bytes, key: str = WEBHOOK_KEY) -> dict[str, str]:
    """The headers Xero sends with ``body`` (lowercase)."""
    return {
        "content-type": "application/json; charset=utf-8",
        "x-xero-signature": sign_xero(body, key),
    }


def ms_date(day: date) -> str:
    """Xero's Microsoft JSON date of midnight UTC on ``day``."""
    millis = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    return f"/Date({millis}+0000)/"


def xero_invoice(
    *,
    status: str = "AUTHORISED",
    amount_due: str = "49.00",
    amount_paid: str = "0.00",
    total: str | None = None,
    currency: str = "USD",
    due: date = DUE,
    invoice_id: str = INVOICE_ID,
    invoice_type: str = "ACCREC",
    payments: Iterable[str] = (),
) -> dict[str, Any]:
    """The ``GET Invoices/{id}`` answer for one invoice (amounts are decimal strings here)."""
    paid, due_amount = Decimal(amount_paid), Decimal(amount_due)
    invoice: dict[str, Any] = {
        "Type": invoice_type,
        "InvoiceID": invoice_id,
        "InvoiceNumber": "INV-0042",
        "Reference": "Subscription June",
        "Payments": [{"PaymentID": p, "Amount": paid} for p in payments],
        "AmountDue": due_amount,
        "AmountPaid": paid,
        "AmountCredited": Decimal("0.00"),
        "Contact": {"ContactID": CONTACT_ID, "Name": "Ridgeway Bikes"},
        "DateString": "2026-05-18T00:00:00",
        "Date": ms_date(date(2026, 5, 18)),
        "DueDateString": f"{due.isoformat()}T00:00:00",
        "DueDate": ms_date(due),
        "Status": status,
        "LineAmountTypes": "Exclusive",
        "Total": Decimal(total) if total is not None else paid + due_amount,
        "UpdatedDateUTC": "/Date(1781515812123+0000)/",
        "CurrencyCode": currency,
    }
    if status == "PAID":
        invoice["FullyPaidOnDate"] = ms_date(date(2026, 6, 18))
    return {
        "Id": "5ab3a8e0-8d1e-4b52-9c6b-0f1e2d3c4b5a",
        "Status": "OK",
        "ProviderName": "paywatch",
        "DateTimeUTC": "/Date(1781515812999)/",
        "Invoices": [invoice],
    }


def xero_overdue() -> dict[str, Any]:
    """The invoice of ``xero_failure``: authorised, 49.00 USD due since 2026-06-01."""
    return xero_invoice()


def xero_paid() -> dict[str, Any]:
    """The invoice of ``xero_recovery``: paid in full."""
    return xero_invoice(
        status="PAID", amount_due="0.00", amount_paid="49.00", payments=[PAYMENT_ID]
    )


class FakeLedgerApi:
    """A MockTransport handler: OAuth refresh-token server plus canned resources.

    ``resources`` maps a request path with its query (``/api.xro/2.0/Invoices/<id>``) to
    ``(status, body)``. Refreshing with anything but the current refresh token answers
    ``400 invalid_grant``; with ``rotate`` every refresh issues a new refresh token. Only
    access tokens in ``valid_tokens`` are accepted (``revoke_tokens`` simulates expiry).
    """

    def __init__(
        self,
        *,
        token_url: str = XERO_TOKEN_URL,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        refresh_token: str = REFRESH_TOKEN,
        rotate: bool = True,
        expires_in: int = 1800,
    ) -> None:
        self.token_url = token_url
        self.basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self.refresh_token = refresh_token
        self.rotate = rotate
        self.expires_in = expires_in
        self.resources: dict[str, tuple[int, bytes]] = {}
        self.requests: list[httpx.Request] = []
        self.valid_tokens: set[str] = set()
        self.refreshes = 0

    def revoke_tokens(self) -> None:
        """Make every issued access token invalid (the API then answers 401)."""
        self.valid_tokens.clear()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST" and str(request.url) == self.token_url:
            return self._token(request)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.valid_tokens:
            return httpx.Response(401, json={"Title": "Unauthorized"})
        status, body = self.resources.get(request.url.raw_path.decode(), (404, b""))
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if request.headers.get("authorization") != self.basic:
            return httpx.Response(401, json={"error": "invalid_client"})
        if (
            form.get("grant_type") != "refresh_token"
            or form.get("refresh_token") != self.refresh_token
        ):
            return httpx.Response(400, json={"error": "invalid_grant"})
        self.refreshes += 1
        access = f"access-{self.refreshes}"
        self.valid_tokens.add(access)
        if self.rotate:
            self.refresh_token = f"{self.refresh_token.split('~')[0]}~{self.refreshes}"
        answer = {
            "access_token": access,
            "expires_in": self.expires_in,
            "token_type": "Bearer",
            "refresh_token": self.refresh_token,
        }
        return httpx.Response(200, json=answer)
