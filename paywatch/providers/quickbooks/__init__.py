"""QuickBooks Online webhooks: thin, HMAC-signed deliveries (legacy or CloudEvents); the
invoices and payments they name are fetched, then normalized.

Same thin-webhook interface as ``paywatch.providers.xero`` (see its docstring)::

    quickbooks.thin is True; quickbooks.empty_ack is False
    quickbooks.verify(body, headers, secrets, now)   # intuit-signature, verifier_token
    doc = quickbooks.parse(body); quickbooks.handshake(doc) is False
    quickbooks.subject(doc), quickbooks.provider_event_id(doc)
    quickbooks.normalize(raw, ...) == []
    refs = quickbooks.references(doc)                # invoices and payments
    api = quickbooks.api(http)                       # QuickBooksApi
    result = await api.fetch(ref, secrets, on_rotated=store)
    more = quickbooks.follow_ups(ref, result.document, result.status)  # invoices a payment pays
    quickbooks.normalize_fetched(tenant, ref, result.document, coords, status=result.status)

Modules: ``events`` (both delivery formats -> refs), ``documents`` (fetched entities ->
follow-ups and events), ``api`` (QuickBooksApi), ``provider`` (QuickBooksProvider). Shared
pieces come from ``paywatch.providers.thin`` (refs, HMAC, OAuth, client, ledger rules).
"""

from __future__ import annotations

from paywatch.providers.quickbooks.api import (
    MINOR_VERSION,
    QBO_API_BASE,
    QBO_TOKEN_URL,
    QuickBooksApi,
)
from paywatch.providers.quickbooks.provider import QuickBooksProvider, quickbooks

__all__ = [
    "MINOR_VERSION",
    "QBO_API_BASE",
    "QBO_TOKEN_URL",
    "QuickBooksApi",
    "QuickBooksProvider",
    "quickbooks",
]
