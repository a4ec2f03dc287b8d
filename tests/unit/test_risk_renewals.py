"""Subscription renewals and cards that will not reach them (risk.renewals), pure.

Cadence from the renewals (one per invoice cycle), the next renewal in calendar terms,
"at risk" when the card worked at the latest renewal and stops before the next, warned
once, in any order of events, within bounds; the CARD_EXPIRING event and the opt-in notice.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from paywatch.kafka.codec import make_codec
from paywatch.recovery.tenant_policy import CardExpiry, TenantPolicy
from paywatch.risk import renewals as rn
from paywatch.risk.features import FEATURE_NAMES, evolve, vector
from paywatch.risk.renewals import (
    SOURCE,
    Sub,
    at_risk,
    card_expiring,
    next_renewal,
    observe,
    renewal_ref,
    unwarned,
    watch,
)
from paywatch.schemas.models import MAX_REF, CommandType, EventType, PaymentEvent, PaymentMethod
from paywatch.settings import Settings
from paywatch.streams.card_expiry import notice

E = EventType


def ev(
    kind: EventType,
    at: datetime,
    invoice: str,
    *,
    sub: str | None = "sub_1",
    exp: tuple[int, int] | None = None,
    n: int = 0,
) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"{invoice}-{kind.value}-{at.isoformat()}-{n}",
        type=kind,
        tenant="t1",
        provider="stripe",
        source_type="test",
        occurred_at=at,
        customer_ref="cus_1",
        subscription_ref=sub,
        invoice_ref=invoice,
        payment_method=None if exp is None else PaymentMethod(exp_year=exp[0], exp_month=exp[1]),
    )


def fold(events: list[PaymentEvent]) -> tuple[Sub, ...]:
    subs: tuple[Sub, ...] = ()
    for e in events:
        subs = observe(subs, e)
    return subs


def monthly(first: datetime, n: int, sub: str = "sub_1") -> list[PaymentEvent]:
    out, at = [], first
    for i in range(n):
        out.append(ev(E.PAYMENT_SUCCEEDED, at, f"in_{sub}_{i}", sub=sub))
        at = rn._add_months(at, 1)
    return out


T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def test_a_monthly_subscription_renews_on_the_same_day_next_month() -> None:
    (sub,) = fold(monthly(T0, 3))
    assert next_renewal(sub) == datetime(2026, 4, 5, 10, 0, tzinfo=UTC)


def test_billing_on_the_31st_stays_at_the_month_end() -> None:
    days = (datetime(2026, 1, 31, 9, tzinfo=UTC), datetime(2026, 2, 28, 9, tzinfo=UTC))
    events = [ev(E.PAYMENT_SUCCEEDED, at, f"in_{at.month}") for at in days]
    events.append(ev(E.PAYMENT_SUCCEEDED, datetime(2026, 3, 31, 9, tzinfo=UTC), "in_3"))
    (sub,) = fold(events)
    assert next_renewal(sub) == datetime(2026, 4, 30, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("gap", "expected"),
    [(7, timedelta(days=7)), (365, None), (91, None), (182, None), (50, None)],
)
def test_cadences(gap: int, expected: timedelta | None) -> None:
    events = [ev(E.PAYMENT_SUCCEEDED, T0 + timedelta(days=gap * i), f"in_{i}") for i in range(3)]
    (sub,) = fold(events)
    last = T0 + timedelta(days=gap * 2)
    got = next_renewal(sub)
    if gap == 50:
        assert got is None  # irregular: no guess
    elif expected is not None:
        assert got == last + expected
    else:
        assert got is not None and got.day == last.day and got > last
        months = {91: 3, 182: 6, 365: 12}[gap]
        assert (got.year * 12 + got.month) - (last.year * 12 + last.month) == months


def test_one_renewal_or_a_canceled_subscription_predicts_nothing() -> None:
    assert next_renewal(fold(monthly(T0, 1))[0]) is None
    events = [*monthly(T0, 3), ev(E.SUBSCRIPTION_CANCELED, T0 + timedelta(days=70), "x")]
    assert next_renewal(fold(events)[0]) is None
    reactivated = [*events, ev(E.PAYMENT_SUCCEEDED, datetime(2026, 4, 5, 10, tzinfo=UTC), "y")]
    assert next_renewal(fold(reactivated)[0]) == datetime(2026, 5, 5, 10, tzinfo=UTC)


def test_a_failed_then_retried_invoice_is_one_renewal_at_its_first_event() -> None:
    events = [
        ev(E.PAYMENT_SUCCEEDED, T0, "in_0"),
        ev(E.PAYMENT_FAILED, T0 + timedelta(days=31), "in_1"),
        ev(E.PAYMENT_SUCCEEDED, T0 + timedelta(days=34), "in_1"),  # the retry
    ]
    (sub,) = fold(events)
    assert [t for _, t in sub.renewals] == [rn.us(T0), rn.us(T0 + timedelta(days=31))]


def test_a_ref_reused_for_every_cycle_still_gives_one_renewal_per_cycle() -> None:
    (sub,) = fold(
        [ev(E.PAYMENT_SUCCEEDED, T0 + timedelta(days=30 * i), "sub_ref") for i in range(3)]
    )
    assert len(sub.renewals) == 3 and next_renewal(sub) is not None


def test_at_risk_when_the_card_worked_at_the_last_renewal_and_stops_before_the_next() -> None:
    subs = fold(monthly(T0, 3))  # last 2026-03-05, next 2026-04-05
    now = datetime(2026, 3, 20, tzinfo=UTC)
    (item,) = at_risk(subs, (0, 2026, 3), now)  # works until 2026-04-01
    assert item.renews_at == datetime(2026, 4, 5, 10, tzinfo=UTC)
    assert item.card_ends == datetime(2026, 4, 1, tzinfo=UTC)
    assert at_risk(subs, (0, 2026, 4), now) == []  # still works on 2026-04-05
    assert at_risk(subs, (0, 2026, 1), now) == []  # already dead at the last renewal
    assert at_risk(subs, (0, 2026, 3), datetime(2026, 4, 6, tzinfo=UTC)) == []  # passed
    assert at_risk(subs, None, now) == []


def test_a_warning_is_recorded_once_and_only_for_its_renewal() -> None:
    subs = fold([*monthly(T0, 3), *monthly(T0 + timedelta(days=10), 3, sub="sub_2")])
    now = datetime(2026, 3, 20, tzinfo=UTC)
    items = at_risk(subs, (0, 2026, 3), now)
    assert [i.subscription_ref for i in items] == ["sub_1", "sub_2"]
    first = unwarned(subs, items)
    assert first is not None and first.subscription_ref == "sub_1"
    warned = observe(subs, card_expiring("t1", "cus_1", first, now))
    second = unwarned(warned, at_risk(warned, (0, 2026, 3), now))
    assert second is not None and second.subscription_ref == "sub_2"
    assert observe(warned, card_expiring("t1", "cus_1", first, now)) == warned  # idempotent
    # A provider's own CARD_EXPIRING is not paywatch's warning.
    theirs = card_expiring("t1", "cus_1", second, now).model_copy(update={"source_type": "x"})
    assert observe(warned, theirs) == warned


def test_the_feature_fold_keeps_renewals_and_a_card_update_ends_the_risk() -> None:
    events = [*monthly(T0, 3)]
    events[-1] = events[-1].model_copy(
        update={"payment_method": PaymentMethod(exp_year=2026, exp_month=3)}
    )
    features = None
    for e in events:
        features = evolve(features, e)
    assert features is not None
    now = datetime(2026, 3, 20, tzinfo=UTC)
    assert vector(features, now)["card_ends_before_renewal"] == 1.0
    assert "card_ends_before_renewal" in FEATURE_NAMES
    w = watch("t1", "cus_1", 2, features.subs, features.card, now)
    assert w is not None and w.partition == 2 and w.item.renews_at.month == 4
    assert rn.decode_watch(rn.encode_watch(w)) == w
    updated = evolve(
        features,
        ev(E.PAYMENT_METHOD_UPDATED, now, "none", sub=None, exp=(2029, 12)),
    )
    assert vector(updated, now)["card_ends_before_renewal"] == 0.0
    assert watch("t1", "cus_1", 2, updated.subs, updated.card, now) is None
    # The tick is not customer activity: only "warned" moves.
    assert w.item is not None
    tick = card_expiring("t1", "cus_1", w.item, now)
    after = evolve(features, tick)
    assert after.seen == features.seen and after.newest == features.newest
    assert watch("t1", "cus_1", 2, after.subs, after.card, now) is None


def test_any_order_of_the_same_events_gives_the_same_subscriptions() -> None:
    events = [
        *monthly(T0, 4),
        *monthly(T0 + timedelta(days=3), 3, sub="sub_2"),
        ev(E.PAYMENT_FAILED, T0 + timedelta(days=62), "in_sub_1_2"),
        ev(E.SUBSCRIPTION_CANCELED, T0 + timedelta(days=80), "in_sub_2_2", sub="sub_2"),
    ]
    want = fold(events)
    rnd = random.Random(7)
    for _ in range(50):
        shuffled = events[:]
        rnd.shuffle(shuffled)
        assert fold(shuffled) == want


def test_bounds_hold_for_many_subscriptions_and_renewals() -> None:
    wide = [
        ev(E.PAYMENT_SUCCEEDED, T0 + timedelta(days=i), f"in_{i}", sub="W" * 240 + f"{i % 30:03}")
        for i in range(400)
    ]
    subs = fold(wide)
    assert len(subs) == rn.MAX_SUBS and all(len(s.renewals) <= rn.MAX_RENEWALS for s in subs)
    assert {s.ref[-3:] for s in subs} == {f"{i % 30:03}" for i in range(392, 400)}  # newest
    (one,) = fold(monthly(T0, 10))
    assert [t for _, t in one.renewals] == [rn.us(e.occurred_at) for e in monthly(T0, 10)[-4:]]


def test_the_warning_event_is_valid_stable_and_encodable() -> None:
    subs = fold(monthly(T0, 3))
    (item,) = at_risk(subs, (0, 2026, 3), datetime(2026, 3, 20, tzinfo=UTC))
    now = datetime(2026, 3, 22, tzinfo=UTC)
    event = card_expiring("t1", "cus_1", item, now)
    again = card_expiring("t1", "cus_1", item, now + timedelta(minutes=1))
    assert event.event_id == again.event_id and event.event_id.startswith(SOURCE)
    assert event.type is EventType.CARD_EXPIRING and event.renews_at == item.renews_at
    assert event.invoice_ref == "renewal:sub_1"
    codec = make_codec(Settings())
    topic = "payments.events"
    assert codec.decode(codec.encode(event, topic=topic), PaymentEvent, topic=topic) == event
    long = renewal_ref("s" * MAX_REF)
    assert len(long) <= MAX_REF and long.startswith("renewal:")


def test_the_notice_is_opt_in_and_names_its_rule() -> None:
    subs = fold(monthly(T0, 3))
    (item,) = at_risk(subs, (0, 2026, 3), datetime(2026, 3, 20, tzinfo=UTC))
    event = card_expiring("t1", "cus_1", item, datetime(2026, 3, 22, tzinfo=UTC))
    assert notice(event, TenantPolicy()) is None
    policy = TenantPolicy(card_expiry=CardExpiry(notify=True, template="card_soon"))
    command = notice(event, policy)
    assert command is not None
    assert command.type is CommandType.NOTIFY_CUSTOMER and command.template == "card_soon"
    assert command.rule.id == "tenant.card_expiry" and policy.revision in command.rule.edition
    assert command.customer_ref == "cus_1" and command.subscription_ref == "sub_1"
    assert "03/2026" in command.reason and "2026-04-05" in command.reason


def test_the_new_policy_options_leave_existing_revisions_alone() -> None:
    # Policies logged before the options existed keep their revision (no reconcile storm).
    assert TenantPolicy().revision == "4be75a3f0d6a6cae"
    assert TenantPolicy(card_expiry=CardExpiry(lead_days=3)).revision != TenantPolicy().revision
