"""GET /v1/metrics/recovery and /v1/metrics/at-risk: recovery analytics, per tenant.

Both answer from small index ranges: recovery figures are sums of the aggregate tables
(migration 018, paywatch/projections/metrics_daily.py), the at-risk amounts one scan of the
partial index of open invoices. Periods (day, week, month) sum `metrics_daily_ttr`; keys
(provider, decline category, path) sum `metrics_monthly` for the whole final months of the
range and `metrics_daily` for the days at its edges (paywatch/recovery/analytics.py
`split`), so a year is ~1/3 of metrics_daily's rows. Amounts are never summed across
currencies: each answer is in one `currency`, the one asked for or, by default, the one with
the most failures (open invoices for at-risk) in the range; `currencies` lists every
currency there is, so a client asks again for the others. Without a currency asked, one
query sums every currency of the range and the answer keeps the chosen one's groups (not a
scan to count, then a scan to sum). Aggregates name no customer, so the viewer reads them too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BeforeValidator, Field

from paywatch.api.query.deps import FORBIDDEN, ApiError, Caller, Pool
from paywatch.api.query.schemas import ErrorBody, Public
from paywatch.recovery.analytics import NOT_RECOVERED, DayRange, final, in_bucket, rate, split
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import SagaState

router = APIRouter(prefix="/v1/metrics", tags=["metrics"], responses=FORBIDDEN)

_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}}
DEFAULT_DAYS = 90
MAX_DAYS = 3660
DEFAULT_WINDOW_DAYS = TenantPolicy().window_days
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CURRENCY = r"^[A-Za-z]{3}$"


class GroupBy(StrEnum):
    """What recovery figures are grouped by: a period of failure days, or a key."""

    day = "day"
    week = "week"
    month = "month"
    provider = "provider"
    decline_category = "decline_category"
    path = "path"


_GROUP_SQL: Mapping[GroupBy, str] = {
    GroupBy.day: "day",
    GroupBy.week: "date_trunc('week', day)::date",  # ISO weeks: Monday
    GroupBy.month: "date_trunc('month', day)::date",
    GroupBy.provider: "provider",
    GroupBy.decline_category: "decline_category",
    GroupBy.path: "path",
}
PERIODS = frozenset({GroupBy.day, GroupBy.week, GroupBy.month})


def _iso_day(value: object) -> object:
    # pydantic alone would also read a number as a Unix time, or a datetime.
    if isinstance(value, str) and not _DAY.fullmatch(value):
        raise ValueError("must be a date, YYYY-MM-DD")
    return value


Day = Annotated[date | None, BeforeValidator(_iso_day)]
Currency = Annotated[
    str | None,
    Query(pattern=_CURRENCY, description="ISO 4217 code (any case); default: see the route."),
]


class RecoveryFigures(Public):
    """Recovery of the failures of one period (their failure cohort) or one key."""

    period: date | None = Field(description="First day of the period (group_by day|week|month).")
    key: str | None = Field(description="The provider, decline category or path (else null).")
    failures: int = Field(description="Invoices that failed (group_by=path: all of the range).")
    failed_amount_minor: int
    recovered: int
    recovered_amount_minor: int
    recovery_rate: float | None = Field(description="recovered / failures; null without one.")
    provisional: bool = Field(
        description="True while a cohort of it is younger than the tenant's window_days:"
        " its rate may still grow."
    )
    median_hours_to_recover: float | None
    attempts_per_recovery: float | None


class RecoveryMetrics(Public):
    """`GET /v1/metrics/recovery`: figures in one currency."""

    data: list[RecoveryFigures]
    currency: str | None = Field(description="The currency of every amount (null: no data).")
    currencies: list[str] = Field(description="Every currency with failures in the range.")
    group_by: GroupBy
    window_days: int = Field(description="The recovery window that decides provisional.")


class AtRisk(Public):
    """The open invoices of one state and age (days since the first failure)."""

    state: SagaState
    age: str
    invoices: int
    amount_minor: int


class AtRiskMetrics(Public):
    """`GET /v1/metrics/at-risk`: the open amount in one currency."""

    data: list[AtRisk]
    currency: str | None
    currencies: list[str]
    as_of: datetime


@dataclass
class _Group:
    """The sums of one group and the median time to recover of its recoveries."""

    sums: list[int] = field(default_factory=lambda: [0] * 5)
    median: float | None = None
    last_day: date = date.min


_SUMS = "failures, failed_amount_minor, recovered, recovered_amount_minor, recovered_attempts"
_SUMMED = ", ".join(f"sum({c})::int8 AS {c}" for c in _SUMS.split(", "))
_PRESENT = (
    "WITH RECURSIVE c(currency) AS ("
    " (SELECT currency FROM metrics_daily_ttr WHERE tenant = $1 ORDER BY currency LIMIT 1)"
    " UNION ALL SELECT (SELECT m.currency FROM metrics_daily_ttr m WHERE m.tenant = $1"
    " AND m.currency > c.currency ORDER BY m.currency LIMIT 1) FROM c"
    " WHERE c.currency IS NOT NULL)"
    " SELECT c.currency FROM c WHERE c.currency IS NOT NULL AND EXISTS (SELECT FROM"
    " metrics_daily_ttr m WHERE m.tenant = $1 AND m.currency = c.currency"
    " AND m.day >= $2 AND m.day <= $3)"
)
"""Each currency of the tenant (a loose index scan) with a failure in the range: a row only
exists while it counts one (the projector deletes emptied rows)."""
_WINDOW = "SELECT (policy->>'window_days')::int FROM tenant_policies WHERE tenant = $1"
_OF = "tenant = $1 AND currency = ANY($2::text[])"
_ROWS = f"currency, ttr_bucket, {_SUMS}"


def _source(group_by: GroupBy) -> str:
    """Rows of (currency, g, ttr_bucket, last_day, sums) of the range, from the smallest
    table that has the group: $3-$4 days (head), $5-$6 months, $7-$8 days (tail)."""
    g = _GROUP_SQL[group_by]
    if group_by in PERIODS:
        return (
            f"SELECT {g} AS g, day AS last_day, {_ROWS} FROM metrics_daily_ttr"  # noqa: S608
            f" WHERE {_OF} AND day >= $3 AND day <= $4"
        )
    days = f"SELECT {g} AS g, day AS last_day, {_ROWS} FROM metrics_daily WHERE {_OF}"  # noqa: S608
    return (
        f"{days} AND day >= $3 AND day <= $4 UNION ALL"  # noqa: S608
        f" SELECT {g}, (month + interval '1 month' - interval '1 day')::date, {_ROWS}"
        f" FROM metrics_monthly WHERE {_OF} AND month >= $5 AND month <= $6"
        f" UNION ALL {days} AND day >= $7 AND day <= $8"
    )


def _figures_query(group_by: GroupBy) -> str:
    # Summed per currency, group and time-to-recover bucket (by day, metrics_daily_ttr's
    # rows already are: hashing 30k rows for nothing spills to disk), then per currency and
    # group, with the one bucket that holds the middle recovery (seen before it < half <=
    # seen up to it): one row per group leaves the database, not one per bucket.
    b = "SELECT * FROM s"
    if group_by is not GroupBy.day:
        b = (
            f"SELECT currency, g, ttr_bucket, max(last_day) AS last_day, {_SUMMED}"  # noqa: S608
            " FROM s GROUP BY 1, 2, 3"
        )
    over = "PARTITION BY currency, g"
    return (
        f"WITH s AS ({_source(group_by)}), b AS ({b}),"  # noqa: S608
        f" c AS (SELECT *, (sum(recovered) OVER ({over} ORDER BY ttr_bucket))::int8"
        f" AS upto, (sum(recovered) OVER ({over}))::int8 AS total FROM b),"
        " d AS (SELECT *, recovered > 0 AND ttr_bucket >= 0 AND 2 * upto >= total"
        " AND 2 * (upto - recovered) < total AS middle FROM c)"
        f" SELECT currency, g, max(last_day) AS last_day, {_SUMMED},"
        " max(ttr_bucket) FILTER (WHERE middle) AS mid_bucket,"
        " max(upto - recovered) FILTER (WHERE middle) AS mid_seen,"
        " max(recovered) FILTER (WHERE middle) AS mid_n, max(total) AS total"
        " FROM d GROUP BY currency, g"
    )


FIGURES = {group_by: _figures_query(group_by) for group_by in GroupBy}
"""Parameters: tenant, currencies, then the `ranges` of the request."""
_EMPTY: DayRange = (date.max, date.min)


def ranges(
    group_by: GroupBy, since: date, until: date, window: int, now: datetime
) -> tuple[date, ...]:
    """$3 on of `FIGURES`: the days of a period grouping; else head days, whole months and
    tail days (`split`), an empty range for a part that is not there."""
    if group_by in PERIODS:
        return (since, until)
    parts = split(since, until, window, now)
    return (*(parts.head or _EMPTY), *(parts.months or _EMPTY), *(parts.tail or _EMPTY))


def _shift(day: date, days: int) -> date:
    """`day` moved by `days`, held inside the calendar (year 1 to 9999)."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


