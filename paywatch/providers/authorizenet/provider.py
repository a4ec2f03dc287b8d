"""The Authorize.Net adapter of the Provider port (reference/webhooks.md §1.4, §2.4, §3.4)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.authorizenet import normalize as fields_of
from paywatch.providers.authorizenet.signature import KEY_FORMS, KeyForm, verify_body
from paywatch.providers.base import (
    Provider,
    Secrets,
    envelope,
    load_json,
    reject_card_numbers,
    subject_ref,
)
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PaymentEvent, RawWebhook

DEFAULT_KEY_FORM: KeyForm = "ascii"
"""The reference's formula (the Signature Key string keys the HMAC) [U]."""
DEFAULT_CURRENCY = "USD"
_CURRENCY = re.compile(r"[A-Z]{3}")


class AuthorizeNetProvider(Provider):
    """Authorize.Net webhooks: JSON signed by ``X-ANET-Signature: sha512=<HEX>``.

    ``key_form``: how the Signature Key keys the HMAC, "ascii" (the string, default), "hex"
    (hex-decoded bytes) or "both" (accept either). ``default_currency``: the currency of
    every amount, since payloads carry none (it is a merchant-account setting) and the only
    tenant secret is ``signature_key``.
    """

    name: str = "authorizenet"
    secret_names: tuple[str, ...] = ("signature_key",)

    def __init__(
        self, key_form: KeyForm = DEFAULT_KEY_FORM, default_currency: str = DEFAULT_CURRENCY
    ) -> None:
        if key_form not in KEY_FORMS:
            raise ValueError(f"key_form must be one of {', '.join(KEY_FORMS)}")
        if not _CURRENCY.fullmatch(default_currency):
            raise ValueError("default_currency must be an upper-case ISO 4217 code")
        self.key_form: KeyForm = key_form
        self.default_currency = default_currency

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless X-ANET-Signature is the body's HMAC-SHA512.

        No time is signed, so ``now`` is unused (Authorize.Net has no replay window).
        """
        verify_body(body, headers, secrets, self.key_form)

    def parse(self, body: bytes) -> dict[str, Any]:
        """A notification: JSON object with notificationId, eventType, eventDate, payload."""
        doc = load_json(body, exact=True)
        if not isinstance(doc, dict):
            raise PayloadError("an Authorize.Net notification is a JSON object")
        for key in ("notificationId", "eventType"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise PayloadError(f"Authorize.Net notification has no string {key!r}")
        if not isinstance(doc.get("payload"), dict):
            raise PayloadError("Authorize.Net notification has no object 'payload'")
        fields_of.event_date(doc)
        reject_card_numbers(doc, "notification")
        return doc

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """The invoice number / transaction id, or ``sub:<id>`` for subscription events."""
        return subject_ref(fields_of.subject(doc))

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """Authorize.Net's ``notificationId``."""
        value = doc.get("notificationId")
        if not isinstance(value, str) or not value:
            raise PayloadError("Authorize.Net notification has no string 'notificationId'")
        return value

    def normalize_doc(
        self, raw: RawWebhook, doc: Mapping[str, Any], at: Coords
    ) -> list[PaymentEvent]:
        """Canonical events of one notification; unhandled event types give []."""
        draft = fields_of.fields(doc, self.default_currency)
        if draft is None:
            return []
        evt_id = self.provider_event_id(doc)
        return [
            envelope(
                raw,
                at,
                evt_id,
                draft,
                source_type=doc["eventType"],
                occurred_at=fields_of.event_date(doc),
                invalid=f"Authorize.Net notification {evt_id} has odd values",
            )
        ]


authorizenet = AuthorizeNetProvider()
"""The Authorize.Net provider: ASCII key form, USD amounts."""
