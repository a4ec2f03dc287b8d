"""The risk feature fold: examples, bounds, and properties checked against a naive oracle.

The oracle recomputes the features from the whole list of events at once (each invoice's
latest failure and latest close, failures counted by day), without the fold's buckets,
ledger or caps; the fold must agree with it whatever the arrival order and redeliveries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paywatch.risk import features as rf
from paywatch.risk.features import (
    FEATURE_NAMES,
    MAX_ENCODED,
    CustomerFeatures,
    decode,
    encode,
    evolve,
    open_invoices,
    ref_key,
    vector,
)
from paywatch.risk.renewals import MAX_RENEWALS, MAX_SUBS
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
E = EventType
CLOSES = {E.PAYMENT_SUCCEEDED: False, E.INVOICE_VOIDED: True, E.INVOICE_UNCOLLECTIBLE: True}
CLOSES[E.SUBSCRIPTION_CANCELED] = True
_ids = iter(range(10**9))


def event(
    type: EventType = E.PAYMENT_FAILED,
    at: datetime = T0,
    invoice: str = "in_1",
    category: DeclineCategory | None = DeclineCategory.SOFT,
    **fields: Any,
) -> PaymentEvent:
    """A PaymentEvent of customer cus_1 (a fresh event id unless one is given)."""
    fields.setdefault("event_id", f"ev_{next(_ids)}")
    decline = Decline(category=category) if category and type is E.PAYMENT_FAILED else None
    values: dict[str, Any] = {
        "type": type,
        "tenant": "acme",
        "provider": "stripe",
        "source_type": "invoice.payment_failed",
        "occurred_at": at,
        "customer_ref": "cus_1",
        "invoice_ref": invoice,
        "decline": decline,
    }
    return PaymentEvent(**(values | fields))


def fold(events: list[PaymentEvent]) -> CustomerFeatures:
    state = None
    for e in events:
        state = evolve(state, e)
    assert state is not None
    return state


# --- examples ---------------------------------------------------------------------------


def test_vector_names_are_fixed_and_ordered() -> None:
    v = vector(fold([event()]), T0)
    assert tuple(v) == FEATURE_NAMES
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert all(isinstance(x, float) and math.isfinite(x) for x in v.values())


def test_failures_land_in_their_own_day_windows_even_out_of_order() -> None:
    state = fold([event(at=T0 - 2 * DAY), event(at=T0 - 40 * DAY), event(at=T0 - 10 * DAY)])
    v = vector(state, T0)
    assert (v["failures_7d"], v["failures_30d"], v["failures_90d"]) == (1, 2, 3)
    assert vector(state, T0 + 30 * DAY)["failures_30d"] == 0  # windows are as of now


def test_an_event_past_the_horizon_only_moves_lifetime_counters() -> None:
    state = fold([event(at=T0), event(at=T0 - 95 * DAY, invoice="in_old")])
    assert state.failures == 2
    assert [d.day for d in state.days] == [rf.us(T0) // rf.DAY_US]
    v = vector(state, T0)
    assert v["failures_90d"] == 1
    newer = evolve(state, event(at=T0 + 100 * DAY, type=E.OTHER))
    assert newer.days == ()  # pruned to the 90 days before the newest event


def test_the_horizon_is_the_90_days_up_to_the_newest_event() -> None:
    state = fold([event(at=T0), event(at=T0 - 89 * DAY), event(at=T0 - 90 * DAY)])
    assert vector(state, T0 - 2 * DAY)["failures_90d"] == 1  # the day 90 back is gone
    assert vector(state, T0)["failures_90d"] == 2


def test_success_recovers_and_void_loses() -> None:
    state = fold([event(at=T0, invoice="a"), event(at=T0, invoice="b")])
    state = evolve(state, event(E.PAYMENT_SUCCEEDED, T0 + DAY, "a"))
    state = evolve(state, event(E.INVOICE_VOIDED, T0 + 2 * DAY, "b"))
    v = vector(state, T0 + 3 * DAY)
    assert v["open_invoices"] == 0
    assert (v["recoveries_7d"], v["invoices_recovered"], v["invoices_lost"]) == (1, 1, 1)
    assert v["recovery_rate"] == pytest.approx(2 / 4)


def test_a_success_seen_before_its_older_failure_still_recovers_it() -> None:
    state = fold([event(E.PAYMENT_SUCCEEDED, T0 + DAY, "a"), event(at=T0, invoice="a")])
    assert open_invoices(state) == frozenset()
    assert vector(state, T0 + DAY)["recoveries_7d"] == 1


def test_a_failure_after_the_success_reopens_and_uncounts_the_recovery() -> None:
    state = fold([event(at=T0, invoice="a"), event(E.PAYMENT_SUCCEEDED, T0 + DAY, "a")])
    state = evolve(state, event(at=T0 + 5 * DAY, invoice="a"))
    v = vector(state, T0 + 6 * DAY)
    assert open_invoices(state) == {ref_key("a")}
    assert (v["recoveries_7d"], v["invoices_recovered"]) == (0, 0)
    assert v["days_since_open_failure"] == 1  # the new episode, not the first failure


def test_amount_at_risk_is_in_the_latest_currency_only() -> None:
    state = fold(
        [
            event(at=T0, invoice="a", amount_minor=9_999, currency="usd", attempt=3),
            event(at=T0 + DAY, invoice="b", amount_minor=500, currency="eur", attempt=1),
            event(at=T0 + DAY, invoice="c", amount_minor=700, currency="eur"),
        ]
    )
    v = vector(state, T0 + 2 * DAY)
    assert v["amount_at_risk_log10"] == pytest.approx(math.log10(1 + 1_200))
    assert v["other_currency_open"] == 1
    assert v["open_attempts"] == 3 + 1 + 1  # no attempt given: at least one was burned
    assert v["days_since_open_failure"] == 2


def test_days_since_success_and_the_category_mix() -> None:
    events = [event(category=DeclineCategory.HARD), event(category=None), event()]
    v = vector(fold(events), T0 + DAY)
    assert v["days_since_success"] == 15  # none seen: neutral, not "a year ago"
    assert (v["hard_share_90d"], v["unknown_share_90d"]) == pytest.approx((1 / 3, 1 / 3))
    paid = fold(
        [event(E.PAYMENT_SUCCEEDED, T0 - 3 * DAY), event(E.PAYMENT_SUCCEEDED, T0 - 9 * DAY)]
    )
    assert vector(paid, T0)["days_since_success"] == 3


@pytest.mark.parametrize(
    ("now", "months", "soon", "expired"),
    [
        (datetime(2026, 1, 15, tzinfo=UTC), 2, 0.0, 0.0),
        (datetime(2026, 3, 5, tzinfo=UTC), 0, 1.0, 0.0),  # works until 1 April
        (datetime(2026, 4, 1, tzinfo=UTC), -1, 0.0, 1.0),
        (datetime(2030, 4, 1, tzinfo=UTC), -24, 0.0, 1.0),  # clamped
    ],
)
def test_card_expiry_as_of_now(now: datetime, months: int, soon: float, expired: float) -> None:
    card = PaymentMethod(exp_month=3, exp_year=26)  # two-digit year: 2026
    older = PaymentMethod(exp_month=1, exp_year=2020)
    state = fold(
        [
            event(E.PAYMENT_METHOD_UPDATED, T0, payment_method=card),
            event(E.PAYMENT_METHOD_UPDATED, T0 - DAY, payment_method=older),  # late, ignored
        ]
    )
    v = vector(state, now)
    assert (v["card_months_to_expiry"], v["card_expiring_30d"], v["card_expired"]) == (
        months,
        soon,
        expired,
    )


def test_open_invoices_are_capped_and_the_oldest_dropped() -> None:
    events = [event(at=T0 + i * timedelta(minutes=1), invoice=f"in_{i}") for i in range(205)]
    state = fold(events)
    assert len(open_invoices(state)) == rf.MAX_OPEN
    assert state.dropped == 5
    assert ref_key("in_0") not in open_invoices(state)
    assert ref_key("in_204") in open_invoices(state)


def test_providers_are_capped() -> None:
    state = fold([event(provider=f"p{i:02}") for i in range(40)])
    assert state.providers == tuple(f"p{i:02}" for i in range(16))
    assert vector(state, T0)["providers"] == 16


def test_redelivery_is_ignored_within_the_last_64_ids_only() -> None:
    first = event(event_id="ev_same")
    state = fold([first, first])
    assert state.failures == 1
    state = fold([first, *(event(E.OTHER) for _ in range(64)), first])
    assert state.failures == 2  # documented limit: only the last 64 ids are kept


def test_decode_round_trips_and_refuses_other_formats() -> None:
    state = fold([event(), event(E.PAYMENT_SUCCEEDED, T0 + DAY, currency="usd")])
    assert decode(encode(state)) == state
    with pytest.raises(ValueError, match="format"):
        decode(b"\x02" + encode(state)[1:])


# --- properties against the oracle ------------------------------------------------------

KINDS = [E.PAYMENT_FAILED] * 4 + [*CLOSES] + [E.PAYMENT_SUCCEEDED, E.PAYMENT_METHOD_UPDATED]


# Window and horizon edges are drawn often, and ties (same instant) are common.
EDGES = [0, 1, 6, 7, 8, 29, 30, 31, 60, 89, 90, 91, 120]
DAYS = st.sampled_from(EDGES) | st.integers(0, 120)


@st.composite
def histories(draw: st.DrawFn) -> list[PaymentEvent]:
    """Up to 40 distinct events over 120 days on 6 invoices, in time order."""
    n = draw(st.integers(1, 40))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from([*KINDS, E.OTHER]))
        at = T0 + draw(DAYS) * DAY + draw(st.sampled_from([0, 12])) * timedelta(hours=1)
        exp = draw(st.tuples(st.integers(1, 12), st.integers(2024, 2028)))
        out.append(
            event(
                kind,
                at,
                f"in_{draw(st.integers(0, 5))}",
                draw(st.sampled_from([*DeclineCategory, None])),
                event_id=f"h{i}",
                attempt=draw(st.none() | st.integers(0, 30)),
                amount_minor=draw(st.none() | st.integers(0, 10**6)),
                currency=draw(st.sampled_from([None, "usd", "eur"])),
                provider=draw(st.sampled_from(["stripe", "paypal"])),
                payment_method=PaymentMethod(exp_month=exp[0], exp_year=exp[1]),
            )
        )
    return sorted(out, key=lambda e: e.occurred_at)


@dataclass
class Oracle:
    """The features recomputed from all the events at once."""

    events: list[PaymentEvent]
    now: datetime

    def in_window(self, at: datetime, n: int) -> bool:
        today, day = self.now.date(), at.date()
        newest = max(e.occurred_at for e in self.events).date()
        return 0 <= (today - day).days < n and (newest - day).days < rf.HORIZON_DAYS

    def invoices(self) -> dict[str, tuple[datetime | None, tuple[datetime, bool] | None]]:
        out: dict[str, tuple[datetime | None, tuple[datetime, bool] | None]] = {}
        for e in self.events:
            failed, closed = out.get(e.invoice_ref, (None, None))
            if e.type is E.PAYMENT_FAILED:
                failed = max(failed or e.occurred_at, e.occurred_at)
            elif e.type in CLOSES:
                closed = max(
                    closed or (e.occurred_at, CLOSES[e.type]), (e.occurred_at, CLOSES[e.type])
                )
            if failed or closed:
                out[e.invoice_ref] = (failed, closed)
        return out

    def open(self) -> frozenset[int]:
        return frozenset(
            ref_key(ref)
            for ref, (failed, closed) in self.invoices().items()
            if failed and (closed is None or failed > closed[0])
        )

    def outcomes(self) -> list[tuple[datetime, bool]]:
        return [
            closed
            for failed, closed in self.invoices().values()
            if failed and closed and failed <= closed[0]
        ]

    def days_since_open_failure(self) -> float:
        """Days since the first failure after the latest close of the oldest open invoice."""
        firsts = []
        for ref, (failed, closed) in self.invoices().items():
            if failed and (closed is None or failed > closed[0]):
                firsts.append(
                    min(
                        e.occurred_at
                        for e in self.events
                        if e.type is E.PAYMENT_FAILED
                        and e.invoice_ref == ref
                        and (closed is None or e.occurred_at > closed[0])
                    )
                )
        first = min(firsts, default=None)
        return 0.0 if first is None else min(max((self.now - first) / DAY, 0.0), 365.0)

    def expected(self) -> dict[str, float]:
        failures = [e for e in self.events if e.type is E.PAYMENT_FAILED]
        out: dict[str, float] = {}
        for n in (7, 30, 90):
            out[f"failures_{n}d"] = sum(self.in_window(e.occurred_at, n) for e in failures)
            out[f"recoveries_{n}d"] = sum(
                self.in_window(at, n) for at, lost in self.outcomes() if not lost
            )
        out["invoices_lost"] = sum(lost for _, lost in self.outcomes())
        out["invoices_recovered"] = len(self.outcomes()) - out["invoices_lost"]
        out["open_invoices"] = len(self.open())
        return out


def _oracle_keys() -> list[str]:
    windows = [f"{w}_{n}d" for w in ("failures", "recoveries") for n in (7, 30, 90)]
    return [*windows, "invoices_lost", "invoices_recovered", "open_invoices"]


NOW_OFFSETS = st.sampled_from([e + d for e in EDGES for d in (-1, 0, 1)]) | st.integers(0, 130)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(histories(), NOW_OFFSETS, st.randoms(use_true_random=False))
def test_fold_matches_the_oracle_in_any_order(
    events: list[PaymentEvent], offset: int, rnd: Any
) -> None:
    now = T0 + offset * DAY
    shuffled = list(events)
    rnd.shuffle(shuffled)
    oracle = Oracle(events, now)
    for order in (events, shuffled):
        state = fold(order)
        v = vector(state, now)
        assert {k: v[k] for k in _oracle_keys()} == oracle.expected()
        assert open_invoices(state) == oracle.open()


@PROPERTY
@given(histories(), NOW_OFFSETS, st.randoms(use_true_random=False))
def test_days_since_open_failure_is_exact_in_time_order_and_never_more_otherwise(
    events: list[PaymentEvent], offset: int, rnd: Any
) -> None:
    now = T0 + offset * DAY
    expected = Oracle(events, now).days_since_open_failure()
    assert vector(fold(events), now)["days_since_open_failure"] == pytest.approx(expected)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert vector(fold(shuffled), now)["days_since_open_failure"] <= expected + 1e-9


# Every feature is order-free except days_since_open_failure (see the module docstring).
ORDER_FREE = [name for name in FEATURE_NAMES if name != "days_since_open_failure"]


@PROPERTY
@given(histories(), NOW_OFFSETS, st.randoms(use_true_random=False))
def test_any_permutation_gives_the_same_features(
    events: list[PaymentEvent], offset: int, rnd: Any
) -> None:
    now = T0 + offset * DAY
    shuffled = list(events)
    rnd.shuffle(shuffled)
    a, b = fold(events), fold(shuffled)
    va, vb = vector(a, now), vector(b, now)
    assert {k: va[k] for k in ORDER_FREE} == {k: vb[k] for k in ORDER_FREE}
    assert (a.days, open_invoices(a), a.failures) == (b.days, open_invoices(b), b.failures)


@PROPERTY
@given(histories(), st.data())
def test_redelivered_events_change_nothing(events: list[PaymentEvent], data: st.DataObject) -> None:
    stream = list(events)
    for _ in range(data.draw(st.integers(1, 20))):
        again = data.draw(st.sampled_from(events))
        first = stream.index(again)
        stream.insert(data.draw(st.integers(first + 1, len(stream))), again)
    assert fold(stream) == fold(events)


# --- bounds -----------------------------------------------------------------------------

WIDE = "\U0001f600" * 255  # 255 characters, 1,020 UTF-8 bytes: the largest Ref


def _adversarial(n: int) -> list[PaymentEvent]:
    """Thousands of invoices (open and closed), wide providers and currencies, every
    category, the largest amounts and attempts, spread over 400 days."""
    out = []
    for i in range(n):
        at = T0 + (i % 400) * DAY + i * timedelta(seconds=1)
        kind = E.PAYMENT_FAILED if i % 3 else E.PAYMENT_SUCCEEDED
        category = list(DeclineCategory)[i % 5]
        out.append(
            event(
                kind,
                at,
                WIDE[:250] + str(i),
                category,
                provider=WIDE[:-3] + f"{i % 40:03}",
                currency=WIDE[:-3] + f"{i % 7:03}",
                amount_minor=10**15,
                attempt=100,
                event_id=WIDE[:-6] + f"{i:06}",
                payment_method=PaymentMethod(exp_month=12, exp_year=9999),
                subscription_ref=WIDE[:-3] + f"{i % 11:03}",  # more than risk.renewals keeps
            )
        )
    return out


def test_encoded_size_stays_under_the_bound_for_adversarial_streams() -> None:
    state = fold(_adversarial(5_000))
    value = encode(state)
    assert len(value) <= MAX_ENCODED
    assert decode(value) == state
    assert len(state.days) <= rf.HORIZON_DAYS and len(state.seen) == rf.MAX_SEEN
    assert len(open_invoices(state)) == rf.MAX_OPEN
    assert len(state.invoices) - rf.MAX_OPEN == rf.MAX_CLOSED
    assert len(state.providers) == rf.MAX_PROVIDERS
    assert len(state.subs) == MAX_SUBS and all(len(s.renewals) == MAX_RENEWALS for s in state.subs)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(300, 900), st.randoms(use_true_random=False))
def test_encoded_size_bound_holds_in_any_order(n: int, rnd: Any) -> None:
    events = _adversarial(n)
    rnd.shuffle(events)
    assert len(encode(fold(events))) <= MAX_ENCODED
