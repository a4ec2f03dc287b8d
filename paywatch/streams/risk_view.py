"""RiskView: the customers each tenant's risk model puts in the high bands, from ``risk.scores``.

The saga agent passes ``decide`` the band of a PaymentEvent's customer (``recovery.high_risk``:
a tenant may escalate earlier or ask for a new payment method first). The view follows the
compacted ``risk.scores`` topic like the alert view follows ``alerts`` (every partition, from
the beginning, live) and keeps only the customers whose latest score is HIGH or CRITICAL: a
later lower band, or a tombstone (a record without a value), removes the customer, so the
memory it needs is the high-risk population, not every scored customer. A record that does
not decode is logged and skipped; the customer keeps the band it had.
"""

from __future__ import annotations

import logging
from typing import Any

from paywatch.errors import CodecError
from paywatch.kafka.codec import make_codec
from paywatch.kafka.security import KafkaSecurity, kafka_security
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import RiskBand, RiskScore
from paywatch.schemas.topics import RISK_SCORES, customer_key
from paywatch.settings import Settings
from paywatch.streams.policy_view import TopicView, where

log = logging.getLogger(__name__)

HIGH_BANDS = frozenset({RiskBand.HIGH, RiskBand.CRITICAL})
"""The bands the view keeps (every ``HighRisk.min_band`` is one of them)."""


class RiskBook:
    """``tenant/customer_ref`` (the topic's key) -> the customer's band, HIGH or CRITICAL."""

    def __init__(self, codec: Codec, topic: str | None = None) -> None:
        self._codec = codec
        self._topic = topic
        self._bands: dict[str, RiskBand] = {}

    def get(self, tenant: str, customer_ref: str) -> RiskBand | None:
        """The customer's band if it is a high one (None: low, unknown, or never scored)."""
        return self._bands.get(customer_key(tenant, customer_ref))

    def __len__(self) -> int:
        return len(self._bands)

    def apply(self, key: bytes | None, value: bytes | None, where: str) -> None:
        """Fold one ``risk.scores`` record (``where``: topic[partition]@offset)."""
        if value is None:  # a tombstone: compaction forgets the customer, so does the view
            if key is not None:
                self._bands.pop(key.decode(errors="replace"), None)
            return
        try:
            score = self._codec.decode(value, RiskScore, topic=self._topic)
        except CodecError as exc:
            log.warning("skipped risk score %s: %s", where, exc)
            return
        name = customer_key(score.tenant, score.customer_ref)
        if score.band in HIGH_BANDS:
            self._bands[name] = score.band
        else:
            self._bands.pop(name, None)


class RiskView(TopicView):
    """The high-risk customers of every tenant, followed live from ``risk.scores``."""

    def __init__(
        self, bootstrap: str, topic: str, codec: Codec, *, security: KafkaSecurity
    ) -> None:
        self._book = RiskBook(codec, topic)
        # ``_fold`` below gives the book keys too; ``apply`` serves callers of the value only.
        super().__init__(
            bootstrap,
            topic,
            lambda value, at: self._book.apply(None, value, at),
            "risk view",
            security=security,
        )

    @classmethod
    def from_settings(cls, settings: Settings, bootstrap: str) -> RiskView:
        """A view of the settings' ``risk.scores`` topic with their codec."""
        topic, codec = settings.topic(RISK_SCORES), make_codec(settings)
        return cls(bootstrap, topic, codec, security=kafka_security(settings))

    def get(self, tenant: str, customer_ref: str) -> RiskBand | None:
        """The customer's band now if it is HIGH or CRITICAL, else None."""
        return self._book.get(tenant, customer_ref)

    def summary(self) -> str:
        """How many customers are in the high bands."""
        return f"{len(self._book)} customer(s) in the high bands"

    def _fold(self, rec: Any) -> None:
        """A tombstone needs its key: the book gets key and value."""
        self._book.apply(rec.key, rec.value, where(rec))
