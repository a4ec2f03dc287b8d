"""Subscription renewals: when each subscription of a customer renews next, and whether the
card on file still works then (issue 9, item 4). Pure; the risk agent folds and reads it.

Every invoice event of a subscription (a failure, a success, past-due, overdue) is one
*renewal*: the invoice's earliest event time. A provider that reuses one ref for every
billing cycle still gives one renewal per cycle: an event more than ``CYCLE_GAP_DAYS`` away
from the invoice's known renewal is another cycle. From the latest renewals
(``MAX_RENEWALS``) the *cadence* is the median gap, snapped to a calendar period (weekly,
monthly, quarterly, half-yearly, yearly); an irregular history, or a single renewal,
predicts nothing (paywatch does not guess a customer into a warning). The next renewal is
the latest one plus the period, in calendar months where the period is months (a billing
day of the 31st stays at the month's end).

A card works until the end of its expiry month. A subscription is *at risk* when the card
worked at its latest renewal and stops working before the next one. The risk agent then
produces one ``CARD_EXPIRING`` event for that renewal (``SOURCE``), ``lead`` ahead of it;
folding that event back records ``warned``, so each renewal is warned about once, and a
card update (a later expiry) simply ends the risk.

Order of events does not matter (renewals are minima per invoice and cycle, ``warned`` and
``canceled`` are maxima) except at the bounds: ``MAX_SUBS`` subscriptions per customer (the
most recently renewed), ``MAX_RENEWALS`` renewals each.
"""

from __future__ import annotations

import calendar
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from itertools import pairwise

import msgspec
from msgspec.structs import replace

from paywatch.schemas.models import MAX_REF, EventType, PaymentEvent, PaymentMethod

MAX_SUBS, MAX_RENEWALS = 8, 4
CYCLE_GAP_DAYS = 20
DAY_US = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SOURCE = "paywatch.card_expiry"
"""source_type of the CARD_EXPIRING events paywatch produces (never a provider's name)."""

RENEWAL_TYPES = frozenset(
    {
        EventType.PAYMENT_FAILED,
        EventType.PAYMENT_SUCCEEDED,
        EventType.SUBSCRIPTION_PAST_DUE,
        EventType.INVOICE_OVERDUE,
    }
)
_PERIODS: tuple[tuple[float, float, int, int], ...] = (
    # (shortest and longest median gap in days, months, days) of each calendar period
    (6.0, 8.0, 0, 7),
    (26.0, 35.0, 1, 0),
    (84.0, 95.0, 3, 0),
    (175.0, 190.0, 6, 0),
    (350.0, 380.0, 12, 0),
)


class Sub(msgspec.Struct, frozen=True, array_like=True):
    """One subscription of the customer; instants are µs since the epoch."""

    ref: str
    provider: str
    renewals: tuple[tuple[int, int], ...] = ()
    """(invoice key, the invoice cycle's earliest event), oldest first."""
    warned: int = 0
    """The latest renewal a CARD_EXPIRING went out for (0: none)."""
    canceled: int = 0
    """The latest SUBSCRIPTION_CANCELED (0: none); a later renewal reactivates it."""


@dataclass(frozen=True)
class Expiring:
    """A subscription whose next renewal the card on file will not reach."""

    subscription_ref: str
    provider: str
    renews_at: datetime
    card_ends: datetime
    exp_year: int
    exp_month: int


def us(value: datetime) -> int:
    """Microseconds since the epoch of an aware instant."""
    return (value - EPOCH) // timedelta(microseconds=1)


def at_us(value: int) -> datetime:
    """The instant of ``value`` µs since the epoch."""
    return EPOCH + timedelta(microseconds=value)


def _key(ref: str) -> int:
    return int.from_bytes(blake2b(ref.encode(), digest_size=8).digest(), "big")


def observe(subs: tuple[Sub, ...], event: PaymentEvent) -> tuple[Sub, ...]:
    """The subscriptions after ``event`` (unchanged when it names none)."""
    ref = event.subscription_ref
    if ref is None:
        return subs
    sub = next((s for s in subs if s.ref == ref), None) or Sub(ref, event.provider)
    at = us(event.occurred_at)
    if event.type in RENEWAL_TYPES:
        sub = replace(sub, renewals=_renewal(sub.renewals, _key(event.invoice_ref), at))
    elif event.type is EventType.SUBSCRIPTION_CANCELED:
        sub = replace(sub, canceled=max(sub.canceled, at))
    elif is_warning(event) and event.renews_at is not None:
        sub = replace(sub, warned=max(sub.warned, us(event.renews_at)))
    else:
        return subs
    kept = sorted((s for s in subs if s.ref != ref), key=_recency, reverse=True)
    return tuple(sorted([sub, *kept], key=_recency, reverse=True)[:MAX_SUBS])


def _recency(sub: Sub) -> tuple[int, str]:
    return (sub.renewals[-1][1] if sub.renewals else 0, sub.ref)


def _renewal(
    renewals: tuple[tuple[int, int], ...], key: int, at: int
) -> tuple[tuple[int, int], ...]:
    """Add one invoice event: the earliest time of its cycle, newest ``MAX_RENEWALS`` kept."""
    gap = CYCLE_GAP_DAYS * DAY_US
    same = [r for r in renewals if r[0] == key and abs(r[1] - at) <= gap]
    if same:
        first = same[0]
        if first[1] <= at:
            return renewals
        renewals = tuple(r for r in renewals if r != first)
    return tuple(sorted((*renewals, (key, at)), key=lambda r: (r[1], r[0])))[-MAX_RENEWALS:]


