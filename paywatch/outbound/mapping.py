"""Which records make which outbound events, and what each event's ``data`` holds (pure).

One record makes at most one event, and the event's id is derived from the record's own
stable identity (``events.event_id``), so a redelivery, a restart or a replay of the record
never makes a second event:

* ``recovery.transitions`` (SagaTransition): *entering* recovered, awaiting_customer,
  exhausted or canceled -> ``invoice.<state>``; id ``transition:<tenant>/<invoice>/<cause
  event id>/<from>/<to>`` (a transition has no id of its own, and the saga decides a cause
  once: its replay re-sends the same transition). A self-transition (a decision that kept
  the state) is no news: nothing.
* ``recovery.commands`` (RecoveryCommand): RETRY_PAYMENT -> ``recovery.retry_due`` (with
  ``schedule_only``, the tenant charges it, and the invoice's and the card's budget);
  NOTIFY_CUSTOMER and REQUEST_PAYMENT_METHOD_UPDATE -> ``recovery.notification_due`` (both
  are a message the customer should get); ESCALATE -> ``recovery.escalated``; id
  ``command:<command id>``. CANCEL and WRITE_OFF: nothing (the transitions say it).
* ``alerts`` (Alert): an incident's first OPEN record -> ``alert.opened``, its RESOLVED record
  -> ``alert.resolved``; id ``alert:<alert id>/<status>``. OPEN updates (severity or count
  moved) are nothing, and would dedupe to the opening's id anyway.

``data`` is bounded: refs, amounts, states, rule, times, short texts cut to the model limits;
never a provider payload or card data. Commands carry who and how much; transitions do not,
so the producer passes ``InvoiceFacts`` read from the ``invoices`` read model to fill the
gaps (the record's own fields always win). README "Outbound webhooks" documents each body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from paywatch.outbound.events import EventType, OutboundEvent, event_id
from paywatch.schemas.models import (
    MAX_REF,
    MAX_TEXT,
    Alert,
    AlertStatus,
    CommandType,
    RecoveryCommand,
    RuleRef,
    SagaState,
    SagaTransition,
)

Source = SagaTransition | RecoveryCommand | Alert

ENTERED: dict[SagaState, EventType] = {
    SagaState.recovered: "invoice.recovered",
    SagaState.awaiting_customer: "invoice.awaiting_customer",
    SagaState.exhausted: "invoice.exhausted",
    SagaState.canceled: "invoice.canceled",
}
COMMANDED: dict[CommandType, EventType] = {
    CommandType.RETRY_PAYMENT: "recovery.retry_due",
    CommandType.NOTIFY_CUSTOMER: "recovery.notification_due",
    CommandType.REQUEST_PAYMENT_METHOD_UPDATE: "recovery.notification_due",
    CommandType.ESCALATE: "recovery.escalated",
}


@dataclass(frozen=True)
class InvoiceFacts:
    """What the ``invoices`` read model knows of an invoice when the event is made."""

    status: str | None = None
    provider: str | None = None
    customer_ref: str | None = None
    amount_minor: int | None = None
    currency: str | None = None


NO_FACTS = InvoiceFacts()


def to_event(record: Source, facts: InvoiceFacts = NO_FACTS) -> OutboundEvent | None:
    """The event `record` makes for the tenant's endpoints, or None if it makes none."""
    if isinstance(record, SagaTransition):
        return _transition(record, facts)
    if isinstance(record, RecoveryCommand):
        return _command(record, facts)
    return _alert(record)


def timeline_path(invoice_ref: str) -> str:
    """The query API path of an invoice's timeline (the ref percent-encoded whole)."""
    return f"/v1/invoices/{quote(invoice_ref, safe='')}/timeline"


def _transition(t: SagaTransition, facts: InvoiceFacts) -> OutboundEvent | None:
    kind = ENTERED.get(t.to_state)
    if kind is None or t.from_state is t.to_state:
        return None
    previous = t.from_state.value if t.from_state else None
    source = f"transition:{t.tenant}/{t.invoice_ref}/{t.cause_event_id}/{previous}/{t.to_state}"
    nxt = None
    if t.next_action is not None:
        nxt = {"type": t.next_action.value, "due_at": _time(t.next_action_at)}
    data = {
        **_invoice(t.invoice_ref, facts, state=t.to_state.value, rule=t.rule),
        "previous_state": previous,
        "reason": t.reason,
        "attempts": {"used": t.attempts_used, "allowed": t.attempts_allowed},
        "next_action": nxt,
        "at": _time(t.at),
    }
    return OutboundEvent(event_id(source), kind, t.tenant, t.at, data)


