"""Pure parts of recovery analytics: attribution, time-to-recover buckets, cohort finality.

Shared by the projector (which stores facts and sums, paywatch/projections/metrics_daily.py)
and the query API (which reads them, paywatch/api/query/routes/metrics.py), so both agree
on what a path, a bucket and a final cohort are.

**Attribution.** Each recovery is credited to one path, the first that holds in this order:

1. ``late_payment``: the saga had given up (exhausted) and the invoice was paid anyway;
   whatever paid it, paywatch's recovery had ended.
2. ``payment_method_updated``: the customer updated the payment method between the first
   failure and the success; a retry that followed (often ours, at once) succeeded because
   of it, so the customer's action gets the credit, as card updaters are credited.
3. ``paywatch_retry``: the success is the outcome of a retry paywatch made
   (``PaymentEvent.paywatch_retry``).
4. ``provider_retry``: a payment (it has a ``payment_ref``) after the provider announced
   its own retry (a failure carried ``provider_retry_at``).
5. ``out_of_band``: anything else: no payment attempt of ours or the provider's (a ledger
   marked paid, a manual mark, no ``payment_ref``), or a payment the customer made on their
   own without a new payment method.

**Time to recover** is kept as counts per bucket (`bucket`), fine where recoveries cluster
(an hour wide for the first day) and coarser later (a day wide from two weeks on), so a
median over any range is a sum of stored counts: `median_hours` interpolates inside the
bucket holding the middle recovery, exact to within that bucket's width.

**Cohorts.** The cohort of an invoice is the UTC day of its first failure. Its recovery rate
can still grow until every invoice of it has had its full recovery window (the tenant
policy's ``window_days``), so a cohort is final only once that window has passed after its
last day (`final`); younger cohorts are provisional.

**Months and edge days.** Sums over long ranges read whole calendar months from a monthly
rollup and only the days at the range's edges from the daily rows (`split`). A month is read
whole only once it is final too, so a group whose rows all lie in such months is final
whatever its exact last day; a younger month's days are read one by one, which keeps
``provisional`` exact.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum


class RecoveryPath(StrEnum):
    """How a recovered invoice got paid (module doc: the order they are tried in)."""

    late_payment = "late_payment"
    payment_method_updated = "payment_method_updated"
    paywatch_retry = "paywatch_retry"
    provider_retry = "provider_retry"
    out_of_band = "out_of_band"


NOT_RECOVERED = "none"
"""The path column of an invoice that is not recovered (yet)."""
NO_BUCKET = -1
"""The time-to-recover bucket of an invoice that is not recovered (yet)."""
NO_CURRENCY = "XXX"
"""ISO 4217's code for no currency: invoices without one are counted under it."""


@dataclass(frozen=True)
class Evidence:
    """What the log says about one recovery (each read from the invoice's own events)."""

    after_exhaustion: bool
    """The saga moved from exhausted to recovered."""
    method_updated: bool
    """A PAYMENT_METHOD_UPDATED of the invoice between its first failure and the success."""
    paywatch_retry: bool
    """The success event is the outcome of a paywatch retry."""
    provider_retry_announced: bool
    """A failure of the invoice carried the provider's own next retry time."""
    payment_ref: str | None
    """The success event's payment reference (None: no payment attempt behind it)."""


def attribute(evidence: Evidence) -> RecoveryPath:
    """The one path a recovery is credited to (module doc)."""
    if evidence.after_exhaustion:
        return RecoveryPath.late_payment
    if evidence.method_updated:
        return RecoveryPath.payment_method_updated
    if evidence.paywatch_retry:
        return RecoveryPath.paywatch_retry
    if evidence.payment_ref is not None and evidence.provider_retry_announced:
        return RecoveryPath.provider_retry
    return RecoveryPath.out_of_band


def _edges() -> tuple[float, ...]:
    hourly = [float(h) for h in range(24)]  # first day: an hour wide
    three = [24.0 + 3 * i for i in range(16)]  # days 2-3: three hours
    half_day = [72.0 + 12 * i for i in range(22)]  # to day 14: twelve hours
    daily = [336.0 + 24 * i for i in range(46)]  # to day 60: a day
    return (*hourly, *three, *half_day, *daily, 1440.0)  # then one open bucket


EDGES = _edges()
"""Lower edge, in hours, of each time-to-recover bucket; the last bucket is open-ended."""


def bucket(hours: float) -> int:
    """The bucket of a time to recover (negative times, clock skew, count as zero)."""
    return max(bisect_right(EDGES, max(hours, 0.0)) - 1, 0)


def median_hours(counts: Mapping[int, int]) -> float | None:
    """The median time to recover of bucket -> recoveries (None without a recovery).

    Interpolated linearly inside the bucket that holds the middle recovery (`in_bucket`).
    """
    total = sum(n for b, n in counts.items() if b >= 0)
    if total <= 0:
        return None
    seen = 0
    for index in sorted(b for b in counts if b >= 0):
        n = counts[index]
        if n > 0 and 2 * (seen + n) >= total:
            return in_bucket(index, seen, n, total)
        seen += n
    raise AssertionError("unreachable: the middle lies within the total")


def in_bucket(index: int, seen: int, n: int, total: int) -> float:
    """The median of ``total`` recoveries whose middle one falls in bucket ``index``, which
    holds ``n`` of them after ``seen`` in earlier buckets: interpolated linearly inside the
    bucket; in the open last bucket, its lower edge."""
    low = EDGES[index]
    if index + 1 >= len(EDGES):
        return low
    return round(low + (EDGES[index + 1] - low) * (total / 2 - seen) / n, 1)


def hours_between(start: datetime, end: datetime) -> float:
    """Hours from ``start`` to ``end``."""
    return (end - start).total_seconds() / 3600


def final(last_day: date, window_days: int, now: datetime) -> bool:
    """Is a cohort whose last failure day is ``last_day`` final at ``now``?

    Its last invoice may have failed at the end of that day; it is final once that
    invoice's window has passed too.
    """
    closes = datetime.combine(last_day + timedelta(days=1), time(), UTC)
    return now >= closes + timedelta(days=window_days)


def rate(recovered: int, failures: int) -> float | None:
    """Recovered share of failures, rounded to four places (None without a failure)."""
    return round(recovered / failures, 4) if failures > 0 else None


DayRange = tuple[date, date]
"""First and last day, both included."""


def month_end(day: date) -> date:
    """The last day of ``day``'s month."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


@dataclass(frozen=True)
class Split:
    """A range of failure days cut into the days before the whole months, the whole final
    months (their first days) and the days after them; every day in exactly one part."""

    head: DayRange | None
    months: DayRange | None
    tail: DayRange | None


def split(since: date, until: date, window_days: int, now: datetime) -> Split:
    """Cut ``since``..``until`` into edge days and the whole months inside it that are final
    at ``now`` (module doc); without such a month, it is all head."""
    first = since if since.day == 1 else month_end(since) + timedelta(days=1)
    last: date | None = None
    month = first
    # Finality grows with time, so the final whole months are one run from the first.
    while month_end(month) <= until and final(month_end(month), window_days, now):
        last, month = month, month_end(month) + timedelta(days=1)
    if last is None:
        return Split((since, until), None, None)
    after = month_end(last) + timedelta(days=1)
    return Split(
        (since, first - timedelta(days=1)) if since < first else None,
        (first, last),
        (after, until) if after <= until else None,
    )
