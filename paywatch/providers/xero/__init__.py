"""Xero webhooks: thin, HMAC-signed batches; the invoices they name are fetched, then normalized.

The thin-webhook interface (shared with ``paywatch.providers.quickbooks``)::

    xero.thin is True; xero.empty_ack is True       # 200/401 with no body, always
    xero.verify(body, headers, secrets, now)        # x-xero-signature, webhook_key
    doc = xero.parse(body)                          # PayloadError when malformed
    xero.handshake(doc) -> bool                     # intent-to-receive: ack, store nothing
    xero.subject(doc), xero.provider_event_id(doc)  # Kafka key part, delivery dedupe key
    xero.normalize(raw, topic, partition, offset)   # always [] (thin)
    refs = xero.references(doc)                     # list[ResourceRef], pure
    api = xero.api(http)                            # XeroApi(httpx.AsyncClient)
    result = await api.fetch(ref, secrets, on_rotated=store)  # FetchResult (I/O)
    # -> append (ref, result) to webhooks.fetched; then, also on replay, from the log:
    xero.follow_ups(ref, result.document, result.status)     # more refs ([] for Xero)
    xero.normalize_fetched(tenant, ref, result.document, (topic, partition, offset),
                           status=result.status)   # list[PaymentEvent], pure

Modules: ``batch`` (Xero batches), ``invoice`` (fetched invoice -> events), ``api``
(XeroApi, I/O), ``provider`` (XeroProvider). The machinery shared with QuickBooks (refs,
HMAC, OAuth, the API client base, ledger rules) lives in ``paywatch.providers.thin``.
"""

from __future__ import annotations

from paywatch.providers.xero.api import XERO_API_BASE, XERO_TOKEN_URL, XeroApi
from paywatch.providers.xero.provider import XeroProvider, xero

__all__ = [
    "XERO_API_BASE",
    "XERO_TOKEN_URL",
    "XeroApi",
    "XeroProvider",
    "xero",
]
