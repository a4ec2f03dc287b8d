"""QuickBooks Online Accounting API client: fetch one invoice or payment (I/O).

``GET {api_base}/v3/company/{realmId}/{invoice|payment}/{id}?minorversion=75`` with
``Accept: application/json`` (QBO answers XML otherwise). ``api_base`` (tenant secret)
defaults to production ``https://quickbooks.api.intuit.com`` (sandbox:
``https://sandbox-quickbooks.api.intuit.com``). Minor version 75 is the oldest Intuit still
honours since 2025-08-01 (older values are ignored) [V: Intuit blog 2025-01-21].

Tokens: refresh-token grant at ``https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer``
(HTTP Basic client credentials, form body). Intuit returns a refresh token with every
refresh and sometimes a new one; a new one is reported in ``rotated_secrets``.

Reading a deleted entity answers HTTP 400 with a ``Fault`` whose error code is ``610``
("Object Not Found") [S]; that is recorded as status 404 like a plain 404.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from paywatch.providers.thin.client import MAX_DOCUMENT_BYTES, ThinApi, segment
from paywatch.providers.thin.refs import ResourceRef

QBO_API_BASE = "https://quickbooks.api.intuit.com"
QBO_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"  # noqa: S105 (a URL)
MINOR_VERSION = 75
OBJECT_NOT_FOUND = "610"


class QuickBooksApi(ThinApi):
    """Fetches QBO invoices and payments through an injected ``httpx.AsyncClient``."""

    provider = "quickbooks"
    default_api_base = QBO_API_BASE
    default_token_url = QBO_TOKEN_URL

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        minor_version: int = MINOR_VERSION,
        token_url: str | None = None,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(http, token_url=token_url, max_bytes=max_bytes, clock=clock)
        self.minor_version = minor_version

    def resource_url(self, api_base: str, ref: ResourceRef) -> str:
        """``{api_base}/v3/company/{realm}/{kind}/{id}?minorversion=N``."""
        realm, entity = segment(ref.tenant_ref), segment(ref.resource_id)
        return (
            f"{api_base}/v3/company/{realm}/{ref.kind}/{entity}?minorversion={self.minor_version}"
        )

    def gone(self, status: int, body: bytes) -> bool:
        """HTTP 400 with Fault error code 610, "Object Not Found"."""
        return status == 400 and OBJECT_NOT_FOUND in _fault_codes(body)


def _fault_codes(body: bytes) -> set[str]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return set()
    fault = doc.get("Fault") if isinstance(doc, dict) else None
    errors = fault.get("Error") if isinstance(fault, dict) else None
    if not isinstance(errors, list):
        return set()
    return {str(e.get("code")) for e in errors if isinstance(e, dict)}
