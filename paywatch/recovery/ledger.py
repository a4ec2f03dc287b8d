"""Card usage: the attempts that count against the network limits, across invoices and providers.

The saga is per invoice, but Visa and Mastercard count per card and merchant. So card
usage is an explicit input: the shell keeps a card table (one row per ``CardAttempt``),
puts a ``CardLedger`` snapshot of the saga's card into ``Saga.ledger`` before calling
``decide``, and writes ``Decision.ledger_entries`` back (idempotent by ``CardAttempt.id``).

What is one attempt (documented choices, all erring on counting more):

* a provider failure is one attempt, unless the saga already holds an attempt of the same
  provider within ``COALESCE`` of it with a compatible attempt number: Stripe reports one
  authorization as up to three webhooks (``charge.failed``, ``payment_intent.payment_failed``,
  ``invoice.payment_failed``) created within a second or two. A numbered sibling of a counted
  attempt leaves an uncounted entry that records the number;
* a provider's own counter (Stripe ``attempt_count``, PayPal ``failed_payments_count``,
  Braintree ``failure_count``, Checkout ``attempts_made`` -> ``PaymentEvent.attempt``) proves
  attempts 1..n-1 happened: each number no numbered entry covers yet is added, stamped at the
  event's time (later than it happened, so it stays in every window longer);
* a paywatch retry counts when it is emitted (its outcome may never be reported), so its
  outcome event (``paywatch_retry``) adds nothing;
* every attempt counts as a potential decline for Mastercard's decline counter.

A stop verdict (Visa category 1, Mastercard 03/21, a HARD or FRAUD decline) also writes an
uncounted marker, so other invoices on the same card do not retry it within 30 days.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from paywatch.schemas.models import Frozen, PaymentEvent, PaymentMethod, RuleRef

COALESCE = timedelta(seconds=60)
"""Failures of one provider and invoice this close together are one authorization."""


class AttemptSource(StrEnum):
    """Who made an attempt."""

    PROVIDER = "provider"
    PAYWATCH = "paywatch"


class CardAttempt(Frozen):
    """One attempt on a card (or an uncounted stop marker), as the card table stores it."""

    id: str  # event id, command id, or "<event id>#gap<k>" / "<event id>#stop"
    card: str
    invoice_ref: str
    provider: str
    source: AttemptSource
    at: datetime
    amount_minor: int | None = None
    currency: str | None = None
    attempt: int | None = None  # the provider's own attempt number, when it said
    counted: bool = True
    stop: RuleRef | None = None  # no reattempt on this card within 30 days, by this rule


class CardLedger(Frozen):
    """Recent attempts on one card (all invoices, all providers), filled by the shell."""

    card: str
    entries: tuple[CardAttempt, ...] = ()

    def add(self, new: Iterable[CardAttempt]) -> CardLedger:
        """The ledger plus the entries of `new` it does not hold yet (by id, same card)."""
        known = {e.id for e in self.entries}
        extra: list[CardAttempt] = []
        for entry in new:
            if entry.card == self.card and entry.id not in known:
                known.add(entry.id)
                extra.append(entry)
        return self.model_copy(update={"entries": (*self.entries, *extra)}) if extra else self


def card_key(tenant: str, method: PaymentMethod | None) -> str | None:
    """A card's identity at one merchant: fingerprint, else brand+last4+expiry, else None."""
    if method is None:
        return None
    if method.fingerprint:
        return f"{tenant}/fp/{method.fingerprint}"
    if method.brand and method.last4 and method.exp_month and method.exp_year:
        exp = f"{method.exp_year:04d}-{method.exp_month:02d}"
        return f"{tenant}/card/{method.brand.lower()}/{method.last4}/{exp}"
    return None


def standin_card(tenant: str, invoice_ref: str) -> str:
    """The card key of an invoice whose card nobody named: its own attempts still count."""
    return f"{tenant}/invoice/{invoice_ref}"


def _compatible(a: CardAttempt, event: PaymentEvent) -> bool:
    close = abs(a.at - event.occurred_at) <= COALESCE
    return close and (a.attempt is None or event.attempt is None or a.attempt == event.attempt)


def _entry(event: PaymentEvent, card: str, entry_id: str, attempt: int | None) -> CardAttempt:
    return CardAttempt(
        id=entry_id,
        card=card,
        invoice_ref=event.invoice_ref,
        provider=event.provider,
        source=AttemptSource.PROVIDER,
        at=event.occurred_at,
        amount_minor=event.amount_minor,
        currency=event.currency,
        attempt=attempt,
    )


def observed_attempts(
    own: Sequence[CardAttempt], event: PaymentEvent, card: str
) -> tuple[CardAttempt, ...]:
    """The attempts a provider failure adds to a saga's `own` attempts (maybe none)."""
    if event.paywatch_retry:
        return ()
    mine = [a for a in own if a.source is AttemptSource.PROVIDER and a.provider == event.provider]
    new: tuple[CardAttempt, ...] = (_entry(event, card, event.event_id, event.attempt),)
    if any(_compatible(a, event) for a in mine if a.counted):
        # Already counted; an uncounted entry still records its number, if it has one.
        new = tuple(a.model_copy(update={"counted": False}) for a in new if a.attempt)
    # Only a numbered entry proves that number was seen: an unnumbered one may be any attempt.
    numbered = {a.attempt for a in (*mine, *new) if a.attempt is not None}
    missing = [n for n in range(1, event.attempt or 0) if n not in numbered]
    return new + tuple(_entry(event, card, f"{event.event_id}#gap{n}", n) for n in missing)


def stop_marker(event: PaymentEvent, card: str, rule: RuleRef) -> CardAttempt:
    """An uncounted entry telling other invoices on `card` that it must not be retried."""
    marker = _entry(event, card, f"{event.event_id}#stop", event.attempt)
    return marker.model_copy(update={"counted": False, "stop": rule})
