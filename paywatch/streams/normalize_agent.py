"""The normalize agents: webhooks.raw and webhooks.fetched -> payments.events, in batches.

``normalize`` takes up to ``BATCH_MAX`` records of ``webhooks.raw`` (or what arrived within
``BATCH_WITHIN_S``), normalizes each in order (``normalize.normalize_record``, pure), drops
redeliveries of a provider event already normalized (the ``seen`` table, plus the batch's
own and the fetch agent's in-flight deliveries), hands thin webhooks to the fetch agent,
and delivers the batch (``batches.Stage.deliver``: every event sent, acks awaited once,
poison records dead-lettered alone, then the dedupe table written, then the offsets
finished for ``commits.Committer``). ``normalize-fetched`` does the same for the documents
the fetch agent logged to ``webhooks.fetched`` (replay runs only this). An event that names
its customer is also sent, as the same bytes, to ``risk.customers`` keyed by the customer:
the risk agent's repartition (its table is keyed by customer, the events by invoice); a
failure or success also sends a small signal to ``risk.tenants`` keyed by tenant (the alerts
agent counts a tenant's providers and decline codes).

Any exception of one record's decoding, normalization or encoding dead-letters that record
with the reason; a duplicate of a record that failed in the same batch is dropped with it
(the dead letter keeps the first delivery).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from paywatch.errors import UnknownProvider
from paywatch.providers.base import Provider
from paywatch.providers.registry import get_provider
from paywatch.risk.alerts import encode_signal, signal_of
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import FetchedDocument, PaymentEvent
from paywatch.schemas.topics import customer_key, tenant_key
from paywatch.streams.batches import Output, Pacer, Record, Stage, acting_as, bounded, encode
from paywatch.streams.fetch import normalize_fetched, thin
from paywatch.streams.fetch_agent import FetchAgent, FetchJob
from paywatch.streams.normalize import Normalized, event_key, normalize_record

BATCH_MAX = 500
"""Records per batch: one wait for the broker's acks per this many webhooks."""
BATCH_WITHIN_S = 0.05
"""How long a batch waits to fill: the latency a quiet stream adds, at most."""


@dataclass(frozen=True)
class EventTopics:
    """Where normalized events go: payments.events, risk.customers for the risk agent and
    risk.tenants for the alerts agent."""

    events: Any
    customers: Any
    tenants: Any

    def outputs(self, codec: Codec, events: Iterable[PaymentEvent]) -> list[Output]:
        """Each event keyed by invoice; the same bytes keyed by customer when it names one;
        a failure's or success's signal keyed by tenant."""
        found = []
        for event in events:
            output = encode(codec, self.events, event_key(event), event)
            found.append(output)
            if event.customer_ref is not None:
                key = customer_key(event.tenant, event.customer_ref).encode()
                found.append(bounded(self.customers, key, output.value, "PaymentEvent"))
            signal = signal_of(event)
            if signal is not None:
                key = tenant_key(event.tenant).encode()
                found.append(bounded(self.tenants, key, encode_signal(signal), "Signal"))
        return found


@dataclass
class NormalizeStage:
    """The normalize agent's batch step (webhooks.raw -> payments.events)."""

    stage: Stage
    providers: dict[str, Provider]
    seen: Any
    """Dedupe table: provider event key -> raw offset that first carried it."""
    events: EventTopics
    fetch: FetchAgent

    async def run(self, batch: Sequence[Any]) -> None:
        """Decide every record of the batch in order, then deliver them together."""
        firsts: dict[str, int] = {}
        records = []
        pace = Pacer()
        for event in batch:
            await pace()
            record = self.stage.start(event)
            records.append(record)
            await self._decide(record, firsts)
        await self.stage.deliver(records)

    async def _decide(self, record: Record, firsts: dict[str, int]) -> None:
        msg = record.message
        try:
            result = normalize_record(
                self.stage.codec, self.providers, msg.value, msg.topic, msg.partition, msg.offset
            )
        except Exception as exc:  # undecodable or not normalizable: this record's letter
            record.error = exc
            return
        first = self._first(record, result, firsts)
        if first is not None and first != msg.offset:
            return  # a redelivery of a provider event already normalized
        provider = self.providers.get(result.raw.provider) if result.raw else None
        thin_provider = thin(provider) if provider is not None else None
        if thin_provider is not None:
            record.handed_off = True
            await self.fetch.submit(FetchJob(record, thin_provider, result, first is None))
            return
        try:
            record.outputs = self.events.outputs(self.stage.codec, result.events)
        except Exception as exc:  # an event the topic cannot hold: this record's letter
            record.error = exc
            return
        if first is None:
            key, offset = result.dedupe_key, msg.offset
            firsts[key] = offset
            record.after = lambda: self.seen.__setitem__(key, offset)

    def _first(self, record: Record, result: Normalized, firsts: dict[str, int]) -> int | None:
        key = result.dedupe_key
        with acting_as(record.event):
            first: int | None = self.seen.get(key)
        if first is None:
            first = firsts.get(key, self.fetch.claimed.get(key))
        return first


@dataclass
class FetchedStage:
    """The normalize-fetched agent's batch step (webhooks.fetched -> payments.events)."""

    stage: Stage
    providers: dict[str, Provider]
    events: EventTopics

    async def run(self, batch: Sequence[Any]) -> None:
        """Normalize every fetched document of the batch, then deliver them together."""
        records = [self.stage.start(event) for event in batch]
        pace = Pacer()
        for record in records:
            await pace()
            self._decide(record)
        await self.stage.deliver(records)

    def _decide(self, record: Record) -> None:
        msg = record.message
        try:
            doc = self.stage.codec.decode(msg.value, FetchedDocument, topic=msg.topic)
            provider = thin(get_provider(doc.provider, self.providers))
            if provider is None:
                raise UnknownProvider(f"{doc.provider!r} is not a thin-webhook provider")
            events = normalize_fetched(provider, doc, (msg.topic, msg.partition, msg.offset))
            record.outputs = self.events.outputs(self.stage.codec, events)
        except Exception as exc:  # any failure of one document is that record's letter
            record.error = exc


def install(app: Any, source: Any, name: str, step: NormalizeStage | FetchedStage) -> None:
    """A Faust agent over ``source`` running ``step`` on each batch."""

    @app.agent(source, name=name)  # type: ignore[untyped-decorator]
    async def agent(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await step.run(batch)
