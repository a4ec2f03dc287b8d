"""The one small port every provider module implements.

A provider module is pure: no clock (``now`` is passed in), no I/O, no random.
The ingest route calls ``verify`` on the raw bytes before anything else, then
``parse`` and ``subject``; the normalize agent calls ``normalize``.
Errors: ``VerificationError`` (401), ``PayloadError`` (400) from
:mod:`paywatch.errors`; nothing else may escape for any input.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from paywatch.schemas.models import PaymentEvent, RawWebhook

# Fixed namespace for deterministic event ids: never change it (replay relies on it).
EVENT_NAMESPACE = uuid.UUID("6f1c3c1e-5a7b-4c39-9a0e-70a1e0c0ffee")

Secrets = Sequence[Mapping[str, str]]
"""Every currently valid secret set of a tenant for one provider, newest first
(several during rotation). Each maps secret name -> value."""


def event_id(tenant: str, provider: str, provider_event_id: str, index: int = 0) -> str:
    """Deterministic canonical event id: uuid5(tenant/provider/provider event id/index)."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{tenant}/{provider}/{provider_event_id}/{index}"))


class Provider(Protocol):
    """What ingest and the normalize agent need from a provider module."""

    name: str
    secret_names: tuple[str, ...]
    """Secret names a tenant must store (``paywatch tenant secret``)."""

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless the raw body is signed by one of ``secrets``."""
        ...

    def parse(self, body: bytes) -> dict[str, Any]:
        """Decode a verified body into a document, or raise PayloadError."""
        ...

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """Invoice, subscription or customer id for the Kafka key, when cheap to name."""
        ...

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """The provider's id for this delivery (or a dedupe key built from its content)."""
        ...

    def normalize(
        self, raw: RawWebhook, topic: str, partition: int, offset: int
    ) -> list[PaymentEvent]:
        """Turn one raw webhook (read at topic[partition]@offset) into canonical events.

        Pure. Each event gets ``event_id(tenant, provider, provider_event_id, index)``
        and ``raw=RawRef(topic, partition, offset, provider_event_id)``. Event types the
        module does not handle give ``[]``; a body it cannot read raises PayloadError.
        """
        ...