def _range(since: date | None, until: date | None, today: date) -> tuple[date, date]:
    """The days asked for; `to` defaults to today (a later `from`: that day), at most
    MAX_DAYS after `from`; `from` defaults to DEFAULT_DAYS ending at `to`."""
    if until is None:
        until = today if since is None else min(max(today, since), _shift(since, MAX_DAYS - 1))
    since = since or _shift(until, -(DEFAULT_DAYS - 1))
    if until < since:
        raise ApiError(400, "invalid_request", "query.to: must not be before from")
    if (until - since).days >= MAX_DAYS:
        raise ApiError(400, "invalid_request", f"query.to: at most {MAX_DAYS} days after from")
    return since, until


def _pick(asked: str | None, counts: Mapping[str, int]) -> tuple[str | None, list[str]]:
    """The currency to answer in (asked, else the most counted) and every one present."""
    present = sorted(c for c, n in counts.items() if n > 0)
    if asked is not None:
        return asked.upper(), present
    ranked = sorted(present, key=lambda c: (-counts[c], c))
    return (ranked[0] if ranked else None), present


def _fold(rows: Any) -> dict[str, dict[Any, _Group]]:
    """Currency -> group -> its sums and median."""
    currencies: dict[str, dict[Any, _Group]] = {}
    for row in rows:
        sums = [row[name] for name in _SUMS.split(", ")]
        median = None
        if row["mid_bucket"] is not None:
            median = in_bucket(row["mid_bucket"], row["mid_seen"], row["mid_n"], row["total"])
        currencies.setdefault(row["currency"], {})[row["g"]] = _Group(sums, median, row["last_day"])
    return currencies


