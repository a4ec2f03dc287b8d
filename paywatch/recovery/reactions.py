"""How each PaymentEvent moves a saga (the routing table ``HANDLERS`` at the end).

* PAYMENT_FAILED opens the episode if needed, counts the attempt(s) on the card, folds the
  decline's verdict in (``rules.assess``), cancels on Mastercard 21, asks the customer once
  per need, and plans the next retry;
* SUBSCRIPTION_PAST_DUE / INVOICE_OVERDUE open an episode without a decline (dunning only:
  no card to retry, e.g. Xero/QuickBooks invoices);
* PAYMENT_METHOD_UPDATED clears the need for new credentials and plans an immediate retry;
  a different card starts with a fresh verdict and its own counters, the same card keeps
  its stop (Mastercard 03 stays a stop when the customer re-enters the same card);
* a success closes ``recovered``; a provider cancel/void closes ``canceled``;
  INVOICE_UNCOLLECTIBLE closes ``exhausted``. For an invoice without a saga these leave a
  tombstone, so a late, reordered failure cannot open a saga for a paid invoice;
* after any of them, the first event of an open episode that comes with a high-risk band
  (``high_risk``) marks the episode's customer high-risk, asks for a new payment method
  once (unless the episode asked already, or the event is the customer's update) and
  brings the escalation forward.

Out of order: only the newest failure on the saga's card sets the verdict; stops, "not
before" times and the need for new credentials are sticky whatever the order; a failure on
a card the customer has since replaced is counted against that card and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from paywatch.recovery import high_risk, plan
from paywatch.recovery.commands import command, tenant_rule
from paywatch.recovery.ledger import (
    CardAttempt,
    card_key,
    observed_attempts,
    standin_card,
    stop_marker,
)
from paywatch.recovery.rules import Action, Verdict, assess, network_of, paywatch_rule
from paywatch.recovery.run import OPENED, Run
from paywatch.recovery.state import TERMINAL, Saga
from paywatch.schemas.models import CommandType, EventType, PaymentEvent, RuleRef, SagaState

_ARCH = "ARCHITECTURE §8"
SUCCEEDED = paywatch_rule("payment_succeeded", _ARCH)
PROVIDER_CLOSED = paywatch_rule("provider_closed", _ARCH)
PAID_LATE = paywatch_rule("paid_after_exhaustion", _ARCH)
UPDATED = Verdict(action=Action.RETRY, rule=paywatch_rule("payment_method_updated", "[NW7][NW8]"))
"""A new card has not been declined yet: it may be tried, within its own counters."""


def on_event(saga: Saga | None, event: PaymentEvent, run: Run) -> Saga:
    """Route one event to its handler unless it is a duplicate, stale, or for a closed saga."""
    saga = saga or Saga(tenant=event.tenant, invoice_ref=event.invoice_ref)
    if event.event_id in saga.seen:
        return saga
    handler = HANDLERS.get(event.type)
    if handler is None:
        # CARD_EXPIRING, OTHER: nothing for the saga, open or closed. Dropped before the
        # closed-saga path: they never join ``seen``, so a redelivery after the first
        # delivery's flush closed the saga would otherwise move ``closed_at`` (``_stale``).
        return saga
    if saga.status in TERMINAL:
        if _late_payment(saga, event):
            seen = (*saga.seen, event.event_id)
            run.because(PAID_LATE, f"{event.type.value} from {event.provider} after exhaustion")
            saga = run.move(saga.model_copy(update={"seen": seen}), SagaState.recovered)
            return saga.model_copy(
                update={"closed_at": max(saga.closed_at or event.occurred_at, event.occurred_at)}
            )
        if not _new_episode(saga, event):
            return _stale(saga, event, run)
        saga = _next_episode(saga)
    if saga.floor is not None and event.occurred_at <= saga.floor:
        return _stale(saga, event, run)
    if saga.status is None and event.type not in _STARTERS:
        return saga
    last = max(saga.last_event_at or event.occurred_at, event.occurred_at)
    saga = saga.model_copy(update={"seen": (*saga.seen, event.event_id), "last_event_at": last})
    return _high_risk(handler(saga, event, run), event, run)


def _stale(saga: Saga, event: PaymentEvent, run: Run) -> Saga:
    """An event for a closed episode: its attempts still count on the card, nothing else.

    A newer event also moves ``closed_at``: a success at T7 seen after the close means a
    failure at T6 delivered later is older than the payment and must not open an episode.
    """
    if event.type is EventType.PAYMENT_FAILED:
        card = card_key(saga.tenant, event.payment_method) or saga.card
        card = card or standin_card(saga.tenant, saga.invoice_ref)
        run.entries.extend(_attempts(saga, event, card, assess(event.decline, run.policy.rulebook)))
    if saga.closed_at is not None and event.occurred_at > saga.closed_at:
        return saga.model_copy(update={"closed_at": event.occurred_at})
    return saga


def _attempts(
    saga: Saga, event: PaymentEvent, card: str, verdict: Verdict
) -> tuple[CardAttempt, ...]:
    """The card-ledger entries of one failure: its attempt(s) and a stop marker if it stops."""
    entries = observed_attempts(saga.attempts, event, card)
    if verdict.action in (Action.STOP, Action.CANCEL):
        entries += (stop_marker(event, card, verdict.rule),)
    return entries


def _late_payment(saga: Saga, event: PaymentEvent) -> bool:
    """A payment for an exhausted invoice: the money came, so the saga ends recovered.

    Exhaustion leaves the invoice open by default (``final_action``), so a customer paying
    after it is the expected late path, whatever the event's time. Canceled stays final.
    """
    return saga.status is SagaState.exhausted and event.type in _PAYMENTS


_PAYMENTS = frozenset({EventType.PAYMENT_SUCCEEDED, EventType.SUBSCRIPTION_REACTIVATED})


def _new_episode(saga: Saga, event: PaymentEvent) -> bool:
    newer = saga.closed_at is not None and event.occurred_at > saga.closed_at
    return saga.status is SagaState.recovered and event.type is EventType.PAYMENT_FAILED and newer


def _next_episode(saga: Saga) -> Saga:
    return Saga(
        tenant=saga.tenant,
        invoice_ref=saga.invoice_ref,
        episode=saga.episode + 1,
        floor=saga.closed_at,
        card=saga.card,
        card_known=saga.card_known,
        card_at=saga.card_at,
        ledger=saga.ledger,
    )


def _open(saga: Saga, event: PaymentEvent, run: Run) -> Saga:
    saga = saga.model_copy(
        update={
            "opened_at": event.occurred_at,
            "provider": event.provider,
            "customer_ref": event.customer_ref,
            "subscription_ref": event.subscription_ref,
            "payment_ref": event.payment_ref,
            "amount_minor": event.amount_minor,
            "currency": event.currency,
            "policy_revision": run.policy.revision,
            "card": saga.card or standin_card(saga.tenant, saga.invoice_ref),
            "provider_retry_at": event.provider_retry_at,
        }
    )
    run.because(OPENED, f"{event.type.value}: recovery saga opened")
    return plan.opening(run.move(saga, SagaState.failed), run.policy, event.event_id)


def _take_card(saga: Saga, event: PaymentEvent, run: Run, *, fresh: bool) -> Saga:
    """Follow an event that names the card: learn it, or switch to a newer, different one."""
    key = card_key(saga.tenant, event.payment_method)
    if key is None or key == saga.card:
        return saga
    if not saga.card_known:
        return _adopt(saga, key, event, run)
    if saga.card_at is not None and event.occurred_at < saga.card_at:
        return saga
    brand = event.payment_method.brand if event.payment_method else None
    update: dict[str, object] = {"card": key, "card_at": event.occurred_at, "stop": None}
    update |= {"not_before": None, "not_before_rule": None, "needs_update": False}
    if fresh:  # new credentials that nobody has declined yet
        update |= {
            "verdict": UPDATED,
            "verdict_at": event.occurred_at,
            "network": network_of(brand),
        }
    return saga.model_copy(update=update)


def _adopt(saga: Saga, key: str, event: PaymentEvent, run: Run) -> Saga:
    """The first time the card is named: the stand-in's attempts were made on it."""
    moved = tuple(a.model_copy(update={"card": key}) for a in saga.attempts)
    run.entries.extend(moved)
    ledger = saga.ledger.add(moved) if saga.ledger else None
    update = {"card": key, "card_known": True, "card_at": event.occurred_at}
    return saga.model_copy(update={**update, "attempts": moved, "ledger": ledger})


