"""The shared base of thin-webhook providers (Xero, QuickBooks): what they all do alike.

A thin provider signs the raw body with base64(HMAC-SHA256(secret, body)) in one header,
says nothing about payments before the resources it names are fetched (``normalize_doc``
is always empty) and keeps the same optional OAuth/API secrets. Subclasses name their
header and secret and implement the :class:`~paywatch.providers.thin.port.ThinProvider`
hooks (``references``, ``normalize_fetched``, ``api``; ``follow_ups`` defaults to none).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from paywatch.providers.base import Provider, Secrets
from paywatch.providers.thin.refs import ResourceRef
from paywatch.providers.thin.signature import verify_b64_hmac
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PaymentEvent, RawWebhook


class ThinProviderBase(Provider):
    """Declared defaults of a thin-webhook provider."""

    thin: bool = True
    signature_header: str = ""
    """The header carrying base64(HMAC-SHA256(secret, raw body))."""
    display_name: str = ""
    """The provider's name in error messages."""
    optional_secret_names: tuple[str, ...] = (
        "client_id",
        "client_secret",
        "refresh_token",
        "api_base",
    )

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless ``signature_header`` signs the raw body (no time)."""
        verify_b64_hmac(
            body,
            headers,
            secrets,
            header_name=self.signature_header,
            secret_name=self.secret_names[0],
            what=self.display_name,
        )

    def normalize_doc(
        self, raw: RawWebhook, doc: Mapping[str, Any], at: Coords
    ) -> list[PaymentEvent]:
        """Always []: a thin webhook says nothing before its resources are fetched."""
        return []

    def follow_ups(self, ref: ResourceRef, document: bytes, status: int = 200) -> list[ResourceRef]:
        """Further resources a fetched document asks for: none unless a provider says so."""
        return []