def _item(
    g: Any, group: _Group, by: GroupBy, window: int, now: datetime, total: _Group | None
) -> RecoveryFigures:
    failures, failed, recovered, recovered_amount, attempts = group.sums
    if total is not None:  # by path: each path's share of all failures of the range
        failures, failed = total.sums[0], total.sums[1]
    return RecoveryFigures(
        period=g if by in PERIODS else None,
        key=None if by in PERIODS else str(g),
        failures=failures,
        failed_amount_minor=failed,
        recovered=recovered,
        recovered_amount_minor=recovered_amount,
        recovery_rate=rate(recovered, failures),
        provisional=not final(group.last_day, window, now),
        median_hours_to_recover=group.median,
        attempts_per_recovery=round(attempts / recovered, 2) if recovered else None,
    )


def _figures(groups: dict[Any, _Group], by: GroupBy, window: int, now: datetime) -> list[Any]:
    if by is not GroupBy.path:
        return [_item(g, groups[g], by, window, now, None) for g in sorted(groups)]
    total = _Group()
    for group in groups.values():
        total.sums = [a + b for a, b in zip(total.sums, group.sums, strict=True)]
        total.last_day = max(total.last_day, group.last_day)
    return [
        _item(g, groups[g], by, window, now, total) for g in sorted(groups) if g != NOT_RECOVERED
    ]


