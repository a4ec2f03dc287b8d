"""The alerts agent: a tenant's failures counted per provider and decline code, incidents out.

Agent ``tenant-alerts`` reads ``risk.tenants`` (one small ``risk.alerts.Signal`` per failure or
success, sent by the normalize agents, key ``tenant``: all of a tenant's signals on one
partition, owned by one worker) and keeps table ``alerts-tenants`` (tenant ->
``risk.alerts.TenantAlerts``, msgpack, changelogged). ``risk.alerts.step`` (pure) folds each
signal as of the record's Kafka time and says which ``Alert`` records an incident needs —
opened, updated, resolved — and the stage sends them to ``alerts`` (key ``tenant``). Batched
like the other stages (``batches.Stage``): outputs acked, then the table, then the offsets; a
record that cannot be read is dead-lettered to ``payments.events.dlq``.

Time moves for a tenant only with its records, so while a tenant has an open incident (as
the worker's alert view reads ``alerts``) the clock loop sends it a ``tick`` signal every
``TICK_S`` through ``risk.tenants``: an outage after which the tenant's traffic stops still
resolves (and the sagas' held retries go again). Ticks are records, so a replay of
``risk.tenants`` decides the same; a tick from a second worker only repeats the time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from paywatch.errors import PayloadError
from paywatch.recovery.clock import SagaClock
from paywatch.risk.alerts import (
    TenantAlerts,
    decode,
    decode_signal,
    encode,
    encode_signal,
    step,
    tick_signal,
)
from paywatch.schemas.codec import Codec
from paywatch.schemas.topics import tenant_key
from paywatch.streams.batches import LastWrites, Record, Stage, acting_as, bounded

log = logging.getLogger(__name__)

BATCH_MAX = 500
BATCH_WITHIN_S = 0.05
TICK_S = 10.0


class OpenIncidents(Protocol):
    """The tenants with an open incident (``alert_view.AlertView``)."""

    def open_tenants(self) -> list[str]:
        """Every tenant with at least one open incident."""
        ...


@dataclass
class AlertsRuntime:
    """What the alerts agent needs inside one worker."""

    codec: Codec
    clock: SagaClock
    entries: Any  # Faust table: tenant -> TenantAlerts bytes
    alerts: Any  # alerts topic


@dataclass
class AlertsStage:
    """The alerts agent's batch step: fold each signal, send the incidents' records."""

    stage: Stage
    runtime: AlertsRuntime

    async def run(self, batch: Sequence[Any]) -> None:
        """Fold every record of the batch in offset order, then deliver them together."""
        states: dict[str, TenantAlerts] = {}
        writes = LastWrites()
        await self.stage.fold_all(
            batch,
            "tenant-alerts",
            self.runtime.clock,
            lambda r, now: self._fold(r, states, writes, now),
        )

    def _fold(
        self, record: Record, states: dict[str, TenantAlerts], writes: LastWrites, now: datetime
    ) -> None:
        runtime = self.runtime
        msg = record.message
        try:
            tenant = bytes(msg.key or b"").decode("utf-8")
            if not tenant:
                raise PayloadError("a risk.tenants record without its tenant key")
            signal = decode_signal(msg.value)
            state = states.get(tenant) or self._read(record, tenant)
            updated, alerts = step(state, tenant, signal, now)
            if updated is None:  # a tick for a tenant this partition never saw
                record.outputs = []
                return
            key = tenant_key(tenant).encode()
            outputs = []
            for alert in alerts:
                value = self.stage.codec.encode(alert, topic=runtime.alerts.get_topic_name())
                outputs.append(bounded(runtime.alerts, key, value, "Alert"))
            value = encode(updated)
        except Exception as exc:  # any failure of one record is that record's dead letter
            record.outputs = []
            record.error = exc
            return
        record.outputs = outputs
        states[tenant] = updated
        writes.set(tenant, record, lambda: runtime.entries.__setitem__(tenant, value))

    def _read(self, record: Record, tenant: str) -> TenantAlerts | None:
        with acting_as(record.event):  # rocksdb: read the record's partition
            stored = self.runtime.entries.get(tenant)
        return None if stored is None else decode(stored)


async def send_ticks(incidents: OpenIncidents, signals: Any) -> int:
    """One tick to ``risk.tenants`` for every tenant with an open incident; how many."""
    tenants = incidents.open_tenants()
    for tenant in tenants:
        value = encode_signal(tick_signal(uuid.uuid4().hex))
        await signals.send(key=tenant_key(tenant).encode(), value=value)
    return len(tenants)


def install(
    app: Any,
    runtime: AlertsRuntime,
    source: Any,
    stage: Stage,
    clock: tuple[OpenIncidents, Any, Callable[[], Awaitable[None]]] | None = None,
) -> None:
    """Register the alerts agent on ``source`` (risk.tenants) and, with ``clock`` (the open
    incidents, the risk.tenants topic to send on, and a wait until the view is loaded),
    the loop that ticks tenants with open incidents."""
    step_ = AlertsStage(stage, runtime)

    @app.agent(source, name="tenant-alerts")  # type: ignore[untyped-decorator]
    async def alerts(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await step_.run(batch)

    if clock is None:
        return
    incidents, signals, ready = clock

    @app.timer(interval=TICK_S, name="tenant-alerts-clock")  # type: ignore[untyped-decorator]
    async def alerts_clock() -> None:
        try:
            await ready()
            await send_ticks(incidents, signals)
        except Exception:  # the loop must survive one bad send; it ticks again
            log.exception("alerts clock: sending ticks failed")
