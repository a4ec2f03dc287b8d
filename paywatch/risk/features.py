"""Per-customer risk features: a bounded, pure fold of the customer's PaymentEvents.

``evolve(state, event)`` folds one event (table key tenant/customer_ref) into a compact,
frozen ``CustomerFeatures``; ``vector(state, now)`` reads the named numbers *as of now*.
No clock, no I/O: the agent passes ``now`` in, so a replay computes the same features.

The numbers ``vector`` gives, in ``FEATURE_NAMES`` order ("Nd": the N UTC days up to now):

=========================  ===================================================================
``failures_{7,30,90}d``    PAYMENT_FAILED events that occurred in the window
``recoveries_{7,30,90}d``  invoices recovered (failed, then closed by PAYMENT_SUCCEEDED) in it
``{cat}_share_90d``        share of the 90-day failures per DeclineCategory (0 without any)
``days_since_success``     days since the latest PAYMENT_SUCCEEDED (capped at 365); 15, the
                           model's neutral value, when none was seen: many tenants send no
                           success webhooks, so "none seen" is not "never paid"
``days_since_open_failure`` days since the first failure of the oldest open invoice (0: none)
``open_invoices``          invoices whose latest failure is after their latest close
``open_attempts``          sum over open invoices of the highest ``attempt`` seen (at least 1)
``amount_at_risk_log10``   log10(1 + open ``amount_minor`` in the customer's latest currency)
``other_currency_open``    open invoices in another currency (not in the amount above)
``providers``              distinct providers seen (at most 16 are kept)
``invoices_recovered``     lifetime invoices whose failures ended recovered
``invoices_lost``          lifetime invoices lost (voided, uncollectible, canceled after failing)
``recovery_rate``          (recovered + 1) / (recovered + lost + 2): Laplace prior of 1/2
``card_months_to_expiry``  months from now's month to the card's expiry month, in [-24, 24]
                           (negative: expired; 12 when no expiry is known)
``card_expiring_30d``      1 when the card stops working within the next 30 days, else 0
``card_expired``           1 when the card's expiry month has passed, else 0
``card_ends_before_renewal`` 1 when the card stops working before a subscription's next
                           renewal (``risk.renewals``), else 0
=========================  ===================================================================

Order does not matter: an invoice's state is a pair of maxima (latest failure, latest
close, ties to "lost"), failures count in the day bucket of their ``occurred_at``, and a
recovery counts on the day of the invoice's latest close, moving if a later close arrives.
So any arrival order of the same events gives the same features, with two exceptions: the
first failure of an open invoice can come out later than it was (never earlier) when a close
arrives between its failures; and an event re-delivered after 64 newer distinct events, or
one for an invoice that the caps below forgot, counts again.

Bounds, whatever the input: day buckets from the newest day seen back 89 days (an older
failure moves lifetime counters only; the invoice ledger still takes it, so a late close is
never ignored), 64 recent event ids, 200 open invoices (the oldest is dropped and counted in
``dropped``) plus 64 closed ones (kept so a late failure does not reopen what a success
closed), 16 providers, 8 subscriptions of 4 renewals (``risk.renewals``). Invoice refs,
event ids and currencies of invoices are stored as
64-bit BLAKE2b keys. ``encode`` is then at most ``MAX_ENCODED`` bytes: 579 (ids) + 6,663
(buckets) + 17,163 (invoices, 65 each) + 17,394 (currency and provider names of up to 1,020
UTF-8 bytes each) + 113 (the rest) + 17,240 (subscriptions: two names of up to 1,020 bytes,
four renewals and two instants each) < 60 KiB. A typical customer takes a few hundred bytes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from hashlib import blake2b

import msgspec
from msgspec.structs import replace

from paywatch.risk.renewals import Sub, at_risk, is_warning, observe
from paywatch.schemas.models import MAX_YEAR, DeclineCategory, EventType, PaymentEvent

HORIZON_DAYS = 90
MAX_SEEN, MAX_OPEN, MAX_CLOSED, MAX_PROVIDERS = 64, 200, 64, 16
MAX_ENCODED = 60 * 1024
FORMAT = 1
DAY_US = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CATEGORIES = tuple(DeclineCategory)
_CAT_INDEX = {category: i for i, category in enumerate(CATEGORIES)}
_LOSES = frozenset(
    {EventType.INVOICE_VOIDED, EventType.INVOICE_UNCOLLECTIBLE, EventType.SUBSCRIPTION_CANCELED}
)
_WINDOWS = (7, 30, 90)
_NEVER_DAYS, _NO_CARD_MONTHS, _MONTHS_CAP = 365.0, 12.0, 24
_UNSEEN_SUCCESS_DAYS = 15.0
"""days_since_success when no success was seen: neutral (risk-v1's mean), not 'a year ago'."""

FEATURE_NAMES: tuple[str, ...] = (
    *(f"failures_{n}d" for n in _WINDOWS),
    *(f"recoveries_{n}d" for n in _WINDOWS),
    *(f"{c.value.lower()}_share_90d" for c in CATEGORIES),
    "days_since_success",
    "days_since_open_failure",
    "open_invoices",
    "open_attempts",
    "amount_at_risk_log10",
    "other_currency_open",
    "providers",
    "invoices_recovered",
    "invoices_lost",
    "recovery_rate",
    "card_months_to_expiry",
    "card_expiring_30d",
    "card_expired",
    "card_ends_before_renewal",
)
"""The names ``vector`` returns, in this fixed order (documented in the module table)."""


class Day(msgspec.Struct, frozen=True, array_like=True):
    """One UTC day: failures per category (``CATEGORIES`` order) and invoice outcomes."""

    day: int
    failed: tuple[int, ...] = (0,) * len(CATEGORIES)
    recovered: int = 0
    lost: int = 0


class Invoice(msgspec.Struct, frozen=True, array_like=True):
    """One invoice's ledger entry; instants are µs since the epoch."""

    key: int
    closed_at: int | None = None
    lost: bool = False  # how the latest close ended it
    failed_at: int | None = None
    since: int | None = None  # first failure after the latest close
    attempt: int = 0
    amount: int = 0  # of the latest failure
    currency: int = 0  # key of the latest failure's currency; 0: none given


class CustomerFeatures(msgspec.Struct, frozen=True, array_like=True):
    """What the fold keeps about one customer (bounded: see the module docstring)."""

    seen: tuple[int, ...] = ()
    newest: int | None = None
    days: tuple[Day, ...] = ()
    invoices: tuple[Invoice, ...] = ()  # sorted by key
    last_success: int | None = None
    currency: str | None = None
    currency_at: int | None = None
    providers: tuple[str, ...] = ()
    card: tuple[int, int, int] | None = None  # (seen at, expiry year, expiry month)
    failures: int = 0
    recovered: int = 0
    lost: int = 0
    dropped: int = 0
    subs: tuple[Sub, ...] = ()  # risk.renewals: subscriptions and their renewals


def ref_key(ref: str) -> int:
    """The 64-bit key stored for an invoice ref, event id or currency."""
    return int.from_bytes(blake2b(ref.encode(), digest_size=8).digest(), "big")


def us(value: datetime) -> int:
    """Microseconds since the epoch of an aware instant."""
    return (value - EPOCH) // timedelta(microseconds=1)


def evolve(features: CustomerFeatures | None, event: PaymentEvent) -> CustomerFeatures:
    """The customer's features after ``event`` (unchanged if it was seen already)."""
    state = features or CustomerFeatures()
    if is_warning(event):  # paywatch's own CARD_EXPIRING: only "warned" changes
        return replace(state, subs=observe(state.subs, event))
    event_key = ref_key(event.event_id)
    if event_key in state.seen:
        return state
    at = us(event.occurred_at)
    newest = at if state.newest is None else max(state.newest, at)
    state = replace(
        state,
        seen=(*state.seen, event_key)[-MAX_SEEN:],
        newest=newest,
        days=_prune(state.days, newest // DAY_US),
        providers=_providers(state.providers, event.provider),
        subs=observe(state.subs, event),
    )
    state = _facts(state, event, at)
    if event.type is EventType.PAYMENT_FAILED:
        state = _on_failure(state, event, at)
    elif event.type is EventType.PAYMENT_SUCCEEDED or event.type in _LOSES:
        state = _on_close(state, event, at)
    return state


def _prune(days: tuple[Day, ...], newest_day: int) -> tuple[Day, ...]:
    if not days or days[0].day > newest_day - HORIZON_DAYS:
        return days
    return tuple(d for d in days if d.day > newest_day - HORIZON_DAYS)


def _providers(providers: tuple[str, ...], name: str) -> tuple[str, ...]:
    if name in providers:
        return providers
    return tuple(sorted((*providers, name))[:MAX_PROVIDERS])  # the smallest: order-free


def _facts(state: CustomerFeatures, event: PaymentEvent, at: int) -> CustomerFeatures:
    """Latest success, currency and card: each a maximum, so arrival order is irrelevant."""
    changes: dict[str, object] = {}
    if event.type is EventType.PAYMENT_SUCCEEDED and (state.last_success or -1) < at:
        changes["last_success"] = at
    if event.currency and (at, event.currency) > (state.currency_at or -1, state.currency or ""):
        changes.update(currency=event.currency, currency_at=at)
    method = event.payment_method
    if method and method.exp_year is not None and method.exp_month in range(1, 13):
        year = method.exp_year + (2000 if method.exp_year < 100 else 0)  # "27" is 2027
        card = (at, min(year, MAX_YEAR), method.exp_month or 0)
        if state.card is None or card > state.card:
            changes["card"] = card
    return replace(state, **changes) if changes else state


def _on_failure(state: CustomerFeatures, event: PaymentEvent, at: int) -> CustomerFeatures:
    category = event.decline.category if event.decline else DeclineCategory.UNKNOWN
    days = _bump(state.days, at // DAY_US, state.newest, category=_CAT_INDEX[category])
    state = replace(state, failures=state.failures + 1, days=days)
    old = _find(state.invoices, ref_key(event.invoice_ref))
    invoice = old or Invoice(ref_key(event.invoice_ref))
    since = invoice.since
    if invoice.closed_at is None or at > invoice.closed_at:  # a failure of the open episode
        since = min(at, _since(invoice)) if is_open(invoice) else at
    currency = ref_key(event.currency) if event.currency else 0
    latest = (at, event.amount_minor or 0, currency)
    if invoice.failed_at is None or latest > (invoice.failed_at, invoice.amount, invoice.currency):
        invoice = replace(invoice, failed_at=at, amount=latest[1], currency=currency)
    attempt = max(invoice.attempt, event.attempt or 1)
    return _store(state, old, replace(invoice, since=since, attempt=attempt))


def _on_close(state: CustomerFeatures, event: PaymentEvent, at: int) -> CustomerFeatures:
    key = ref_key(event.invoice_ref)
    old = _find(state.invoices, key)
    invoice = old or Invoice(key)
    lost = event.type is not EventType.PAYMENT_SUCCEEDED
    if invoice.closed_at is not None and (at, lost) <= (invoice.closed_at, invoice.lost):
        return state
    since = invoice.since
    if since is not None and since <= at:
        since = None  # unknown: the failures after ``at`` were merged; ``_since`` guesses
    return _store(state, old, replace(invoice, closed_at=at, lost=lost, since=since))


def _bump(
    days: tuple[Day, ...], day: int, newest: int | None, *, category: int = -1, outcome: int = 0
) -> tuple[Day, ...]:
    """Days with one failure (``category``) or a signed recovered/lost change (``outcome``,
    +-1 recovered, +-2 lost) added on ``day``; nothing when the day is past the horizon."""
    if newest is None or day <= newest // DAY_US - HORIZON_DAYS:
        return days
    i = bisect_left(days, day, key=lambda d: d.day)
    exists = i < len(days) and days[i].day == day
    if not exists and outcome < 0:
        return days  # its count was never made (past the horizon then, as now)
    old = days[i] if exists else Day(day)
    failed = tuple(n + (j == category) for j, n in enumerate(old.failed))
    sign = 1 if outcome > 0 else -1
    recovered = old.recovered + (sign if abs(outcome) == 1 else 0)
    new = Day(day, failed, recovered, old.lost + (sign if abs(outcome) == 2 else 0))
    keep = () if new == Day(day) else (new,)
    return days[:i] + keep + days[i + exists :]


def _find(invoices: tuple[Invoice, ...], key: int) -> Invoice | None:
    i = bisect_left(invoices, key, key=lambda inv: inv.key)
    return invoices[i] if i < len(invoices) and invoices[i].key == key else None


def is_open(invoice: Invoice) -> bool:
    """Is the invoice's latest failure after its latest close?"""
    closed = invoice.closed_at
    return invoice.failed_at is not None and (closed is None or invoice.failed_at > closed)


def _since(invoice: Invoice) -> int:
    """When an open invoice's episode began: its first failure after the latest close, or
    its latest failure when a close arrived between its failures (an underestimate)."""
    return invoice.since if invoice.since is not None else invoice.failed_at or 0


def _outcome(invoice: Invoice | None) -> tuple[int, int] | None:
    """(+1 recovered | +2 lost, close day) of an invoice that failed and was then closed."""
    if invoice is None or invoice.failed_at is None or invoice.closed_at is None:
        return None
    if invoice.failed_at > invoice.closed_at:
        return None
    return (2 if invoice.lost else 1), invoice.closed_at // DAY_US


def _store(state: CustomerFeatures, old: Invoice | None, new: Invoice) -> CustomerFeatures:
    """Put ``new`` in the ledger, moving its outcome's counts, then apply the caps."""
    before, after = _outcome(old), _outcome(new)
    if before != after:
        for outcome, sign in ((before, -1), (after, 1)):
            if outcome is not None:
                state = _count(state, outcome, sign)
    invoices = state.invoices
    i = bisect_left(invoices, new.key, key=lambda inv: inv.key)
    invoices = (*invoices[:i], new, *invoices[i + (old is not None) :])
    if len(invoices) > MAX_CLOSED:  # else neither cap can be exceeded
        return _cap(replace(state, invoices=invoices))
    return replace(state, invoices=invoices)


def _count(state: CustomerFeatures, outcome: tuple[int, int], sign: int) -> CustomerFeatures:
    kind, day = outcome
    days = _bump(state.days, day, state.newest, outcome=kind * sign)
    if kind == 2:
        return replace(state, days=days, lost=state.lost + sign)
    return replace(state, days=days, recovered=state.recovered + sign)


def _cap(state: CustomerFeatures) -> CustomerFeatures:
    """Drop the oldest open invoice past MAX_OPEN (counted) and the oldest closed past
    MAX_CLOSED (its outcome stays counted)."""
    opened = [inv for inv in state.invoices if is_open(inv)]
    closed = [inv for inv in state.invoices if not is_open(inv)]
    gone: set[int] = set()
    if len(opened) > MAX_OPEN:
        gone.add(min(opened, key=lambda inv: (_since(inv), inv.key)).key)
    if len(closed) > MAX_CLOSED:
        gone.add(min(closed, key=lambda inv: (inv.closed_at or 0, inv.key)).key)
    if not gone:
        return state
    invoices = tuple(inv for inv in state.invoices if inv.key not in gone)
    dropped = state.dropped + (len(opened) > MAX_OPEN)
    return replace(state, invoices=invoices, dropped=dropped)


def open_invoices(features: CustomerFeatures) -> frozenset[int]:
    """Keys (``ref_key``) of the customer's open invoices."""
    return frozenset(inv.key for inv in features.invoices if is_open(inv))


def vector(features: CustomerFeatures, now: datetime) -> dict[str, float]:
    """The named features as of ``now`` (keys in ``FEATURE_NAMES`` order)."""
    t = us(now)
    out = _windows(features, t // DAY_US) | _ledger(features, t)
    out |= _card(features.card, now)
    out["card_ends_before_renewal"] = float(bool(at_risk(features.subs, features.card, now)))
    return {name: out[name] for name in FEATURE_NAMES}


def _windows(features: CustomerFeatures, today: int) -> dict[str, float]:
    failed, recovered = dict.fromkeys(_WINDOWS, 0), dict.fromkeys(_WINDOWS, 0)
    mix = [0] * len(CATEGORIES)
    for day in features.days:
        age = today - day.day
        if not 0 <= age < HORIZON_DAYS:
            continue  # after now, or out of the 90 days
        for n in _WINDOWS:
            if age < n:
                failed[n] += sum(day.failed)
                recovered[n] += day.recovered
        mix = [a + b for a, b in zip(mix, day.failed, strict=True)]
    total = sum(mix)
    out = {f"failures_{n}d": float(failed[n]) for n in _WINDOWS}
    out |= {f"recoveries_{n}d": float(recovered[n]) for n in _WINDOWS}
    for category, count in zip(CATEGORIES, mix, strict=True):
        out[f"{category.value.lower()}_share_90d"] = count / total if total else 0.0
    return out


def _days(since: int | None, t: int, default: float) -> float:
    return default if since is None else min(max((t - since) / DAY_US, 0.0), _NEVER_DAYS)


def _ledger(features: CustomerFeatures, t: int) -> dict[str, float]:
    opened = [inv for inv in features.invoices if is_open(inv)]
    mine = ref_key(features.currency) if features.currency else 0
    same = [inv for inv in opened if inv.currency in (mine, 0)]  # 0: no currency given
    first = min((_since(inv) for inv in opened), default=None)
    good, bad = features.recovered, features.lost
    return {
        "days_since_success": _days(features.last_success, t, _UNSEEN_SUCCESS_DAYS),
        "days_since_open_failure": _days(first, t, 0.0),
        "open_invoices": float(len(opened)),
        "open_attempts": float(sum(max(inv.attempt, 1) for inv in opened)),
        "amount_at_risk_log10": math.log10(1 + max(sum(inv.amount for inv in same), 0)),
        "other_currency_open": float(len(opened) - len(same)),
        "providers": float(len(features.providers)),
        "invoices_recovered": float(good),
        "invoices_lost": float(bad),
        "recovery_rate": (good + 1) / (good + bad + 2),
    }


def _card(card: tuple[int, int, int] | None, now: datetime) -> dict[str, float]:
    """Months to expiry and two flags; a card works until the end of its expiry month."""
    if card is None:
        return {"card_months_to_expiry": _NO_CARD_MONTHS} | dict.fromkeys(
            ("card_expiring_30d", "card_expired"), 0.0
        )
    _, year, month = card
    now = now.astimezone(UTC)
    months = (year * 12 + month) - (now.year * 12 + now.month)
    ends = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return {
        "card_months_to_expiry": float(min(max(months, -_MONTHS_CAP), _MONTHS_CAP)),
        "card_expiring_30d": float(now < ends <= now + timedelta(days=30)),
        "card_expired": float(ends <= now),
    }


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(CustomerFeatures)


def encode(features: CustomerFeatures) -> bytes:
    """The table value: a format byte, then msgpack (at most ``MAX_ENCODED`` bytes)."""
    return bytes([FORMAT]) + _ENCODER.encode(features)


def decode(value: bytes) -> CustomerFeatures:
    """The features ``encode`` wrote; ValueError on another format or malformed bytes."""
    if value[:1] != bytes([FORMAT]):
        raise ValueError(f"not a risk features value of format {FORMAT}: {value[:1]!r}")
    return _DECODER.decode(memoryview(value)[1:])
