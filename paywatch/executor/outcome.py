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

from pydantic import ValidationError

from paywatch.charging.base import ChargeResult
from paywatch.executor.simulator import Verdict
from paywatch.providers.base import event_id
from paywatch.schemas.models import (
    CommandType,
    Decline,
    DeclineCategory,
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
LIVE_DECLINE_CODE = "declined"
"""Code of a live decline whose provider gave none."""


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


def live_outcome_event(
    command: RecoveryCommand, result: ChargeResult, *, topic: str, partition: int, offset: int
) -> PaymentEvent:
    """The outcome of a live retry: what the provider answered, under the same event id as a
    simulated one (a resumed try that the provider answers again appends the same event)."""
    simulated = Verdict(
        succeeded=result.succeeded,
        category=command.decline_category or DeclineCategory.UNKNOWN,
        day=0,
        probability=1.0 if result.succeeded else 0.0,
        draw=0.0,
    )
    event = outcome_event(command, simulated, topic=topic, partition=partition, offset=offset)
    update: dict[str, object] = {"payment_ref": result.provider_ref or command.payment_ref}
    if not result.succeeded:
        update["decline"] = result.decline or _live_decline(result, simulated.category)
    return event.model_copy(update=update)


def _live_decline(result: ChargeResult, category: DeclineCategory) -> Decline:
    """The provider's code and message as a Decline; a field the model refuses (too long, a
    NUL) is dropped rather than losing the outcome of a real charge."""
    try:
        return Decline(
            code=result.decline_code or LIVE_DECLINE_CODE,
            category=category,
            message=result.decline_message,
        )
    except ValidationError:
        return Decline(code=LIVE_DECLINE_CODE, category=category)


def _decline(verdict: Verdict) -> Decline:
    # The retry fails for the reason the payment failed before: same category.
    return Decline(code=DECLINE_CODE, category=verdict.category, message=DECLINE_MESSAGE)
