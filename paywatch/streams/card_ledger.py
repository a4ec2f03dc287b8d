"""The card-ledger agent: one writer per card grants or refuses every paywatch retry.

Agent ``card-ledger`` reads ``recovery.cards`` (key = card key, so every record of a card
lands on one partition, owned by one worker) and keeps table ``recovery-card-ledger``
(card key -> the card's attempts of the last ``CARD_HISTORY_DAYS``, changelogged). Sagas
send it the attempts they see and, for every retry they want, a permit request
(:mod:`paywatch.recovery.card_messages`); ``permits.grant`` checks the request against
every attempt on the card — all invoices, partitions, providers and worker processes — and
the agent forwards a granted RETRY_PAYMENT to ``recovery.commands`` or answers a refusal
with ``PermitDenied`` on ``recovery.timers`` (the saga's partition). At-least-once: the
output is acked before the table moves; a replayed request that was granted is not sent
again (the ledger records a grant only after its command's ack).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from paywatch.errors import PaywatchError
from paywatch.recovery.card_messages import CardMessage, denial, read_card_message
from paywatch.recovery.clock import SagaClock
from paywatch.recovery.ledger import CardAttempt, CardLedger
from paywatch.recovery.permits import grant
from paywatch.recovery.shell import CARD_HISTORY_DAYS
from paywatch.recovery.state import PermitDenied
from paywatch.schemas.codec import Codec
from paywatch.schemas.topics import invoice_key
from paywatch.streams.saga import PolicySource
from paywatch.streams.sends import send_all

log = logging.getLogger(__name__)

DeadLetter = Callable[[Any, Exception, str], Awaitable[None]]


def ledger_of(card: str, value: list[dict[str, Any]] | None) -> CardLedger:
    """The table value of a card as a CardLedger."""
    entries = tuple(CardAttempt.model_validate(e) for e in value or [])
    return CardLedger(card=card, entries=entries)


def table_value(ledger: CardLedger, now: datetime) -> list[dict[str, Any]]:
    """A ledger as stored: its attempts of the last CARD_HISTORY_DAYS, as JSON."""
    horizon = now - timedelta(days=CARD_HISTORY_DAYS)
    return [e.model_dump(mode="json") for e in ledger.entries if e.at >= horizon]


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
    dead_letter: DeadLetter

    async def handle(self, msg: Any) -> None:
        """Fold one record into its card's ledger (see the module docstring)."""
        try:
            record = read_card_message(msg.value)
        except (ValueError, ValidationError) as exc:
            await self.dead_letter(msg, exc, "card-ledger")
            return
        now = self.clock.to_saga(datetime.now(UTC))
        ledger = ledger_of(record.card, self.ledgers.get(record.card))
        try:
            updated = await self._apply(record, ledger, now)
        except (PaywatchError, ValidationError, ValueError) as exc:  # a bug, not bad luck
            log.exception("card ledger %s: decision failed", record.card)
            await self.dead_letter(msg, exc, "card-ledger")
            return
        if updated is not ledger:
            self.ledgers[record.card] = table_value(updated, now)

    async def _apply(self, record: CardMessage, ledger: CardLedger, now: datetime) -> CardLedger:
        if record.command is None or record.saga is None:
            return ledger.add(record.entries)
        saga, command = record.saga, record.command
        await self.policies_ready()
        permit = grant(ledger, saga, command, now, self.policies.get(saga.tenant))
        key = invoice_key(saga.tenant, saga.invoice_ref).encode()
        if permit.replayed:
            return ledger
        if permit.granted:
            await send_all(self.codec, [(self.commands, key, command)])
            return permit.ledger
        assert permit.rule is not None  # a refusal always names its rule
        refused = PermitDenied(
            tenant=saga.tenant,
            invoice_ref=saga.invoice_ref,
            command_id=command.command_id,
            until=permit.until,
            rule=permit.rule,
            reason=permit.reason,
        )
        log.info("card %s: retry %s refused (%s)", record.card, command.command_id, permit.reason)
        fut = await self.timers.send(key=key, value=denial(refused))
        await fut
        return ledger


def install(app: Any, runtime: CardLedgerRuntime, source: Any) -> None:
    """Register the card-ledger agent on ``source`` (recovery.cards)."""

    @app.agent(source, name="card-ledger")  # type: ignore[untyped-decorator]
    async def card_ledger(stream: Any) -> None:
        async for event in stream.events():
            await runtime.handle(event.message)
