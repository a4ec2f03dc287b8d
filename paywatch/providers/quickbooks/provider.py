"""The QuickBooks Online adapter of the Provider port, plus the thin-webhook hooks.

reference/webhooks.md §1.6, §2.6, §3.6, §4: ``intuit-signature`` = base64(HMAC-SHA256(
verifier token as UTF-8, raw body)); the verifier token is not the OAuth client secret.
Deliveries come in the legacy ``eventNotifications`` format or as CloudEvents (an array);
both carry ids only, so invoices and payments are fetched, then normalized. Intuit retries
any non-200 and may hold later events back behind a failing one (§4), so ingest should
answer fast and only reject what is really bad.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from paywatch.errors import PayloadError
from paywatch.providers.quickbooks import documents, events
from paywatch.providers.quickbooks.api import QuickBooksApi
from paywatch.providers.thin.base import ThinProviderBase
from paywatch.providers.thin.ledger import LedgerRules, RawCoords, currency_code
from paywatch.providers.thin.refs import ResourceRef
from paywatch.schemas.models import DeclineCategory, PaymentEvent

SIGNATURE_HEADER = "intuit-signature"


class QuickBooksProvider(ThinProviderBase):
    """QuickBooks Online webhooks: thin, signed; entities are fetched, then normalized.

    ``grace_days`` (default 0) and ``overdue_category`` (default ACTION) as for Xero;
    ``default_currency`` (default None): currency of invoices without ``CurrencyRef`` (None
    leaves their amounts unset); ``collapse_repeats`` (default True): one fetch per entity
    and event type per delivery.
    """

    name: str = "quickbooks"
    secret_names: tuple[str, ...] = ("verifier_token",)
    signature_header: str = SIGNATURE_HEADER
    display_name: str = "QuickBooks"
    empty_ack: bool = False
    not_card_numbers: frozenset[str] = events.REALM_KEYS
    """Realm ids are 15-19 digit numbers (sandbox ones start with 4): one in ten passes the
    Luhn check. Their digit-only values are masked in ingest's raw-byte scan."""

    def __init__(
        self,
        *,
        grace_days: int = 0,
        overdue_category: DeclineCategory = DeclineCategory.ACTION,
        default_currency: str | None = None,
        collapse_repeats: bool = True,
    ) -> None:
        self.rules = LedgerRules(grace_days=grace_days, overdue_category=overdue_category)
        try:
            self.default_currency = currency_code(default_currency)
        except PayloadError as exc:
            raise ValueError("default_currency must be an ISO 4217 code") from exc
        self.collapse_repeats = collapse_repeats

    def parse(self, body: bytes) -> dict[str, Any]:
        """Legacy delivery as is, CloudEvents as ``{"cloudevents": [...]}``."""
        return events.parse_delivery(body)

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """The one entity id of the delivery, else its one realm id, else None."""
        return events.subject(doc)

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """The CloudEvent id, or a content hash of the delivery."""
        return events.delivery_key(doc)

    def references(self, doc: Mapping[str, Any]) -> list[ResourceRef]:
        """The invoices and payments a parsed delivery asks to fetch, in delivery order."""
        return events.references(doc, collapse_repeats=self.collapse_repeats)

    def follow_ups(self, ref: ResourceRef, document: bytes, status: int = 200) -> list[ResourceRef]:
        """The invoices a fetched payment pays (fetch them too)."""
        return documents.follow_ups(ref, document, status)

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
        """Canonical events of one fetched entity (pure; see ``quickbooks.documents``)."""
        return documents.normalize_document(
            tenant,
            ref,
            document,
            raw_coords,
            index,
            status=status,
            rules=self.rules,
            default_currency=self.default_currency,
        )

    def api(self, http: httpx.AsyncClient, **options: Any) -> QuickBooksApi:
        """A QBO API client (options: minor_version, token_url, max_bytes, clock)."""
        return QuickBooksApi(http, **options)


quickbooks = QuickBooksProvider()
"""The QuickBooks Online provider with defaults."""
