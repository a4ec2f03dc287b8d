"""The canonical event a sandbox retry appends to payments.events. Pure.

Everything in the event is a function of the command, the simulator's verdict and the
command's Kafka coordinates, so executing a command twice (a crash after the append,
before the offset commit) appends the very same event, and downstream dedupes it by
its deterministic id:

* ``event_id`` is uuid5 of (tenant, ``paywatch.retry``, command id);
* ``occurred_at`` is the command's ``due_at``, not the wall clock of the execution
  (the executor never acts before it; when it runs late, ``executed_commands`` keeps
  the real time).
"""

from __future__ import annotations

from paywatch.executor.simulator import Verdict
from paywatch.providers.base import event_id
from paywatch.schemas.models import (
    CommandType,
    Decline,
    EventType,
    PaymentEvent,
    RawRef,
    RecoveryCommand,
)

RETRY_SOURCE = "paywatch.retry"
"""source_type of retry outcomes; also the id namespace (never a provider's name)."""
SANDBOX_PROVIDER = "paywatch"
"""provider of an outcome when the command does not name one."""
DECLINE_CODE = "sandbox_declined"
DECLINE_MESSAGE = "declined by the paywatch sandbox simulator"


def outcome_event_id(command: RecoveryCommand) -> str:
    """Deterministic id of the outcome of a retry command."""
    return event_id(command.tenant, RETRY_SOURCE, command.command_id)


def outcome_event(
    command: RecoveryCommand, verdict: Verdict, *, topic: str, partition: int, offset: int
) -> PaymentEvent:
    """PAYMENT_SUCCEEDED or PAYMENT_FAILED for a RETRY_PAYMENT read at topic[partition]@offset."""
    if command.type is not CommandType.RETRY_PAYMENT:
        raise ValueError(f"only RETRY_PAYMENT commands have a payment outcome, not {command.type}")
    return PaymentEvent(
        event_id=outcome_event_id(command),
        type=EventType.PAYMENT_SUCCEEDED if verdict.succeeded else EventType.PAYMENT_FAILED,
        tenant=command.tenant,
        provider=command.provider or SANDBOX_PROVIDER,
        source_type=RETRY_SOURCE,
        occurred_at=command.due_at,
        customer_ref=command.customer_ref,
        subscription_ref=command.subscription_ref,
        invoice_ref=command.invoice_ref,
        payment_ref=command.payment_ref,
        amount_minor=command.amount_minor,
        currency=command.currency,
        decline=None if verdict.succeeded else _decline(verdict),
        attempt=command.attempt,
        paywatch_retry=True,
        raw=RawRef(
            topic=topic, partition=partition, offset=offset, provider_event_id=command.command_id
        ),
    )


def _decline(verdict: Verdict) -> Decline:
    # The retry fails for the reason the payment failed before: same category.
    return Decline(code=DECLINE_CODE, category=verdict.category, message=DECLINE_MESSAGE)
