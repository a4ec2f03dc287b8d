"""Xero Accounting API client: fetch one invoice for a webhook reference (I/O).

``GET {api_base}/Invoices/{InvoiceID}`` with ``xero-tenant-id: {tenantId}`` and
``Accept: application/json`` (Xero answers XML otherwise). ``api_base`` (tenant secret)
defaults to ``https://api.xero.com/api.xro/2.0``. Access tokens come from the refresh-token
grant at ``https://identity.xero.com/connect/token`` (HTTP Basic client credentials); Xero
issues a new refresh token on every refresh, so ``FetchResult.rotated_secrets`` is set after
each refresh until the tenant's stored ``refresh_token`` catches up. Token lifetime: the
``expires_in`` Xero returns (30 minutes [S]). Xero answers 429 with ``Retry-After`` when a
tenant's rate limit (60 calls/min [S]) is hit.
"""

from __future__ import annotations

from paywatch.providers.thin.client import ThinApi, segment
from paywatch.providers.thin.refs import ResourceRef

XERO_API_BASE = "https://api.xero.com/api.xro/2.0"
XERO_TOKEN_URL = "https://identity.xero.com/connect/token"  # noqa: S105 (a URL)
_PATHS = {"invoice": "Invoices", "payment": "Payments"}


class XeroApi(ThinApi):
    """Fetches Xero invoices through an injected ``httpx.AsyncClient``."""

    provider = "xero"
    default_api_base = XERO_API_BASE
    default_token_url = XERO_TOKEN_URL

    def resource_url(self, api_base: str, ref: ResourceRef) -> str:
        """``{api_base}/Invoices/{id}`` (built from the id, never from ``resourceUrl``)."""
        return f"{api_base}/{_PATHS[ref.kind]}/{segment(ref.resource_id)}"

    def resource_headers(self, ref: ResourceRef) -> dict[str, str]:
        """The organisation the resource belongs to."""
        return {"xero-tenant-id": ref.tenant_ref}
