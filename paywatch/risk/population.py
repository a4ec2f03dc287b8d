"""A seeded subscriber population with known ground truth, for training and demos.

``generate(customers, months, seed, start)`` draws each customer's latent traits from one
``random.Random(seed)``, bills them every 30 days and plays out each failed renewal: retries
over the following days, then recovered (PAYMENT_SUCCEEDED) or lost (INVOICE_UNCOLLECTIBLE,
or SUBSCRIPTION_CANCELED when the customer leaves). The chance of loss is a known function of
the traits, kept per invoice in ``Population.truth``, so a trained model can be measured
against what really drove the outcomes. Rates follow reference/recovery-rules.md: a few % of
renewals fail, mostly soft insufficient-funds declines, about half of failed invoices recover
and most recoveries land 2-12 days after the decline.

Event ids are the ones the generic normalizer derives (uuid5 of tenant, "generic", webhook
id, 0; the namespace below must equal ``providers.base.EVENT_NAMESPACE``, which this pure core
may not import: a test keeps them equal), so ``webhooks`` renders bodies that normalize back
into exactly ``Population.events`` and a second run of the same population deduplicates.
Pure: no clock, no I/O; ``start`` is passed in.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import Any

from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
)

_NAMESPACE = uuid.UUID("6f1c3c1e-5a7b-4c39-9a0e-70a1e0c0ffee")  # providers.base.EVENT_NAMESPACE
PROVIDER = "generic"
CYCLE = timedelta(days=30)
RETRY_DAYS = (1, 3, 5, 7, 10, 14, 21)  # inside Visa's 20-in-30 and the usual 30-day window
LOST_AFTER = timedelta(days=30)
_PLANS = (900, 2900, 4900, 9900, 19900)
_CURRENCIES = ("USD", "USD", "EUR", "GBP")
_WIRE_TYPES = {
    EventType.PAYMENT_FAILED: "payment.failed",
    EventType.PAYMENT_SUCCEEDED: "payment.succeeded",
    EventType.PAYMENT_METHOD_UPDATED: "payment_method.updated",
    EventType.INVOICE_UNCOLLECTIBLE: "invoice.uncollectible",
    EventType.SUBSCRIPTION_CANCELED: "subscription.canceled",
}
S, H, A, F = (
    DeclineCategory.SOFT,
    DeclineCategory.HARD,
    DeclineCategory.ACTION,
    DeclineCategory.FRAUD,
)
# (weight, category, code, message, scheme response code, Mastercard advice code): the codes
# agree with the network guardrails, so the generic normalizer keeps the sender's category.
_DECLINES = (
    (0.62, S, "insufficient_funds", "Insufficient funds", "51", None),
    (0.18, S, "do_not_honor", "Do not honor", "05", None),
    (0.09, H, "invalid_account", "Invalid account number", "14", "03"),
    (0.08, A, "incorrect_cvc", "Incorrect security code", "82", "01"),
    (0.03, F, "stolen_card", "Card reported stolen", "43", None),
)
_EXPIRED = (1.0, A, "expired_card", "Expired card", "54", "01")


@dataclass(frozen=True)
class Traits:
    """A customer's latent truth: what drives failures and recoveries (never in the log)."""

    customer_ref: str
    fragility: float  # 0-1: how often the funds run short, and how hard they are to recover
    engagement: float  # 0-1: how readily the customer answers dunning and updates a card
    fraud: bool  # a stolen card: fraud declines that are almost never recovered
    network: str
    card: tuple[int, int]  # (expiry year, month)
    amount_minor: int
    currency: str
    offset: timedelta  # first renewal after ``start``


@dataclass(frozen=True)
class Truth:
    """One failed invoice: the latent chance it is lost, and whether it was."""

    invoice_ref: str
    customer_ref: str
    failed_at: datetime
    category: DeclineCategory
    p_lost: float
    lost: bool


@dataclass(frozen=True)
class Population:
    """The generated history: time-ordered events, their webhook ids, and the truth."""

    tenant: str
    seed: int
    customers: tuple[Traits, ...]
    events: tuple[PaymentEvent, ...]
    webhook_ids: tuple[str, ...]  # one per event, same order
    truth: tuple[Truth, ...]
    renewals: int


@dataclass(frozen=True)
class Webhook:
    """One event as the generic provider would receive it."""

    msg_id: str
    event: PaymentEvent
    body: bytes


