"""A scaled saga clock never overflows on old or far provider times (PAYWATCH_TIME_SCALE)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paywatch.recovery.clock import SPAN, SagaClock

ANCHOR = datetime(2026, 12, 1, tzinfo=UTC)
DEMO = SagaClock(scale=86400, anchor=ANCHOR)


def test_a_provider_time_months_before_the_anchor_saturates_instead_of_raising() -> None:
    # Stripe's fixed retry date in the test builders, 2025-06-18, is ~166 days before:
    # 166 * 86400 days before the anchor is before year 1 (OverflowError before the bound).
    old = datetime(2025, 6, 18, tzinfo=UTC)
    assert DEMO.to_saga(old) == ANCHOR - SPAN
    assert DEMO.to_saga(datetime(2035, 1, 1, tzinfo=UTC)) == ANCHOR + SPAN


def test_times_near_the_anchor_convert_exactly_both_ways() -> None:
    wall = ANCHOR + timedelta(seconds=7, microseconds=250)
    saga = DEMO.to_saga(wall)
    assert saga == ANCHOR + timedelta(days=7, seconds=250 * 86400 / 1_000_000)
    assert DEMO.to_wall(saga) == wall


def test_scale_one_is_the_identity_whatever_the_time() -> None:
    far = datetime(1980, 1, 1, tzinfo=UTC)
    assert SagaClock().to_saga(far) == far