@router.get("/recovery", responses=_ERRORS, summary="Recovery figures by failure cohort or key")
async def recovery(
    pool: Pool,
    caller: Caller,
    since: Annotated[
        Day, Query(alias="from", description="First failure day (UTC), YYYY-MM-DD.")
    ] = None,
    until: Annotated[Day, Query(alias="to", description="Last failure day, included.")] = None,
    group_by: GroupBy = GroupBy.day,
    currency: Currency = None,
) -> RecoveryMetrics:
    """Failures of the range (by the UTC day of each invoice's first failure, default the last
    90 days) and how they were recovered, in one currency, grouped by `group_by`."""
    now = datetime.now(UTC)
    since, until = _range(since, until, now.date())
    async with pool.acquire() as conn:
        present = [r["currency"] for r in await conn.fetch(_PRESENT, caller.tenant, since, until)]
        window = await conn.fetchval(_WINDOW, caller.tenant) or DEFAULT_WINDOW_DAYS
        asked = [currency.upper()] if currency is not None else present
        rows = []
        if asked:
            rows = await conn.fetch(
                FIGURES[group_by],
                caller.tenant,
                asked,
                *ranges(group_by, since, until, window, now),
            )
    groups = _fold(rows)
    failures = {c: sum(g.sums[0] for g in groups.get(c, {}).values()) for c in present}
    chosen, _ = _pick(currency, failures)
    return RecoveryMetrics(
        data=_figures(groups.get(chosen, {}) if chosen else {}, group_by, window, now),
        currency=chosen,
        currencies=present,
        group_by=group_by,
        window_days=window,
    )


OPEN = (SagaState.failed, SagaState.retrying, SagaState.awaiting_customer)
AGES = ("0-3d", "3-7d", "7-14d", "14-30d", "30-60d", "60d+")
_AGE_EDGES = [3.0, 7.0, 14.0, 30.0, 60.0]
_AT_RISK = (
    "SELECT coalesce(currency, 'XXX') AS currency, status,"
    " width_bucket(extract(epoch FROM $2::timestamptz - first_failed_at) / 86400,"
    " $3::float8[]) AS age, count(*)::int8 AS invoices,"
    " coalesce(sum(amount_minor), 0)::int8 AS amount_minor FROM invoices"
    " WHERE tenant = $1 AND status IN ('failed', 'retrying', 'awaiting_customer')"
    " GROUP BY 1, 2, 3"
)
"""The same predicate as the partial index invoices_open (migration 018)."""


@router.get("/at-risk", responses=_ERRORS, summary="Open amount by saga state and age")
async def at_risk(pool: Pool, caller: Caller, currency: Currency = None) -> AtRiskMetrics:
    """Open invoices (failed, retrying, awaiting_customer) by state and days since their first
    failure, in one currency (default: the one with the most open invoices)."""
    now = datetime.now(UTC)
    rows = await pool.fetch(_AT_RISK, caller.tenant, now, _AGE_EDGES)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["currency"]] = counts.get(row["currency"], 0) + row["invoices"]
    chosen, present = _pick(currency, counts)
    order = {state.value: i for i, state in enumerate(OPEN)}
    mine = sorted(
        (r for r in rows if r["currency"] == chosen),
        key=lambda r: (order[r["status"]], r["age"] or 0),
    )
    data = [
        AtRisk(
            state=SagaState(r["status"]),
            age=AGES[r["age"] or 0],
            invoices=r["invoices"],
            amount_minor=r["amount_minor"],
        )
        for r in mine
    ]
    return AtRiskMetrics(data=data, currency=chosen, currencies=present, as_of=now)
