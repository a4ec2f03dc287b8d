"""What the ingest routes need, built once in the app lifespan (``app.state.ingest``)."""

from __future__ import annotations

from dataclasses import dataclass

from paywatch.api.ratelimit import TokenBuckets
from paywatch.deadlines import Deadlines
from paywatch.kafka.appender import KafkaAppender
from paywatch.providers.base import Provider
from paywatch.schemas.codec import Codec
from paywatch.settings import Settings
from paywatch.tenants.cache import SecretCache
from paywatch.tenants.transmissions import TransmissionLedger


@dataclass(frozen=True)
class IngestContext:
    """The appender, secret cache, codec, raw topic, enabled providers, body deadline, the PayPal
    transmission ledger (None: no replay guard, e.g. PayPal not enabled) and the per-tenant
    rate limit (None: off)."""

    settings: Settings
    appender: KafkaAppender
    secrets: SecretCache
    codec: Codec
    raw_topic: str
    providers: dict[str, Provider]
    body_deadlines: Deadlines
    """The body read timeout, PAYWATCH_BODY_READ_TIMEOUT_S (408 when it passes)."""
    paypal_transmissions: TransmissionLedger | None = None
    limits: TokenBuckets | None = None