def _failed(saga: Saga, event: PaymentEvent, run: Run) -> Saga:
    saga = _take_card(saga, event, run, fresh=False)
    if saga.status is None:
        saga = _open(saga, event, run)
    card = card_key(saga.tenant, event.payment_method) or saga.card
    assert card is not None  # _open names a stand-in card
    verdict = assess(event.decline, run.policy.rulebook)
    run.because(verdict.rule, verdict.describe())
    saga = run.record(saga, _attempts(saga, event, card, verdict))
    if card != saga.card:
        return saga  # an older failure of a card the customer has replaced: counted only
    asked = saga.needs_update
    return _react(_learn(saga, event, verdict), event, verdict, run, asked)


def _learn(saga: Saga, event: PaymentEvent, verdict: Verdict) -> Saga:
    """Fold one failure on the saga's card into what the saga knows."""
    update: dict[str, object] = {"needs_update": saga.needs_update or verdict.needs_customer}
    if saga.verdict_at is None or event.occurred_at >= saga.verdict_at:
        update |= {"verdict": verdict, "verdict_at": event.occurred_at}
        update["decline_category"] = event.decline.category if event.decline else None
        update["payment_ref"] = event.payment_ref or saga.payment_ref
        network = network_of(event.decline.network if event.decline else None)
        update["network"] = network or saga.network
        # Only an event that reports the provider's attempt counter speaks for its retry
        # plan (Stripe invoice.payment_failed, not the charge.failed sibling).
        if not event.paywatch_retry and (event.attempt or event.provider_retry_at):
            update["provider_retry_at"] = event.provider_retry_at
    if verdict.action is Action.WAIT:
        earliest = event.occurred_at + verdict.wait
        if saga.not_before is None or earliest > saga.not_before:
            update |= {"not_before": earliest, "not_before_rule": verdict.rule}
    if verdict.action in (Action.STOP, Action.CANCEL):
        update["stop"] = saga.stop or verdict.rule
    if event.paywatch_retry:
        update["in_flight"] = False
    return saga.model_copy(update=update)


