"""The risk agent: one customer's features in one table entry, scores to ``risk.scores``.

Agent ``risk`` reads ``risk.customers`` (payments.events repartitioned by customer by the
normalize agents, key ``tenant/customer_ref``: every event of a customer lands on one
partition, owned by one worker, whatever its invoice) and keeps table ``risk-customers``
(key -> :class:`paywatch.risk.entry.RiskEntry`, msgpack, changelogged). Each event is folded
into the customer's features (``risk.features.evolve``, pure), scored as of the record's
Kafka timestamp (``risk.model.score``: a replay reproduces the score) and, when the score
moved enough (``risk.model.changed``), sent to ``risk.scores`` as a ``RiskScore`` with its
reasons; a customer entering or leaving the high bands also opens or resolves a
``HIGH_RISK_CUSTOMER`` alert (``risk.high_risk``). In batches like the other stages
(``batches.Stage``): outputs acked once, then the table written, then the offsets committed;
a record that cannot be read or scored is dead-lettered to ``payments.events.dlq`` and the
agent goes on.

The same fold keeps each customer's subscription renewals (``risk.renewals``): a customer
with a renewal the card will not reach gets a watch in table ``risk-renewals``, and the
``CARD_EXPIRING`` tick the watch loop sends back through ``risk.customers`` is folded here
into the warning on ``payments.events`` and the tenant's opt-in pre-dunning command
(``streams.card_expiry``). A tick is not customer activity: it is never scored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paywatch.errors import PayloadError
from paywatch.recovery.clock import SagaClock
from paywatch.risk.entry import MAX_ENTRY, RiskEntry, decode_entry, encode_entry
from paywatch.risk.features import CustomerFeatures, evolve
from paywatch.risk.high_risk import high_risk_alert
from paywatch.risk.model import Reason, RiskModel, Score, changed, score
from paywatch.risk.renewals import Watch, at_risk, encode_watch, is_warning, watch
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import PaymentEvent, RiskBand, RiskContribution, RiskScore
from paywatch.schemas.topics import customer_key, invoice_key, tenant_key
from paywatch.streams.batches import LastWrites, Output, Record, Stage, acting_as, encode
from paywatch.streams.card_expiry import RenewalWatch, notice
from paywatch.streams.saga import DefaultPolicies, PolicySource

BATCH_MAX = 500
BATCH_WITHIN_S = 0.05
HIGH = RiskBand.HIGH


@dataclass
class RiskRuntime:
    """What the risk agent needs inside one worker."""

    codec: Codec
    clock: SagaClock
    model: RiskModel
    entries: Any  # Faust table: tenant/customer_ref -> RiskEntry bytes
    scores: Any  # risk.scores topic
    alerts: Any  # alerts topic (customers entering and leaving the high bands)
    renewals: Any = None  # Faust table risk-renewals: tenant/customer_ref -> Watch bytes
    events: Any = None  # payments.events topic (CARD_EXPIRING warnings)
    commands: Any = None  # recovery.commands topic (pre-dunning notices)
    policies: PolicySource = field(default_factory=DefaultPolicies)
    policies_ready: Callable[[], Awaitable[None]] | None = None
    watch: RenewalWatch | None = None


def risk_score(tenant: str, customer_ref: str, new: Score) -> RiskScore:
    """The topic record of a score: reasons in words and as contributions."""
    return RiskScore(
        tenant=tenant,
        customer_ref=customer_ref,
        score=new.value,
        band=new.band,
        reasons=[_in_words(r) for r in new.reasons],
        model_version=new.model_version,
        as_of=new.as_of,
        contributions=[
            RiskContribution(feature=r.feature, contribution=r.contribution, value=r.value)
            for r in new.reasons
        ],
    )


def _in_words(reason: Reason) -> str:
    return f"{reason.feature} = {reason.value:g} (+{reason.contribution:.2f} log-odds)"


@dataclass
class RiskStage:
    """The risk agent's batch step: fold, score, emit the scores that moved, then write."""

    stage: Stage
    runtime: RiskRuntime

    async def run(self, batch: Sequence[Any]) -> None:
        """Fold every record of the batch in offset order, then deliver them together."""
        if self.runtime.policies_ready is not None:
            await self.runtime.policies_ready()  # a notice follows the tenant's stored policy
        entries: dict[bytes, RiskEntry] = {}
        writes = LastWrites()
        await self.stage.fold_all(
            batch, "risk", self.runtime.clock, lambda r, now: self._fold(r, entries, writes, now)
        )

    def _fold(
        self, record: Record, entries: dict[bytes, RiskEntry], writes: LastWrites, now: datetime
    ) -> None:
        runtime = self.runtime
        msg = record.message
        try:
            event = runtime.codec.decode(msg.value, PaymentEvent, topic=msg.topic)
            key = bytes(msg.key or b"")
            if event.customer_ref is None or key != _key(event.tenant, event.customer_ref):
                raise PayloadError("a risk.customers record not keyed by its tenant/customer_ref")
            entry = entries.get(key) or self._read(record, key)
            before = entry.features if entry else None
            features = evolve(before, event)
            last = entry.last if entry else None
            since = entry.high_since if entry else None
            if is_warning(event):  # the watch loop's tick: warn once, never scored
                record.outputs = self._warning(event, before, features, now)
            elif changed(last, new := score(runtime.model, features, now)):
                scored = risk_score(event.tenant, event.customer_ref, new)
                record.outputs = [encode(self.stage.codec, runtime.scores, key, scored)]
                since, alert = high_risk_alert(
                    event.tenant, event.customer_ref, since, last, new, runtime.model.bands[HIGH]
                )
                if alert is not None:
                    tenant = tenant_key(event.tenant).encode()
                    record.outputs.append(encode(self.stage.codec, runtime.alerts, tenant, alert))
                last = new
            pending = watch(
                event.tenant, event.customer_ref, msg.partition, features.subs, features.card, now
            )
            updated = RiskEntry(features, last, since, pending)
            value = encode_entry(updated)
            if len(value) > MAX_ENTRY:  # bounded by construction; checked, never assumed
                raise PayloadError(f"risk entry of {len(value)} bytes exceeds {MAX_ENTRY}")
        except Exception as exc:  # any failure of one record is that record's dead letter
            record.outputs = []
            record.error = exc
            return
        entries[key] = updated
        old = entry.watch if entry else None
        writes.set(key, record, lambda: self._write(key, value, old, pending))

    def _warning(
        self,
        tick: PaymentEvent,
        before: CustomerFeatures | None,
        after: CustomerFeatures,
        now: datetime,
    ) -> list[Output]:
        """The warning and its notice, when the tick's renewal is still at risk, unwarned and
        ahead; nothing for a duplicate or stale tick."""
        runtime, codec = self.runtime, self.stage.codec
        if tick.renews_at is None or tick.subscription_ref is None:
            raise PayloadError("a CARD_EXPIRING tick without its renewal")
        if before is None or before == after:  # unknown customer, or already warned
            return []
        wanted = (tick.subscription_ref, tick.renews_at)
        if wanted not in {
            (e.subscription_ref, e.renews_at) for e in at_risk(before.subs, before.card, now)
        }:
            return []  # the card was updated, or the renewal moved or passed
        key = invoice_key(tick.tenant, tick.invoice_ref).encode()
        outputs = [encode(codec, runtime.events, key, tick)]
        command = notice(tick, runtime.policies.get(tick.tenant))
        if command is not None:
            outputs.append(encode(codec, runtime.commands, key, command))
        return outputs

    def _write(self, key: bytes, value: bytes, old: Watch | None, new: Watch | None) -> None:
        """The entry, the customer's watch when it changed, then the watch index."""
        runtime = self.runtime
        runtime.entries[key] = value
        if runtime.renewals is not None and old != new:
            if new is None:
                runtime.renewals.pop(key, None)
            else:
                runtime.renewals[key] = encode_watch(new)
        if runtime.watch is not None:
            runtime.watch.put(key.decode(), new)

    def _read(self, record: Record, key: bytes) -> RiskEntry | None:
        with acting_as(record.event):  # rocksdb: read the record's partition
            stored = self.runtime.entries.get(key)
        return None if stored is None else decode_entry(stored)


def _key(tenant: str, customer_ref: str) -> bytes:
    return customer_key(tenant, customer_ref).encode()


def install(app: Any, runtime: RiskRuntime, source: Any, stage: Stage) -> None:
    """Register the risk agent on ``source`` (risk.customers)."""
    step = RiskStage(stage, runtime)

    @app.agent(source, name="risk")  # type: ignore[untyped-decorator]
    async def risk(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await step.run(batch)
