"""The Xero adapter of the Provider port, plus the thin-webhook hooks (reference §1.5, §2.5).

Xero signs the raw body: ``x-xero-signature`` = base64(HMAC-SHA256(webhook key as UTF-8,
body)). Every Xero response must be 200 or 401 **without a body** (``empty_ack``), also for
the intent-to-receive handshake: a batch with no events that Xero sends, well and badly
signed, when the webhook is created or re-enabled (``handshake``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import httpx

from paywatch.providers.thin.base import ThinProviderBase
from paywatch.providers.thin.ledger import LedgerRules, RawCoords
from paywatch.providers.thin.refs import ResourceRef
from paywatch.providers.xero import batch
from paywatch.providers.xero.api import XeroApi
from paywatch.providers.xero.invoice import SALES_TYPES, normalize_invoice
from paywatch.schemas.models import DeclineCategory, PaymentEvent

SIGNATURE_HEADER = "x-xero-signature"


class XeroProvider(ThinProviderBase):
    """Xero webhooks: thin, signed batches; invoices are fetched, then normalized.

    ``grace_days`` (default 0): days after the due date before INVOICE_OVERDUE;
    ``overdue_category`` (default ACTION): its decline category; ``invoice_types`` (default
    ACCREC): the invoice types watched; ``collapse_repeats`` (default True): one fetch per
    invoice and event type per delivery.
    """

    name: str = "xero"
    secret_names: tuple[str, ...] = ("webhook_key",)
    signature_header: str = SIGNATURE_HEADER
    display_name: str = "Xero"
    empty_ack: bool = True

    def __init__(
        self,
        *,
        grace_days: int = 0,
        overdue_category: DeclineCategory = DeclineCategory.ACTION,
        invoice_types: Collection[str] = SALES_TYPES,
        collapse_repeats: bool = True,
    ) -> None:
        self.rules = LedgerRules(grace_days=grace_days, overdue_category=overdue_category)
        self.invoice_types = frozenset(invoice_types)
        self.collapse_repeats = collapse_repeats

    def parse(self, body: bytes) -> dict[str, Any]:
        """A batch: JSON object with an ``events`` list (empty for intent-to-receive)."""
        return batch.parse_batch(body)

    def handshake(self, doc: Mapping[str, Any]) -> bool:
        """True for intent-to-receive: answer 200 with no body, nothing to store."""
        return batch.is_intent_to_receive(doc)

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """The one invoice id of the batch, else its one organisation id, else None."""
        return batch.subject(doc)

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """A content hash of the batch's events (Xero has no event ids)."""
        return batch.delivery_key(doc)

    def references(self, doc: Mapping[str, Any]) -> list[ResourceRef]:
        """The invoices a parsed batch asks to fetch, in delivery order."""
        return batch.references(doc, collapse_repeats=self.collapse_repeats)

    def normalize_fetched(
        self,
        tenant: str,
        ref: ResourceRef,
        document: bytes,
        raw_coords: RawCoords,
        index: int = 0,
        *,
        status: int = 200,
    ) -> list[PaymentEvent]:
        """Canonical events of one fetched invoice (pure; see ``xero.invoice``)."""
        return normalize_invoice(
            tenant,
            ref,
            document,
            raw_coords,
            index,
            status=status,
            rules=self.rules,
            invoice_types=self.invoice_types,
        )

    def api(self, http: httpx.AsyncClient, **options: Any) -> XeroApi:
        """A Xero API client on ``http`` (options: ``token_url``, ``max_bytes``, ``clock``)."""
        return XeroApi(http, **options)


xero = XeroProvider()
"""The Xero provider with defaults."""