def is_warning(event: PaymentEvent) -> bool:
    """Is ``event`` a CARD_EXPIRING that paywatch produced (not a provider's)?"""
    return event.type is EventType.CARD_EXPIRING and event.source_type == SOURCE


def next_renewal(sub: Sub) -> datetime | None:
    """When the subscription renews next, from its cadence; None when it cannot be told."""
    times = [t for _, t in sub.renewals]
    if len(times) < 2 or sub.canceled >= times[-1]:
        return None
    gap = statistics.median((b - a) / DAY_US for a, b in pairwise(times))
    last = at_us(times[-1])
    for low, high, months, days in _PERIODS:
        if low <= gap <= high:
            return _add_months(last, months) + timedelta(days=days)
    return None


def _add_months(at: datetime, months: int) -> datetime:
    if months == 0:
        return at
    index = at.year * 12 + at.month - 1 + months
    year, month = divmod(index, 12)
    day = min(at.day, calendar.monthrange(year, month + 1)[1])
    return at.replace(year=year, month=month + 1, day=day)


def card_ends(card: tuple[int, int, int] | None) -> datetime | None:
    """The first instant a card of (seen at, expiry year, expiry month) no longer works."""
    if card is None:
        return None
    _, year, month = card
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def at_risk(
    subs: tuple[Sub, ...], card: tuple[int, int, int] | None, now: datetime
) -> list[Expiring]:
    """The subscriptions renewing after ``now`` whose card stops working before they do,
    soonest renewal first (warned ones included)."""
    ends = card_ends(card)
    if ends is None or card is None:
        return []
    out = []
    for sub in subs:
        renews = next_renewal(sub)
        last = at_us(sub.renewals[-1][1]) if sub.renewals else None
        if renews is None or last is None or not (last < ends <= renews) or renews <= now:
            continue
        out.append(Expiring(sub.ref, sub.provider, renews, ends, card[1], card[2]))
    return sorted(out, key=lambda e: (e.renews_at, e.subscription_ref))


def unwarned(subs: tuple[Sub, ...], expiring: list[Expiring]) -> Expiring | None:
    """The soonest of ``expiring`` that no CARD_EXPIRING went out for yet."""
    warned = {s.ref: s.warned for s in subs}
    for item in expiring:
        if warned.get(item.subscription_ref, 0) < us(item.renews_at):
            return item
    return None


def renewal_ref(subscription_ref: str) -> str:
    """The invoice_ref a CARD_EXPIRING carries: the subscription's upcoming renewal (no
    invoice exists yet); a digest when the subscription ref is too long to prefix."""
    ref = f"renewal:{subscription_ref}"
    if len(ref) <= MAX_REF:
        return ref
    return "renewal:" + blake2b(subscription_ref.encode(), digest_size=16).hexdigest()


def card_expiring(tenant: str, customer_ref: str, item: Expiring, now: datetime) -> PaymentEvent:
    """The CARD_EXPIRING event for ``item``; its id names the renewal, so resending it is
    recognised (same id) and a provider's delivery can never collide with it."""
    digest = blake2b(
        f"{tenant}\x00{customer_ref}\x00{item.subscription_ref}\x00{us(item.renews_at)}".encode(),
        digest_size=16,
    ).hexdigest()
    return PaymentEvent(
        event_id=f"{SOURCE}:{digest}",
        type=EventType.CARD_EXPIRING,
        tenant=tenant,
        provider=item.provider,
        source_type=SOURCE,
        occurred_at=now,
        customer_ref=customer_ref,
        subscription_ref=item.subscription_ref,
        invoice_ref=renewal_ref(item.subscription_ref),
        payment_method=PaymentMethod(exp_month=item.exp_month, exp_year=item.exp_year),
        renews_at=item.renews_at,
    )


class Watch(msgspec.Struct, frozen=True, array_like=True):
    """A customer's pending warning (table ``risk-renewals``): the soonest renewal at risk
    that no CARD_EXPIRING went out for, and where the customer's records live."""

    tenant: str
    customer_ref: str
    partition: int
    subscription_ref: str
    provider: str
    renews_at: int
    exp_year: int
    exp_month: int

    @property
    def item(self) -> Expiring:
        """The renewal at risk."""
        year, month = self.exp_year, self.exp_month
        ends = card_ends((0, year, month)) or EPOCH
        return Expiring(
            self.subscription_ref, self.provider, at_us(self.renews_at), ends, year, month
        )


def watch(
    tenant: str,
    customer_ref: str,
    partition: int,
    subs: tuple[Sub, ...],
    card: tuple[int, int, int] | None,
    now: datetime,
) -> Watch | None:
    """The customer's pending warning as of ``now``, if any."""
    item = unwarned(subs, at_risk(subs, card, now))
    if item is None:
        return None
    return Watch(
        tenant,
        customer_ref,
        partition,
        item.subscription_ref,
        item.provider,
        us(item.renews_at),
        item.exp_year,
        item.exp_month,
    )


_WATCH_ENCODER = msgspec.msgpack.Encoder()
_WATCH_DECODER = msgspec.msgpack.Decoder(Watch)


def encode_watch(value: Watch) -> bytes:
    """The ``risk-renewals`` table value."""
    return _WATCH_ENCODER.encode(value)


def decode_watch(data: bytes) -> Watch:
    """A table value back; msgspec.DecodeError when it is not one."""
    return _WATCH_DECODER.decode(data)
