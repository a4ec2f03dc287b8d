"""AlertView: which providers of each tenant have an open outage alert, read from ``alerts``.

The saga agent holds a paywatch retry due on a provider with an open
``PROVIDER_FAILURE_SPIKE`` incident (``recovery.firing``: a retry into an outage fails and
still counts against the card's network limits). The view follows the ``alerts`` topic like
the policy view follows ``recovery.policies`` (every partition, from the beginning, live):
an OPEN record of the kind opens the tenant/provider, the RESOLVED record of the same
``alert_id`` closes it. A record that does not decode is logged and skipped.
"""

from __future__ import annotations

import logging

from paywatch.errors import CodecError
from paywatch.kafka.codec import make_codec
from paywatch.kafka.security import KafkaSecurity, kafka_security
from paywatch.risk.alerts import PROVIDER_SPIKE
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import Alert, AlertStatus
from paywatch.schemas.topics import ALERTS
from paywatch.settings import Settings
from paywatch.streams.policy_view import TopicView

log = logging.getLogger(__name__)


class OutageBook:
    """Tenant -> provider -> the id of its open provider failure-spike incident."""

    def __init__(self, codec: Codec, topic: str | None = None) -> None:
        self._codec = codec
        self._topic = topic
        self._open: dict[str, dict[str, str]] = {}
        self._incidents: dict[str, set[str]] = {}  # tenant -> open alert ids, any kind

    def get(self, tenant: str) -> frozenset[str]:
        """The tenant's providers with an open outage alert."""
        return frozenset(self._open.get(tenant, ()))

    def __len__(self) -> int:
        return sum(map(len, self._open.values()))

    def open_tenants(self) -> list[str]:
        """Every tenant with an open incident of any kind."""
        return sorted(self._incidents)

    def apply(self, value: bytes | None, where: str) -> None:
        """Fold one ``alerts`` record (``where``: topic[partition]@offset)."""
        try:
            alert = self._codec.decode(value or b"", Alert, topic=self._topic)
        except CodecError as exc:
            log.warning("skipped alert %s: %s", where, exc)
            return
        ids = self._incidents.setdefault(alert.tenant, set())
        if alert.status is AlertStatus.OPEN:
            ids.add(alert.alert_id)
        else:
            ids.discard(alert.alert_id)
        if not ids:
            del self._incidents[alert.tenant]
        if alert.kind != PROVIDER_SPIKE or alert.provider is None:
            return
        opened = self._open.setdefault(alert.tenant, {})
        if alert.status is AlertStatus.OPEN:
            opened[alert.provider] = alert.alert_id
        elif opened.get(alert.provider) == alert.alert_id:
            del opened[alert.provider]


class AlertView(TopicView):
    """The open provider outages of every tenant, followed live from ``alerts``."""

    def __init__(
        self, bootstrap: str, topic: str, codec: Codec, *, security: KafkaSecurity
    ) -> None:
        self._book = OutageBook(codec, topic)
        super().__init__(bootstrap, topic, self._book.apply, "alert view", security=security)

    @classmethod
    def from_settings(cls, settings: Settings, bootstrap: str) -> AlertView:
        """A view of the settings' ``alerts`` topic with their codec."""
        topic, codec = settings.topic(ALERTS), make_codec(settings)
        return cls(bootstrap, topic, codec, security=kafka_security(settings))

    def get(self, tenant: str) -> frozenset[str]:
        """The tenant's providers with an open outage alert now."""
        return self._book.get(tenant)

    def open_tenants(self) -> list[str]:
        """Every tenant with an open incident of any kind now."""
        return self._book.open_tenants()

    def summary(self) -> str:
        """How many provider outages are open."""
        return f"{len(self._book)} open provider outage(s)"
