"""The card-ledger agent: one writer per card grants or refuses every paywatch retry.

Agent ``card-ledger`` reads ``recovery.cards`` (key = card key, so every record of a card
lands on one partition, owned by one worker) and keeps table ``recovery-card-ledger``
(card key -> the card's attempts of the last ``CARD_HISTORY_DAYS``, changelogged). Sagas
send it the attempts they see and, for every retry they want, a permit request
(:mod:`paywatch.recovery.card_messages`); ``permits.grant`` checks the request against
every attempt on the card — all invoices, partitions, providers and worker processes — and
the agent forwards a granted RETRY_PAYMENT to ``recovery.commands`` or answers a refusal
with ``PermitDenied`` on ``recovery.timers`` (the saga's partition). In batches
(``CardLedgerStage``), committing its own offsets like the other stages. At-least-once: the
outputs are acked before the table moves; a replayed request that was granted is not sent
again (the ledger records a grant only after its command's ack); a record that cannot be
read or decided is dead-lettered to ``payments.events.dlq`` and the agent goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from paywatch.errors import PayloadError
from paywatch.recovery.card_messages import CardMessage, denial, read_card_message
from paywatch.recovery.clock import SagaClock
from paywatch.recovery.ledger import CardAttempt, CardLedger
from paywatch.recovery.permits import grant
from paywatch.recovery.shell import CARD_HISTORY_DAYS
from paywatch.recovery.state import PermitDenied
from paywatch.schemas.codec import Codec
from paywatch.schemas.topics import invoice_key
from paywatch.streams.batches import (
    MAX_RECORD_BYTES,
    Output,
    Record,
    Stage,
    acting_as,
    bounded,
    encode,
)
from paywatch.streams.saga import BATCH_MAX, BATCH_WITHIN_S, PolicySource

log = logging.getLogger(__name__)


def ledger_of(card: str, value: list[dict[str, Any]] | None) -> CardLedger:
    """The table value of a card as a CardLedger."""
    entries = tuple(CardAttempt.model_validate(e) for e in value or [])
    return CardLedger(card=card, entries=entries)


def table_value(ledger: CardLedger, now: datetime) -> list[dict[str, Any]]:
    """A ledger as stored: its attempts of the last CARD_HISTORY_DAYS, as JSON."""
    horizon = now - timedelta(days=CARD_HISTORY_DAYS)
    return [e.model_dump(mode="json") for e in ledger.entries if e.at >= horizon]


SURELY_FITS = 700
"""Attempts a ledger value may hold without measuring it: a bounded attempt encodes in under
1.3 kB (ids, card and invoice refs at most 255 characters each), so 700 fit in a record."""


@dataclass
class CardLedgerRuntime:
    """What the card-ledger agent needs inside one worker."""

    codec: Codec
    clock: SagaClock
    policies: PolicySource
    policies_ready: Callable[[], Awaitable[None]]
    """Starts the policy source once and waits until it knows every stored policy."""
    ledgers: Any  # Faust table: card key -> [CardAttempt as JSON]
    commands: Any  # recovery.commands topic
    timers: Any  # recovery.timers topic (refusals go back to the saga's partition)


@dataclass
class CardLedgerStage:
    """The card-ledger agent's batch step.

    Records are folded in offset order into each card's ledger (a card's later records in
    the batch see its earlier grants); granted commands and refusals are sent, the acks
    awaited once (``batches.Stage.deliver``), and only then the ledgers written and the
    offsets finished. A request whose output the broker refuses as a record (dead-lettered)
    may leave its grant in the ledger a later record of the same card writes: one retry
    fewer for that card, never one more.
    """

    stage: Stage
    runtime: CardLedgerRuntime

    async def run(self, batch: Sequence[Any]) -> None:
        """Fold every record of the batch, then deliver them together."""
        await self.runtime.policies_ready()
        ledgers: dict[str, CardLedger] = {}
        # As of the record (batches.record_time): a replayed request gets the same answer.
        await self.stage.fold_all(
            batch, "card-ledger", self.runtime.clock, lambda r, now: self._fold(r, ledgers, now)
        )

    def _fold(self, record: Record, ledgers: dict[str, CardLedger], now: datetime) -> None:
        runtime = self.runtime
        try:
            message = read_card_message(record.message.value)
            card = message.card
            ledger = ledgers.get(card)
            if ledger is None:
                with acting_as(record.event):  # rocksdb: read the record's partition
                    ledger = ledger_of(card, runtime.ledgers.get(card))
            updated, record.outputs = self._apply(message, ledger, now)
            value = table_value(updated, now) if updated is not ledger else None
            if value is not None and len(value) > SURELY_FITS:
                size = len(json.dumps(value))
                if size > MAX_RECORD_BYTES:
                    raise PayloadError(f"card ledger of {size} bytes exceeds a Kafka record")
        except Exception as exc:  # any failure of one record is that record's dead letter
            record.outputs = []
            record.error = exc
            return
        if value is not None:
            ledgers[card] = updated
            record.after = lambda: runtime.ledgers.__setitem__(card, value)

    def _apply(
        self, record: CardMessage, ledger: CardLedger, now: datetime
    ) -> tuple[CardLedger, list[Output]]:
        if record.command is None or record.saga is None:
            return ledger.add(record.entries), []
        runtime = self.runtime
        saga, command = record.saga, record.command
        permit = grant(ledger, saga, command, now, runtime.policies.get(saga.tenant))
        key = invoice_key(saga.tenant, saga.invoice_ref).encode()
        if permit.replayed:
            return ledger, []
        if permit.granted:
            sent = permit.command or command  # with the card's budget left
            return permit.ledger, [encode(self.stage.codec, runtime.commands, key, sent)]
        assert permit.rule is not None  # a refusal always names its rule
        refused = PermitDenied(
            tenant=saga.tenant,
            invoice_ref=saga.invoice_ref,
            command_id=command.command_id,
            until=permit.until,
            rule=permit.rule,
            reason=permit.reason,
        )
        log.debug("card %s: retry %s refused (%s)", record.card, command.command_id, permit.reason)
        return ledger, [bounded(runtime.timers, key, denial(refused), "PermitDenied")]


def install(app: Any, runtime: CardLedgerRuntime, source: Any, stage: Stage) -> None:
    """Register the card-ledger agent on ``source`` (recovery.cards)."""
    step = CardLedgerStage(stage, runtime)

    @app.agent(source, name="card-ledger")  # type: ignore[untyped-decorator]
    async def card_ledger(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await step.run(batch)