def _command(c: RecoveryCommand, facts: InvoiceFacts) -> OutboundEvent | None:
    kind = COMMANDED.get(c.type)
    if kind is None:
        return None
    merged = InvoiceFacts(
        status=facts.status,
        provider=c.provider or facts.provider,
        customer_ref=c.customer_ref or facts.customer_ref,
        amount_minor=c.amount_minor if c.amount_minor is not None else facts.amount_minor,
        currency=c.currency or facts.currency,
    )
    data = {
        **_invoice(c.invoice_ref, merged, state=merged.status, rule=c.rule),
        "command_id": c.command_id,
        "command": c.type.value,
        "due_at": _time(c.due_at),
    }
    if kind == "recovery.retry_due":
        data.update(
            attempt=c.attempt,
            schedule_only=c.schedule_only,
            attempts={"used": c.attempts_used, "allowed": c.attempts_allowed},
            card={"retries_left": c.card_retries_left, "limit": c.card_limit},
            reason=c.reason,
            decline_category=_category(c),
        )
    elif kind == "recovery.escalated":
        data.update(
            reason=c.reason,
            decline_category=_category(c),
            channel=c.channel,
            template=c.template,
            first_failed_at=_time(c.first_failed_at),
        )
    else:  # no reason: it can name a fraud rule, which must never reach the customer
        data.update(channel=c.channel, template=c.template)
    return OutboundEvent(event_id(f"command:{c.command_id}"), kind, c.tenant, _made(c), data)


def _alert(a: Alert) -> OutboundEvent | None:
    resolved = a.status is AlertStatus.RESOLVED
    if not resolved and not _first_open(a):
        return None
    kind: EventType = "alert.resolved" if resolved else "alert.opened"
    alert_id = _cut(a.alert_id) or _cut(f"{a.tenant}/{a.kind}/{_time(a.window.start)}")
    at = (a.resolved_at if resolved else a.opened_at) or a.window.end
    data = {
        "alert_id": alert_id,
        "kind": _cut(a.kind),
        "severity": a.severity.value,
        "status": a.status.value,
        "message": _cut(a.message, MAX_TEXT),
        "provider": _cut(a.provider),
        "decline_code": _cut(a.decline_code),
        "customer_ref": _cut(a.customer_ref),
        "observed": _finite(a.observed),
        "baseline": _finite(a.baseline),
        "window": {"start": _time(a.window.start), "end": _time(a.window.end)},
        "opened_at": _time(a.opened_at),
        "resolved_at": _time(a.resolved_at),
    }
    return OutboundEvent(event_id(f"alert:{alert_id}/{a.status.value}"), kind, a.tenant, at, data)


def _first_open(a: Alert) -> bool:
    """An incident's first record ends its window when it opened; updates end later."""
    return a.opened_at is None or a.window.end <= a.opened_at


def _invoice(ref: str, facts: InvoiceFacts, *, state: str | None, rule: RuleRef) -> dict[str, Any]:
    return {
        "invoice_ref": ref,
        "customer_ref": _cut(facts.customer_ref),
        "provider": _cut(facts.provider),
        "amount_minor": facts.amount_minor,
        "currency": _cut(facts.currency),
        "state": state,
        "rule": {"id": rule.id, "edition": rule.edition, "source": rule.source},
        "timeline": timeline_path(ref),
    }


def _made(c: RecoveryCommand) -> datetime:
    """When the saga decided it (the executor's outcome is another story)."""
    return c.issued_at or c.due_at


def _category(c: RecoveryCommand) -> str | None:
    return c.decline_category.value if c.decline_category else None


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity (a receiver's strict parser would refuse the body)."""
    return value if math.isfinite(value) else None


def _time(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at else None


def _cut(text: str | None, limit: int = MAX_REF) -> str | None:
    """Alert fields and read-model values are unbounded ``str``: keep a body small."""
    if text is None:
        return None
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"
