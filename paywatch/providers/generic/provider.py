"""The generic (Standard Webhooks) adapter of the Provider port."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.base import (
    Provider,
    Secrets,
    envelope,
    load_json,
    reject_card_numbers,
    subject_ref,
)
from paywatch.providers.generic import schema
from paywatch.providers.generic.signature import (
    DEFAULT_TOLERANCE,
    ID_HEADER,
    header,
    verify_message,
)
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PaymentEvent, RawWebhook


class GenericProvider(Provider):
    """Any billing system speaking Standard Webhooks with paywatch's generic payload.

    ``tolerance``: seconds ``webhook-timestamp`` may differ from ``now``, both ways
    (default 300, the spec's 5 minutes).
    """

    name: str = "generic"
    secret_names: tuple[str, ...] = ("signing_secret",)

    def __init__(self, tolerance: int = DEFAULT_TOLERANCE) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0 seconds")
        self.tolerance = tolerance

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless a ``v1`` signature over id.timestamp.body matches.

        ``now`` must be timezone-aware; timestamps outside ``tolerance`` either way fail.
        """
        verify_message(body, headers, secrets, now, self.tolerance)

    def parse(self, body: bytes) -> dict[str, Any]:
        """A generic event: a JSON object with a string ``type`` (see ``schema``)."""
        doc = load_json(body, exact=True)
        if not isinstance(doc, dict):
            raise PayloadError("a generic event is a JSON object")
        if not isinstance(doc.get("type"), str) or not doc["type"]:
            raise PayloadError("generic event has no string 'type'")
        reject_card_numbers(doc, "event")
        return doc

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """The invoice, else the subscription, else the customer reference."""
        for key in ("invoice_ref", "subscription_ref", "customer_ref"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return subject_ref(value)
        return None

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """The body's ``id``, else a hash of the body's content.

        The ``webhook-id`` header is the event id (``normalize`` reads it from the raw
        record); the body alone cannot name it, so this is the fallback dedupe key.
        """
        value = doc.get("id")
        if isinstance(value, str) and value:
            return value
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
        return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()

    def normalize_doc(
        self, raw: RawWebhook, doc: Mapping[str, Any], at: Coords
    ) -> list[PaymentEvent]:
        """The event of one generic webhook; unknown types give []."""
        kind = schema.TYPES.get(doc["type"])
        if kind is None:
            return []
        evt_id = header(raw.headers, ID_HEADER) or self.provider_event_id(doc)
        return [
            envelope(
                raw,
                at,
                evt_id,
                partial(schema.fields, doc, kind),
                source_type=doc["type"],
                occurred_at=schema.occurred_at(doc),
                invalid=f"generic event {evt_id} has unexpected field values",
            )
        ]


generic = GenericProvider()
"""The generic provider with the Standard Webhooks 5-minute tolerance."""
