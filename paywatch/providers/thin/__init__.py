"""Machinery shared by the thin-webhook providers (Xero, QuickBooks).

A thin webhook names changed resources without their state; the worker fetches each one,
logs it to ``webhooks.fetched`` and normalizes it from there.

Modules: ``port`` (ThinProvider, what the fetch step needs), ``refs`` (ResourceRef,
FetchResult, RateLimited), ``signature`` (base64 HMAC-SHA256 over the raw body),
``fields`` (JSON and time reads), ``ledger`` (shared ledger normalization: overdue,
LedgerRules, the event builder), and the I/O side, ``oauth`` (refresh-token grant, token
cache, rotation) and ``client`` (ThinApi: fetch, status mapping, size cap), both on httpx.
Only the pure modules are imported here.
"""

from __future__ import annotations

from paywatch.providers.thin.ledger import LedgerRules, RawCoords
from paywatch.providers.thin.port import ThinProvider
from paywatch.providers.thin.refs import NOT_FETCHED, FetchResult, RateLimited, ResourceRef

__all__ = [
    "NOT_FETCHED",
    "FetchResult",
    "LedgerRules",
    "RateLimited",
    "RawCoords",
    "ResourceRef",
    "ThinProvider",
]
