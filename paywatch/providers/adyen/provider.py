"""The Adyen adapter of the Provider port (reference/webhooks.md §1.7, §2.7, §3.7, §4)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.adyen import normalize as fields_of
from paywatch.providers.adyen.normalize import DEFAULT_EVENTS, Scope
from paywatch.providers.adyen.signature import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_ITEMS,
    items,
    load,
    verify_notification,
)
from paywatch.providers.base import Provider, Secrets, envelope, reject_card_numbers, subject_ref
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import EventType, PaymentEvent, RawWebhook

SCOPES: tuple[Scope, ...] = ("all", "recurring")


NOT_CARD_NUMBERS = frozenset(
    {"networkTxReference", "acquirerReference", "pspReference", "originalReference"}
)
"""The scheme transaction id (Visa: 15 digits) and the acquirer reference: long digit
strings that pass the Luhn check by chance (~1 in 10), never card numbers. Adyen's own
16-character PSP references (``8815329842815468``) are in the signed part of each item,
so no merchant text can reach them; numeric ones start with 7-9 today, which the card
IIN rule already ignores, but nothing in Adyen's documentation promises it."""


class AdyenProvider(Provider):
    """Adyen Standard webhooks: JSON notifications whose items carry their own HMAC.

    ``scope``: which AUTHORISATION items become events. "all" (default) maps every refused
    and every successful authorisation; "recurring" keeps only those whose additionalData
    marks a recurring/stored-card payment (``recurringProcessingModel``,
    ``shopperInteraction=ContAuth``, ``recurring.*``), fields Adyen sends only when enabled in
    the Customer Area [U]. The scope applies to failures and successes alike, so a failure
    is never tracked without the success that recovers it.
    ``events``: ``"<eventCode>:<success>"`` -> EventType (default ``DEFAULT_EVENTS``).
    ``max_items`` / ``max_body``: limits of the strict parse that verification needs.
    """

    name: str = "adyen"
    secret_names: tuple[str, ...] = ("hmac_key",)
    success_body: str = "[accepted]"
    """Adyen expects this text as the body of the 2xx answer (reference/webhooks.md §4)."""
    success_media_type: str = "text/plain"

    scans_card_numbers: bool = True
    """parse() also scans the decoded JSON (the normalize agent parses too)."""
    not_card_numbers: frozenset[str] = NOT_CARD_NUMBERS
    """Digit-only values masked in ingest's raw-byte scan and skipped in parse's scan."""

    def __init__(
        self,
        scope: Scope = "all",
        events: Mapping[str, EventType] | None = None,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        if max_items < 1 or max_body < 1:
            raise ValueError("max_items and max_body must be positive")
        self.scope: Scope = scope
        self.events: Mapping[str, EventType] = dict(DEFAULT_EVENTS if events is None else events)
        self.max_items = max_items
        self.max_body = max_body

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless every item's hmacSignature matches an hmac_key.

        The signature is inside the body, so the body is parsed (strictly) first. Headers
        and ``now`` are unused: Adyen signs no header and no time (no replay window).
        """
        verify_notification(body, secrets, self.max_body, self.max_items)

    def parse(self, body: bytes) -> dict[str, Any]:
        """A notification: ``notificationItems[].NotificationRequestItem`` with ids."""
        doc = load(body, self.max_body)
        for item in items(doc, self.max_items):
            fields_of.item_id(item)
        reject_card_numbers(doc, "notification", self.not_card_numbers)
        return doc

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """The first item's merchantReference (its invoice), else its PSP reference."""
        try:
            first = items(doc, self.max_items)[0]
        except PayloadError:
            return None
        for key in ("merchantReference", "originalReference", "pspReference"):
            value = first.get(key)
            if isinstance(value, str) and value:
                return subject_ref(value)
        return None

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """The item's id for a one-item delivery; for a batch, a hash of its items' ids."""
        ids = [fields_of.item_id(item) for item in items(doc, self.max_items)]
        if len(ids) == 1:
            return ids[0]
        return (
            "batch:" + hashlib.sha256("\n".join(ids).encode("utf-8", "surrogatepass")).hexdigest()
        )

    def normalize_doc(
        self, raw: RawWebhook, doc: Mapping[str, Any], at: Coords
    ) -> list[PaymentEvent]:
        """One event per mapped item; its id comes from the item alone (batch-independent)."""
        events: list[PaymentEvent] = []
        seen: set[str] = set()
        for item in items(doc, self.max_items):
            kind = self._kind(item)
            item_id = fields_of.item_id(item)
            if kind is None or item_id in seen:
                continue
            seen.add(item_id)
            events.append(self._event(raw, item, kind, item_id, at))
        return events

    def _kind(self, item: Mapping[str, Any]) -> EventType | None:
        kind = self.events.get(fields_of.event_key(item))
        scoped = self.scope == "recurring" and item.get("eventCode") == "AUTHORISATION"
        if kind is not None and scoped and not fields_of.is_recurring(item):
            return None
        return kind

    def _event(
        self,
        raw: RawWebhook,
        item: Mapping[str, Any],
        kind: EventType,
        item_id: str,
        at: Coords,
    ) -> PaymentEvent:
        # Index 0: an item redelivered in another batch keeps its event id.
        return envelope(
            raw,
            at,
            item_id,
            partial(fields_of.fields, item, kind),
            source_type=fields_of.event_key(item),
            occurred_at=fields_of.occurred_at(item),
            invalid=f"Adyen item {item_id} has unexpected field values",
        )


adyen = AdyenProvider()
"""The Adyen provider: every authorisation, the default event map, 100 items at most."""
