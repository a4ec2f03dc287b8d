"""Builders of realistic QuickBooks Online webhooks and fetched entities, plus a fake QBO API.

Shapes follow reference/webhooks.md §3.6: the legacy ``eventNotifications`` envelope, the
CloudEvents array (``qbo.invoice.updated.v1``) and the ``GET /v3/company/{realm}/invoice/{id}``
and ``.../payment/{id}`` answers. ``sign_quickbooks`` is §2.6. ``fake_quickbooks`` returns
a ``FakeLedgerApi`` (see ``tests.builders.xero``) set up as Intuit's OAuth server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import date
from decimal import Decimal
from typing import Any

from tests.builders.xero import FakeLedgerApi, xero_body

VERIFIER_TOKEN = "qbo-dev-verifier-token-5f1c9a27"
REALM_ID = "9341455322581846"
INVOICE_ID = "130"
CUSTOMER_ID = "58"
PAYMENT_ID = "171"
CLIENT_ID = "ABqbodevclient0001"
CLIENT_SECRET = "qbo-dev-client-secret"
REFRESH_TOKEN = "AB11qbodevrefreshtoken"
FAILED_AT = "2026-06-15T09:30:12.123Z"
RECOVERED_AT = "2026-06-18T14:02:45.507Z"
DUE = date(2026, 6, 1)
QBO_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
QBO_API_BASE = "https://quickbooks.api.intuit.com"


def qbo_entity(
    name: str = "Invoice",
    entity_id: str = INVOICE_ID,
    operation: str = "Update",
    last_updated: str = FAILED_AT,
) -> dict[str, Any]:
    """One legacy ``dataChangeEvent`` entity."""
    return {"name": name, "id": entity_id, "operation": operation, "lastUpdated": last_updated}


def qbo_legacy(*entities: dict[str, Any], realm_id: str = REALM_ID) -> dict[str, Any]:
    """A legacy delivery of ``entities`` for one realm."""
    return {
        "eventNotifications": [
            {"realmId": realm_id, "dataChangeEvent": {"entities": list(entities)}}
        ]
    }


def qbo_cloudevent(
    entity: str = "invoice",
    entity_id: str = INVOICE_ID,
    verb: str = "updated",
    time: str = FAILED_AT,
    *,
    event_id: str = "3f5a2c4e-8b1d-4e6f-9a7c-2d4b6e8f0a1c",
    realm_id: str = REALM_ID,
) -> dict[str, Any]:
    """One CloudEvent (``qbo.<entity>.<verb>.v1``)."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=",
        "type": f"qbo.{entity}.{verb}.v1",
        "datacontenttype": "application/json",
        "time": time,
        "intuitentityid": entity_id,
        "intuitaccountid": realm_id,
        "data": {},
    }


def qbo_failure() -> dict[str, Any]:
    """Legacy webhook of an invoice updated after its due date (fetch: ``qbo_overdue``)."""
    return qbo_legacy(qbo_entity())


def qbo_recovery() -> list[dict[str, Any]]:
    """CloudEvents webhook of a payment of that invoice (fetch: ``qbo_payment``, then
    ``qbo_paid``)."""
    return [
        qbo_cloudevent(
            "payment",
            PAYMENT_ID,
            "created",
            RECOVERED_AT,
            event_id="7c1e9b3a-5d2f-4a8e-b6c4-1f3e5a7c9b2d",
        )
    ]


def qbo_body(doc: Any) -> bytes:
    """Compact JSON bytes (Decimal amounts written as numbers)."""
    return xero_body(doc)


def sign_quickbooks(body: bytes, token: str = VERIFIER_TOKEN) -> str:
    """``intuit-signature``: base64(HMAC-SHA256(verifier token as UTF-8, raw body))."""
    return base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256).digest()).decode()


def quickbooks_headers(body: bytes, token: str = VERIFIER_TOKEN) -> dict[str, str]:
    """The headers Intuit sends with ``body`` (lowercase)."""
    return {"content-type": "application/json", "intuit-signature": sign_quickbooks(body, token)}


def qbo_invoice(
    *,
    balance: str = "49.00",
    total: str = "49.00",
    currency: str | None = "USD",
    due: date = DUE,
    invoice_id: str = INVOICE_ID,
    payments: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The ``GET .../invoice/{id}`` answer."""
    invoice: dict[str, Any] = {
        "Id": invoice_id,
        "SyncToken": "3",
        "DocNumber": "1042",
        "TxnDate": "2026-05-18",
        "DueDate": due.isoformat(),
        "CustomerRef": {"value": CUSTOMER_ID, "name": "Ridgeway Bikes"},
        "LinkedTxn": [{"TxnId": p, "TxnType": "Payment"} for p in payments],
        "TotalAmt": Decimal(total),
        "Balance": Decimal(balance),
        "MetaData": {
            "CreateTime": "2026-05-18T10:12:40-07:00",
            "LastUpdatedTime": "2026-06-15T02:30:12-07:00",
        },
    }
    if currency is not None:
        invoice["CurrencyRef"] = {"value": currency, "name": currency}
    return {"Invoice": invoice, "time": "2026-06-15T02:30:13.421-07:00"}


def qbo_overdue() -> dict[str, Any]:
    """The invoice of ``qbo_failure``: 49.00 USD open since 2026-06-01."""
    return qbo_invoice()


def qbo_paid() -> dict[str, Any]:
    """The same invoice after ``qbo_recovery``'s payment."""
    return qbo_invoice(balance="0", payments=(PAYMENT_ID,))


def qbo_payment(*invoice_ids: str, payment_id: str = PAYMENT_ID) -> dict[str, Any]:
    """The ``GET .../payment/{id}`` answer: one line per paid invoice."""
    ids = invoice_ids or (INVOICE_ID,)
    lines = [
        {"Amount": Decimal("49.00"), "LinkedTxn": [{"TxnId": i, "TxnType": "Invoice"}]} for i in ids
    ]
    payment = {
        "Id": payment_id,
        "TxnDate": "2026-06-18",
        "TotalAmt": Decimal("49.00") * len(ids),
        "CustomerRef": {"value": CUSTOMER_ID},
        "CurrencyRef": {"value": "USD"},
        "Line": lines,
    }
    return {"Payment": payment, "time": "2026-06-18T07:02:46.000-07:00"}


def qbo_path(kind: str, entity_id: str, realm_id: str = REALM_ID, minor_version: int = 75) -> str:
    """The request path (with query) the API client asks for."""
    return f"/v3/company/{realm_id}/{kind}/{entity_id}?minorversion={minor_version}"


def fake_quickbooks(*, rotate: bool = False, **options: Any) -> FakeLedgerApi:
    """A fake Intuit OAuth server + QBO API (``rotate``: issue a new refresh token)."""
    return FakeLedgerApi(
        token_url=QBO_TOKEN_URL,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=REFRESH_TOKEN,
        rotate=rotate,
        expires_in=3600,
        **options,
    )