def generate(
    customers: int, months: int, seed: int, start: datetime, *, tenant: str = "demo"
) -> Population:
    """A population of ``customers`` billed for ``months`` cycles from ``start``, seeded."""
    if customers < 1 or months < 1 or start.tzinfo is None:
        raise ValueError("need customers >= 1, months >= 1 and an aware start")
    rng = random.Random(seed)  # noqa: S311 (a seeded simulation, not a secret)
    tag = blake2b(f"{seed}/{customers}/{months}/{start.isoformat()}".encode(), digest_size=4)
    prefix = tag.hexdigest()
    traits = tuple(_traits(rng, f"cus_{prefix}_{i:05d}", start) for i in range(customers))
    drafts: list[dict[str, Any]] = []
    truth: list[Truth] = []
    renewals = 0
    for person in traits:
        renewals += _bill(rng, person, start, months, prefix, drafts, truth)
    drafts.sort(key=lambda d: (d["occurred_at"], d["seq"]))
    ids = tuple(f"gen_{prefix}_{n:07d}" for n in range(len(drafts)))
    events = tuple(_event(d, tenant, msg) for d, msg in zip(drafts, ids, strict=True))
    return Population(tenant, seed, traits, events, ids, tuple(truth), renewals)


def _traits(rng: random.Random, ref: str, start: datetime) -> Traits:
    months_left = rng.randint(1, 48)
    expiry = start.year * 12 + start.month - 1 + months_left
    return Traits(
        customer_ref=ref,
        fragility=rng.betavariate(2, 5),
        engagement=rng.betavariate(3, 2),
        fraud=rng.random() < 0.005,
        network=rng.choice(("visa", "visa", "mastercard")),
        card=(expiry // 12, expiry % 12 + 1),
        amount_minor=rng.choice(_PLANS),
        currency=rng.choice(_CURRENCIES),
        offset=timedelta(days=rng.uniform(0, 30)),
    )


def _expired(card: tuple[int, int], at: datetime) -> bool:
    return (at.year, at.month) > card  # a card works until the end of its expiry month


def _bill(
    rng: random.Random,
    who: Traits,
    start: datetime,
    months: int,
    prefix: str,
    out: list[dict[str, Any]],
    truth: list[Truth],
) -> int:
    """Append one customer's renewals and their outcomes; the number of renewals billed."""
    card, losses = who.card, 0
    for m in range(months):
        at = (start + who.offset + m * CYCLE).replace(microsecond=0)
        invoice = f"in_{who.customer_ref.removeprefix('cus_')}_{m:03d}"
        if _expired(card, at) and rng.random() < 0.45 + 0.45 * who.engagement:
            card = _new_card(rng, at)  # an account updater or the customer renewed it first
            _draft(out, who, card, EventType.PAYMENT_METHOD_UPDATED, at - timedelta(days=2))
        decline = _decline(rng, who, card, at)
        if decline is None:
            _draft(out, who, card, EventType.PAYMENT_SUCCEEDED, at, invoice, attempt=1)
            continue
        p_lost = _p_lost(who, decline[1], losses)
        lost = rng.random() < p_lost
        truth.append(Truth(invoice, who.customer_ref, at, decline[1], p_lost, lost))
        card, left = _episode(rng, who, card, at, invoice, decline, lost, out)
        losses += lost
        if left:
            return m + 1
    return months


def _decline(
    rng: random.Random, who: Traits, card: tuple[int, int], at: datetime
) -> tuple[Any, ...] | None:
    """The decline of this renewal, or None when it is paid."""
    if _expired(card, at):
        return _EXPIRED
    if who.fraud and rng.random() < 0.8:
        return _DECLINES[-1]
    if rng.random() >= 0.005 + 0.5 * who.fragility**3:
        return None
    return rng.choices(_DECLINES, weights=[d[0] for d in _DECLINES])[0]


def _p_lost(who: Traits, category: DeclineCategory, losses: int) -> float:
    """The latent chance a failed invoice is lost: the ground truth a model should find."""
    engaged = who.engagement - 0.6
    if category is F:
        logit = 3.5 if who.fraud else 0.5 - 2.0 * engaged
    elif category is H:
        logit = 0.8 - 2.5 * engaged + 1.5 * who.fragility
    elif category is A:
        logit = -0.9 - 3.0 * engaged + 1.5 * who.fragility
    else:
        logit = -2.6 + 5.0 * who.fragility - 2.0 * engaged
        logit += 0.5 * math.log10(who.amount_minor / 2900)
    return 1.0 / (1.0 + math.exp(-(logit + 0.6 * losses)))


def _episode(
    rng: random.Random,
    who: Traits,
    card: tuple[int, int],
    at: datetime,
    invoice: str,
    decline: tuple[Any, ...],
    lost: bool,
    out: list[dict[str, Any]],
) -> tuple[tuple[int, int], bool]:
    """The failure, its retries and its end; (the card after it, whether the customer left)."""
    category = decline[1]
    retried = category is S  # Visa category 1 and fraud: no reattempts; action: fix first
    days: tuple[int, ...] = RETRY_DAYS if retried else ()
    if not lost:  # most recoveries arrive 2-12 days after the decline
        paid = rng.choice(RETRY_DAYS[:5]) if retried else rng.randint(1, 12)
        days = (*(d for d in days if d < paid), paid)
    step = timedelta(hours=rng.uniform(0, 3))
    _draft(out, who, card, EventType.PAYMENT_FAILED, at, invoice, attempt=1, decline=decline)
    for n, day in enumerate(days[:-1] if not lost else days, start=2):
        when = at + timedelta(days=day) + step
        _draft(out, who, card, EventType.PAYMENT_FAILED, when, invoice, attempt=n, decline=decline)
    if not lost:
        when = at + timedelta(days=days[-1]) + step
        if not retried:
            card = _new_card(rng, when)
            _draft(out, who, card, EventType.PAYMENT_METHOD_UPDATED, when - timedelta(hours=1))
        _draft(out, who, card, EventType.PAYMENT_SUCCEEDED, when, invoice, attempt=len(days) + 1)
        return card, False
    left = category is F or rng.random() < 0.6
    kind = EventType.SUBSCRIPTION_CANCELED if left else EventType.INVOICE_UNCOLLECTIBLE
    _draft(out, who, card, kind, at + LOST_AFTER + step, invoice)
    return card, left


def _new_card(rng: random.Random, at: datetime) -> tuple[int, int]:
    months = at.year * 12 + at.month - 1 + rng.randint(24, 48)
    return months // 12, months % 12 + 1


def _draft(
    out: list[dict[str, Any]],
    who: Traits,
    card: tuple[int, int],
    kind: EventType,
    at: datetime,
    invoice: str | None = None,
    **fields: Any,
) -> None:
    """One event's fields, before its id is known (ids follow the final time order)."""
    sub = f"sub_{who.customer_ref.removeprefix('cus_')}"
    draft = {"seq": len(out), "type": kind, "occurred_at": at.replace(microsecond=0)}
    draft |= {"customer_ref": who.customer_ref, "subscription_ref": sub}
    draft |= {"invoice_ref": invoice or f"sub:{sub}", "card": card, "network": who.network}
    if kind in (EventType.PAYMENT_FAILED, EventType.PAYMENT_SUCCEEDED):
        draft |= {"amount_minor": who.amount_minor, "currency": who.currency}
    out.append(draft | fields)


def _event(draft: dict[str, Any], tenant: str, msg_id: str) -> PaymentEvent:
    kind: EventType = draft["type"]
    raw = draft.get("decline")
    decline = None
    if raw is not None:
        _, category, code, message, scheme, advice = raw
        advice = advice if draft["network"] == "mastercard" else None
        decline = Decline(
            code=code, category=category, network=draft["network"], network_code=scheme,
            advice_code=advice, message=message,
        )  # fmt: skip
    year, month = draft["card"]
    method = None
    if kind is not EventType.INVOICE_UNCOLLECTIBLE and kind is not EventType.SUBSCRIPTION_CANCELED:
        method = PaymentMethod(brand=draft["network"], last4="4242", exp_month=month, exp_year=year)
    return PaymentEvent(
        event_id=str(uuid.uuid5(_NAMESPACE, f"{tenant}/{PROVIDER}/{msg_id}/0")),
        type=kind,
        tenant=tenant,
        provider=PROVIDER,
        source_type=_WIRE_TYPES[kind],
        occurred_at=draft["occurred_at"],
        customer_ref=draft["customer_ref"],
        subscription_ref=draft["subscription_ref"],
        invoice_ref=draft["invoice_ref"],
        amount_minor=draft.get("amount_minor"),
        currency=draft.get("currency"),
        decline=decline,
        attempt=draft.get("attempt"),
        payment_method=method,
    )


def webhooks(population: Population) -> Iterator[Webhook]:
    """Every event as a generic webhook body, in time order."""
    for msg_id, event in zip(population.webhook_ids, population.events, strict=True):
        yield Webhook(msg_id, event, generic_body(event, msg_id))


def generic_body(event: PaymentEvent, msg_id: str) -> bytes:
    """The generic-provider JSON body the normalizer turns back into ``event``'s fields."""
    doc: dict[str, Any] = {
        "type": event.source_type,
        "id": msg_id,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "customer_ref": event.customer_ref,
        "subscription_ref": event.subscription_ref,
    }
    if not event.invoice_ref.startswith("sub:"):
        doc["invoice_ref"] = event.invoice_ref
    optional = {"amount_minor": event.amount_minor, "currency": event.currency}
    doc |= {k: v for k, v in optional.items() if v is not None} | {"attempt": event.attempt}
    if event.decline is not None:
        doc["decline"] = event.decline.model_dump(mode="json", exclude_none=True)
    if event.payment_method is not None:
        doc["payment_method"] = event.payment_method.model_dump(mode="json", exclude_none=True)
    doc = {k: v for k, v in doc.items() if v is not None}
    return json.dumps(doc, separators=(",", ":")).encode()
