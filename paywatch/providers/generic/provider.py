"""The generic (Standard Webhooks) adapter of the Provider port."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from paywatch.errors import CardDataError, PayloadError
from paywatch.providers.base import Secrets, event_id
from paywatch.providers.generic import schema
from paywatch.providers.generic.signature import (
    DEFAULT_TOLERANCE,
    ID_HEADER,
    header,
    verify_message,
)
from paywatch.providers.pan import contains_pan
from paywatch.schemas.models import PaymentEvent, RawRef, RawWebhook


class GenericProvider:
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
        try:
            doc = json.loads(body.decode("utf-8"), parse_float=Decimal)
        except UnicodeDecodeError as exc:
            raise PayloadError("body is not UTF-8") from exc
        except RecursionError as exc:
            raise PayloadError("JSON nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError, and ints over the digit limit
            raise PayloadError(f"body is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise PayloadError("a generic event is a JSON object")
        if not isinstance(doc.get("type"), str) or not doc["type"]:
            raise PayloadError("generic event has no string 'type'")
        # The ingest's check reads raw bytes; JSON escapes (\u0034...) only show once decoded.
        if contains_pan("\n".join(_strings(doc)).encode("utf-8", "surrogatepass")):
            raise CardDataError("event contains a card number")
        return doc

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """The invoice, else the subscription, else the customer reference."""
        for key in ("invoice_ref", "subscription_ref", "customer_ref"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return value
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

    def normalize(
        self, raw: RawWebhook, topic: str, partition: int, offset: int
    ) -> list[PaymentEvent]:
        """The event of one generic webhook; unknown types give []."""
        doc = self.parse(raw.body)
        kind = schema.TYPES.get(doc["type"])
        if kind is None:
            return []
        evt_id = header(raw.headers, ID_HEADER) or self.provider_event_id(doc)
        ref = RawRef(topic=topic, partition=partition, offset=offset, provider_event_id=evt_id)
        try:
            return [
                PaymentEvent(
                    event_id=event_id(raw.tenant, raw.provider, evt_id, 0),
                    tenant=raw.tenant,
                    provider=raw.provider,
                    source_type=doc["type"],
                    occurred_at=schema.occurred_at(doc),
                    raw=ref,
                    **schema.fields(doc, kind),
                )
            ]
        except ValidationError as exc:
            raise PayloadError(f"generic event {evt_id} has unexpected field values") from exc


def _strings(doc: object) -> list[str]:
    """Every string (keys included) in a JSON document, without recursion."""
    found: list[str] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


generic = GenericProvider()
"""The generic provider with the Standard Webhooks 5-minute tolerance."""
