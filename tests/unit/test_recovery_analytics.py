"""Pure parts of recovery analytics: attribution, buckets and median, cohort finality, the
month/day split of a range, and the projector's fact, difference and rollup functions (no
Kafka, no Postgres)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from paywatch.projections.metrics_daily import (
    DAILY,
    DAILY_TTR,
    MONTHLY,
    ROLLUPS,
    TABLES,
    Fact,
    derive,
    differences,
)
from paywatch.projections.rebuild import plan
from paywatch.recovery.analytics import (
    EDGES,
    NO_BUCKET,
    NOT_RECOVERED,
    Evidence,
    RecoveryPath,
    Split,
    attribute,
    bucket,
    final,
    median_hours,
    month_end,
    rate,
    split,
)

T0 = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)


def _evidence(**given: Any) -> Evidence:
    values: dict[str, Any] = {
        "after_exhaustion": False,
        "method_updated": False,
        "paywatch_retry": False,
        "provider_retry_announced": False,
        "payment_ref": None,
    }
    return Evidence(**(values | given))


@pytest.mark.parametrize(
    ("given", "path"),
    [
        ({}, RecoveryPath.out_of_band),
        ({"payment_ref": "ch_1"}, RecoveryPath.out_of_band),  # the customer paid, no schedule
        ({"provider_retry_announced": True}, RecoveryPath.out_of_band),  # no payment at all
        ({"provider_retry_announced": True, "payment_ref": "ch_1"}, RecoveryPath.provider_retry),
        ({"paywatch_retry": True, "payment_ref": "ch_1"}, RecoveryPath.paywatch_retry),
        (
            {"paywatch_retry": True, "provider_retry_announced": True, "payment_ref": "ch_1"},
            RecoveryPath.paywatch_retry,
        ),
        ({"method_updated": True, "paywatch_retry": True}, RecoveryPath.payment_method_updated),
        (
            {"after_exhaustion": True, "method_updated": True, "paywatch_retry": True},
            RecoveryPath.late_payment,
        ),
    ],
)
def test_each_recovery_gets_the_first_path_that_holds(given: dict[str, Any], path: str) -> None:
    assert attribute(_evidence(**given)) is path


def test_buckets_cover_every_time_and_are_finer_early() -> None:
    assert list(EDGES) == sorted(EDGES) and EDGES[0] == 0
    assert bucket(-3) == bucket(0) == 0
    assert bucket(0.99) == 0 and bucket(1) == 1 and bucket(23.5) == 23
    assert EDGES[bucket(25)] == 24 and EDGES[bucket(26.9)] == 24 and EDGES[bucket(27)] == 27
    assert EDGES[bucket(24 * 20 + 5)] == 24 * 20
    assert bucket(24 * 365) == len(EDGES) - 1


def test_median_interpolates_inside_the_middle_bucket() -> None:
    assert median_hours({}) is None
    assert median_hours({NO_BUCKET: 4}) is None  # unrecovered rows carry no time
    assert median_hours({bucket(5.5): 1}) == 5.5
    # 1 at [2,3), 2 at [10,11), 1 at [30,33): the middle (2nd of 4) is the 1st of the [10,11)
    counts = {bucket(2.2): 1, bucket(10.1): 2, bucket(31): 1}
    assert median_hours(counts) == 10.5
    assert median_hours({bucket(2): 3, bucket(100): 1}) == 2.7
    assert median_hours({len(EDGES) - 1: 2}) == EDGES[-1]  # open bucket: its lower edge


def test_a_cohort_is_final_once_the_window_after_its_last_day_has_passed() -> None:
    day = date(2026, 3, 2)
    closes = datetime(2026, 3, 3, tzinfo=UTC) + timedelta(days=30)
    assert not final(day, 30, closes - timedelta(seconds=1))
    assert final(day, 30, closes)
    assert not final(day, 31, closes)  # a longer window: still provisional
    assert rate(1, 3) == 0.3333 and rate(0, 0) is None


def _record(**given: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "key_tenant": "acme",
        "key_ref": "in_1",
        "provider": "stripe",
        "status": "retrying",
        "amount_minor": 4900,
        "currency": "usd",
        "attempts": 2,
        "last_decline_category": "SOFT",
        "first_failed_at": T0,
        "recovered_at": None,
        "last_event_at": T0,
        "closed_at": None,
        "success": None,
        "method_updated": False,
        "provider_retry": False,
        "after_exhaustion": False,
    }
    return record | given


def test_an_open_invoice_counts_in_its_failure_cohort_unrecovered() -> None:
    fact = derive(_record(first_failed_at=T0.astimezone(UTC) + timedelta(hours=2)))
    assert fact.day == date(2026, 3, 3)  # UTC day of the first failure
    assert (fact.currency, fact.path, fact.ttr_bucket) == ("USD", NOT_RECOVERED, NO_BUCKET)
    assert fact.sums == (1, 4900, 2, 0, 0, 0)
    no_currency = derive(_record(currency=None, last_decline_category=None, amount_minor=None))
    assert (no_currency.currency, no_currency.decline_category) == ("XXX", "UNKNOWN")
    assert no_currency.failed_amount_minor == 0


def test_a_recovered_invoice_carries_its_path_time_and_paid_amount() -> None:
    success = {"paywatch_retry": True, "payment_ref": "ch_9", "amount_minor": 4500}
    fact = derive(
        _record(
            status="recovered", recovered_at=T0 + timedelta(hours=5, minutes=30), success=success
        )
    )
    assert fact.path == RecoveryPath.paywatch_retry
    assert fact.ttr_bucket == bucket(5.5)
    assert fact.sums == (1, 4900, 2, 1, 4500, 2)
    late = derive(
        _record(status="recovered", closed_at=T0 + timedelta(days=40), after_exhaustion=True)
    )
    assert late.path == RecoveryPath.late_payment and late.recovered_amount_minor == 4900
    assert late.recovered_at == T0 + timedelta(days=40)


def test_differences_move_a_fact_between_rows_and_cancel_repeats() -> None:
    old = derive(_record())
    new = derive(
        _record(
            status="recovered", recovered_at=T0 + timedelta(hours=1), last_decline_category="HARD"
        )
    )
    moved = differences([(None, old), (old, new)])
    assert moved == {new.key: [1, 4900, 2, 1, 4900, 2]}  # old's row: +1 -1, left out
    assert differences([(old, old)]) == {}
    twice = differences([(None, new), (new, new)])
    assert twice == {new.key: [1, 4900, 2, 1, 4900, 2]}
    assert (
        Fact.from_stored({f"f_{k}": v for k, v in zip(_COLUMNS, new.values(), strict=True)}) == new
    )


_COLUMNS = tuple(Fact.__dataclass_fields__)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def test_month_end_knows_short_months_and_leap_years() -> None:
    assert month_end(date(2024, 2, 10)) == date(2024, 2, 29)
    assert month_end(date(2025, 2, 28)) == date(2025, 2, 28)
    assert month_end(date(2025, 12, 1)) == date(2025, 12, 31)
    assert month_end(date(2026, 4, 30)) == date(2026, 4, 30)


def test_the_split_of_a_range_is_exact_at_the_edges() -> None:
    later = datetime(2030, 1, 1, tzinfo=UTC)  # every month of 2024 long final
    assert split(date(2024, 3, 1), date(2024, 3, 31), 30, later) == Split(
        None, (date(2024, 3, 1), date(2024, 3, 1)), None
    )
    # One day short of a whole month at either end: every day from the daily rows.
    assert split(date(2024, 3, 2), date(2024, 3, 31), 30, later).months is None
    assert split(date(2024, 3, 1), date(2024, 3, 30), 30, later).months is None
    assert split(date(2024, 2, 29), date(2024, 5, 1), 30, later) == Split(
        (date(2024, 2, 29), date(2024, 2, 29)),
        (date(2024, 3, 1), date(2024, 4, 1)),
        (date(2024, 5, 1), date(2024, 5, 1)),
    )
    # April closes on May 1; final 30 days later: then, and not a second before, whole.
    closes = datetime(2024, 5, 31, tzinfo=UTC)
    before = split(date(2024, 2, 29), date(2024, 5, 1), 30, closes - timedelta(seconds=1))
    assert before.months == (date(2024, 3, 1), date(2024, 3, 1))
    assert before.tail == (date(2024, 4, 1), date(2024, 5, 1))
    assert split(date(2024, 2, 29), date(2024, 5, 1), 30, closes).months == (
        date(2024, 3, 1),
        date(2024, 4, 1),
    )


@pytest.mark.parametrize("window", [0, 30, 90])
def test_every_day_of_a_range_is_read_once_and_months_only_whole_and_final(window: int) -> None:
    now = datetime(2024, 7, 10, 12, tzinfo=UTC)
    start = date(2023, 12, 20)
    for since in _days(start, start + timedelta(days=75)):
        for until in _days(since, date(2024, 7, 20))[::3]:
            parts = split(since, until, window, now)
            read = []
            for part in (parts.head, parts.tail):
                read += _days(*part) if part else []
            months: list[date] = []
            if parts.months:
                months = sorted({d.replace(day=1) for d in _days(*parts.months)})
                assert parts.months == (months[0], months[-1])
            for month in months:
                assert final(month_end(month), window, now)
                read += _days(month, month_end(month))
            assert sorted(read) == _days(since, until), (since, until)
            if parts.head and parts.months:  # the head never holds a whole month
                assert parts.head[1] - parts.head[0] < timedelta(days=31)
                assert parts.head[1] == parts.months[0] - timedelta(days=1)


def test_rollups_sum_the_daily_rows_by_month_and_by_bucket() -> None:
    fact = derive(_record(status="recovered", recovered_at=T0 + timedelta(hours=1)))
    later = derive(
        _record(key_ref="in_2", first_failed_at=T0 + timedelta(days=1), last_event_at=T0)
    )
    moved = differences([(None, fact), (None, later)])
    assert fact.day.month == later.day.month and fact.day != later.day
    assert DAILY.roll_up(moved) == sorted((*k, *v) for k, v in moved.items())
    assert sorted(MONTHLY.roll_up(moved)) == sorted(
        [
            ("acme", "USD", date(2026, 3, 1), "stripe", "SOFT", f.path, f.ttr_bucket, *f.sums)
            for f in (fact, later)
        ]
    )
    assert [row[:4] for row in DAILY_TTR.roll_up(moved)] == [
        ("acme", "USD", fact.day, fact.ttr_bucket),
        ("acme", "USD", later.day, NO_BUCKET),
    ]
    # A fact moved to another day of its month: two daily rows move, its month's row not.
    shifted = derive(
        _record(
            status="recovered",
            first_failed_at=T0 + timedelta(days=1),
            recovered_at=T0 + timedelta(days=1, hours=1),
        )
    )
    moved = differences([(fact, shifted)])
    assert [len(rollup.roll_up(moved)) for rollup in ROLLUPS] == [2, 0, 2]


def test_a_rebuild_copies_and_swaps_every_table_the_model_writes() -> None:
    assert set(TABLES) <= set(plan(["metrics_daily"]).tables)
