"""The Braintree adapter of the Provider port (reference/webhooks.md §1.3, §2.3, §3.3, §4)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from paywatch.errors import PayloadError
from paywatch.providers.base import Provider, Secrets, envelope, refusal, subject_ref
from paywatch.providers.braintree import normalize as fields_of
from paywatch.providers.braintree.signature import challenge_response, form_fields, verify_form
from paywatch.providers.braintree.xmldoc import MAX_XML_BYTES, decode_payload
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PaymentEvent, RawWebhook

_CURRENCY = re.compile(r"[A-Z]{3}")


class BraintreeProvider(Provider):
    """Braintree webhooks: a form with ``bt_signature`` and ``bt_payload`` (base64 XML).

    ``default_currency`` is used when a payload names none (subscriptions carry no currency;
    a Braintree merchant account has one); None leaves such amounts unset rather than
    guessing. ``max_xml_bytes`` caps the decoded XML.
    """

    name: str = "braintree"
    secret_names: tuple[str, ...] = ("public_key", "private_key")
    answers_challenge: bool = True

    def __init__(
        self, default_currency: str | None = None, max_xml_bytes: int = MAX_XML_BYTES
    ) -> None:
        if default_currency is not None and not _CURRENCY.fullmatch(default_currency):
            raise ValueError("default_currency must be an upper-case ISO 4217 code")
        if max_xml_bytes <= 0:
            raise ValueError("max_xml_bytes must be positive")
        self.default_currency = default_currency
        self.max_xml_bytes = max_xml_bytes

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless ``bt_signature`` signs ``bt_payload``.

        The form is parsed (not the XML) to read the two fields; no header and no time
        is signed, so ``headers`` and ``now`` are unused (Braintree has no replay window).
        """
        verify_form(body, secrets)

    def challenge_response(self, challenge: str, secrets: Secrets) -> str:
        """Answer to Braintree's ``GET ?bt_challenge=`` handshake (text/plain, 200)."""
        return challenge_response(challenge, secrets)

    def parse(self, body: bytes) -> dict[str, Any]:
        """The ``<notification>`` as a dict; CardDataError when the XML holds a PAN."""
        _, payload = form_fields(body, PayloadError)
        doc = decode_payload(payload, self.max_xml_bytes)
        if not fields_of.text(doc, "kind"):
            raise PayloadError("Braintree notification has no kind")
        fields_of.timestamp(doc)
        return doc

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """The subscription id, else the transaction (or dispute...) id."""
        subject_id, txn_id = fields_of.subject_ids(doc)
        return subject_ref(subject_id or txn_id)

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """A content hash: Braintree notifications carry no id (``normalize.dedupe_key``)."""
        return fields_of.dedupe_key(doc)

    def normalize_doc(
        self, raw: RawWebhook, doc: Mapping[str, Any], at: Coords
    ) -> list[PaymentEvent]:
        """Canonical events of one Braintree notification; unhandled kinds give []."""
        try:  # nested models (PaymentMethod, Decline) refuse out-of-bounds values: a 400 too
            draft = fields_of.fields(doc, self.default_currency)
        except ValidationError as exc:
            raise PayloadError(
                f"Braintree notification has unexpected field values: {refusal(exc)}"
            ) from exc
        if draft is None:
            return []
        return [
            envelope(
                raw,
                at,
                self.provider_event_id(doc),
                draft,
                source_type=str(doc["kind"]),
                occurred_at=fields_of.timestamp(doc),
                invalid="Braintree notification has unexpected field values",
            )
        ]


braintree = BraintreeProvider()
"""The Braintree provider with default settings (no default currency)."""
