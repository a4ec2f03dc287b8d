"""The Stripe adapter of the Provider port (reference/webhooks.md §1.1, §2.1, §3.1)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from paywatch.errors import PayloadError
from paywatch.providers.base import Provider, Secrets, envelope, load_json, refusal, subject_ref
from paywatch.providers.stripe.fields import created, obj, ref
from paywatch.providers.stripe.normalize import HANDLERS
from paywatch.providers.stripe.signature import DEFAULT_TOLERANCE, verify_signature
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PaymentEvent, RawWebhook


class StripeProvider(Provider):
    """The Stripe adapter of the Provider port."""

    name: str = "stripe"
    secret_names: tuple[str, ...] = ("signing_secret",)
    not_card_numbers = frozenset({"network_transaction_id"})
    """Card networks' transaction ids (Visa's are 15 digits, Luhn-valid one time in ten) sit
    in ``payment_method_details.card``: issued by the network, never a card number."""

    def __init__(self, tolerance: int = DEFAULT_TOLERANCE) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0 seconds")
        self.tolerance = tolerance

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless a v1 signature over the raw body matches a secret.

        ``headers`` keys are expected lowercased (the ingest lowercases them). Stricter than
        the SDK: timestamps more than ``tolerance`` seconds in the *future* are refused too
        (the SDK only refuses old ones). ``now`` must be timezone-aware.
        """
        verify_signature(body, headers, secrets, now, self.tolerance)

    def parse(self, body: bytes) -> dict[str, Any]:
        """Decode a Stripe event: a JSON object with ``id``, ``type`` and ``data.object``."""
        doc = load_json(body)
        if not isinstance(doc, dict):
            raise PayloadError("a Stripe event is a JSON object")
        for key in ("id", "type"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise PayloadError(f"Stripe event has no string {key!r}")
        if not isinstance(obj(doc, "data").get("object"), dict):
            raise PayloadError("Stripe event has no object 'data.object'")
        return doc

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """Invoice id when the event names one, else the customer id, else None."""
        return subject_ref(self._subject(doc))

    def _subject(self, doc: Mapping[str, Any]) -> str | None:
        evt_type = doc.get("type")
        data_object = obj(obj(doc, "data"), "object")
        if not isinstance(evt_type, str):
            return None
        if evt_type.startswith("invoice."):
            return ref(data_object.get("id")) or ref(data_object.get("customer"))
        if evt_type.startswith("customer.subscription."):
            return ref(data_object.get("latest_invoice")) or ref(data_object.get("customer"))
        return ref(data_object.get("invoice")) or ref(data_object.get("customer"))

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """Stripe's event id (``evt_...``)."""
        evt_id = doc.get("id")
        if not isinstance(evt_id, str) or not evt_id:
            raise PayloadError("Stripe event has no string 'id'")
        return evt_id

    def normalize_doc(
        self, raw: RawWebhook, doc: Mapping[str, Any], at: Coords
    ) -> list[PaymentEvent]:
        """Canonical events of one Stripe webhook; unhandled event types give []."""
        evt_type: str = doc["type"]
        handler = HANDLERS.get(evt_type)
        try:  # a handler builds nested models (PaymentMethod): their refusals are 400s too
            fields = handler(doc["data"]) if handler else None
        except ValidationError as exc:
            raise PayloadError(f"Stripe event has unexpected field values: {refusal(exc)}") from exc
        # One Stripe event gives at most one canonical event today; the index keeps ids
        # distinct should a handler ever emit several.
        drafts = [fields] if fields is not None else []
        evt_id = self.provider_event_id(doc)
        return [
            envelope(
                raw,
                at,
                evt_id,
                draft,
                source_type=evt_type,
                occurred_at=created(doc),
                invalid=f"Stripe event {evt_id} has unexpected field values",
                index=index,
            )
            for index, draft in enumerate(drafts)
        ]


stripe = StripeProvider()
"""The Stripe provider with the SDK's default 300 s tolerance."""