def _react(saga: Saga, event: PaymentEvent, verdict: Verdict, run: Run, asked: bool) -> Saga:
    """Act on a failure: cancel (MAC 21), ask the customer once per need, plan the retry."""
    if verdict.action is Action.CANCEL:
        cmd = command(
            saga,
            CommandType.CANCEL,
            "cancel",
            run.now,
            reason="the cardholder stopped the recurring payment",
            rule=verdict.rule,
            cause=event.event_id,
        )
        return run.close(run.emit(saga, cmd), SagaState.canceled)
    if saga.needs_update and not asked:
        saga = plan.request_update(saga, run.policy, run.now, event.event_id, verdict.rule)
    saga, rule, reason = plan.retry(saga, run.policy, run.now, event.event_id, immediate=False)
    run.because(rule, f"{verdict.describe()}; {reason}")
    return saga


def _overdue(saga: Saga, event: PaymentEvent, run: Run) -> Saga:
    if saga.status is not None:
        return saga
    return _open(_take_card(saga, event, run, fresh=False), event, run)


def _updated(saga: Saga, event: PaymentEvent, run: Run) -> Saga:
    if not saga.is_open:
        return saga
    saga = _take_card(saga, event, run, fresh=True).model_copy(update={"needs_update": False})
    saga, rule, reason = plan.retry(saga, run.policy, run.now, event.event_id, immediate=True)
    run.because(rule, f"payment method updated; {reason}")
    return saga


def _high_risk(saga: Saga, event: PaymentEvent, run: Run) -> Saga:
    """The first time an open episode's customer comes with a high-risk band: keep the band,
    ask for a new payment method now (retries stay on their schedule), re-plan the escalation."""
    option, band = run.policy.high_risk, run.risk
    if option is None or band is None or not saga.is_open:
        return saga
    if high_risk.counts(run.policy, saga.high_risk) or not high_risk.counts(run.policy, band):
        return saga  # known already (under the policy in force), or not high-risk
    saga = saga.model_copy(update={"high_risk": band})
    rule, why = tenant_rule(run.policy, high_risk.RULE), high_risk.why(band)
    fresh = event.type is not EventType.PAYMENT_METHOD_UPDATED  # it just came from the customer
    if option.request_update_first and fresh and saga.update_requests == 0:
        reason = f"{why}: a new payment method is asked for first ({rule.id})"
        saga = plan.request_update(saga, run.policy, run.now, event.event_id, rule, reason)
    saga = plan.escalation(saga, run.policy, event.event_id)
    run.because(rule, f"{why}; {run.reason}" if run.reason else why)
    return saga


def _closer(to: SagaState, rule: RuleRef) -> Callable[[Saga, PaymentEvent, Run], Saga]:
    def close(saga: Saga, event: PaymentEvent, run: Run) -> Saga:
        run.because(rule, f"{event.type.value} from {event.provider}")
        return run.close(saga, to)

    return close


HANDLERS: dict[EventType, Callable[[Saga, PaymentEvent, Run], Saga]] = {
    EventType.PAYMENT_FAILED: _failed,
    EventType.SUBSCRIPTION_PAST_DUE: _overdue,
    EventType.INVOICE_OVERDUE: _overdue,
    EventType.PAYMENT_METHOD_UPDATED: _updated,
    EventType.PAYMENT_SUCCEEDED: _closer(SagaState.recovered, SUCCEEDED),
    EventType.SUBSCRIPTION_REACTIVATED: _closer(SagaState.recovered, SUCCEEDED),
    EventType.SUBSCRIPTION_CANCELED: _closer(SagaState.canceled, PROVIDER_CLOSED),
    EventType.INVOICE_VOIDED: _closer(SagaState.canceled, PROVIDER_CLOSED),
    EventType.INVOICE_UNCOLLECTIBLE: _closer(SagaState.exhausted, PROVIDER_CLOSED),
}
"""Event type -> handler; CARD_EXPIRING and OTHER change nothing."""
_STARTERS = frozenset(HANDLERS) - {EventType.PAYMENT_METHOD_UPDATED}
"""Events that mean something for an invoice without a saga (open it, or close it first)."""
