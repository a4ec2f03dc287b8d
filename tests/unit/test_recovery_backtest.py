"""The policy backtest core: a history replayed through the saga core under two policies.

Pure: hand-made histories and the seeded population generator (paywatch.risk.population),
retry outcomes from the sandbox simulator's model with explicit success tables.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paywatch.recovery.backtest import compare, comparison_json, prepare, run
from paywatch.recovery.backtest_figures import network_violations
from paywatch.recovery.ledger import AttemptSource, CardAttempt
from paywatch.recovery.rules import paywatch_rule, rulebook
from paywatch.recovery.simulator import SimulatorConfig
from paywatch.recovery.state import Saga
from paywatch.recovery.tenant_policy import RetryOwner, RetrySchedule, TenantPolicy
from paywatch.risk.population import generate
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
VISA = PaymentMethod(brand="visa", last4="4242", exp_month=4, exp_year=2030, fingerprint="fp_1")
DEFAULT = TenantPolicy()
NEVER = SimulatorConfig(0, dict.fromkeys(DeclineCategory, ((0, 0.0),)))
ALWAYS = SimulatorConfig(0, dict.fromkeys(DeclineCategory, ((0, 1.0),)))


def event(
    n: int,
    kind: EventType,
    at: datetime,
    *,
    invoice: str = "in_1",
    provider: str = "adyen",
    **fields: object,
) -> PaymentEvent:
    decline = None
    if kind is EventType.PAYMENT_FAILED:
        decline = Decline(
            code="insufficient_funds", category=DeclineCategory.SOFT, network="visa",
            network_code="51",
        )  # fmt: skip
    return PaymentEvent.model_validate(
        {
            "event_id": f"evt_{invoice}_{n}",
            "type": kind,
            "tenant": "acme",
            "provider": provider,
            "source_type": "test",
            "occurred_at": at,
            "customer_ref": f"cus_{invoice}",
            "invoice_ref": invoice,
            "amount_minor": 4900,
            "currency": "EUR",
            "decline": decline,
            "payment_method": VISA.model_copy(update={"fingerprint": f"fp_{invoice}"}),
            **fields,
        }
    )


def failures(count: int) -> list[PaymentEvent]:
    """`count` invoices failing once each, a day apart, on their own cards."""
    return [
        event(0, EventType.PAYMENT_FAILED, T0 + i * DAY, invoice=f"in_{i}") for i in range(count)
    ]


def population(customers: int = 400, seed: int = 3) -> tuple[PaymentEvent, ...]:
    return generate(customers, 12, seed, datetime(2025, 1, 1, tzinfo=UTC), tenant="acme").events


def test_a_candidate_with_fewer_retries_spends_fewer() -> None:
    history = failures(5)
    fewer = TenantPolicy(retry=RetrySchedule(days=(1,), max_retries=1))
    found = compare(history, DEFAULT, fewer, NEVER, T0 + 40 * DAY)
    # Every retry fails: the default spends its four reattempts per invoice, the candidate one.
    assert (found.running.retries, found.candidate.retries) == (20, 5)
    assert found.running.sagas == found.candidate.sagas == 5
    assert found.running.recovered == found.candidate.recovered == 0

    realistic = compare(population(), DEFAULT, fewer, SimulatorConfig(seed=1))
    assert 0 < realistic.candidate.retries < realistic.running.retries
    assert realistic.candidate.sagas == realistic.running.sagas  # same history, same sagas


def test_same_seed_same_answer_and_the_seed_matters() -> None:
    history = population()
    cheaper = TenantPolicy(retry=RetrySchedule(days=(1, 4), max_retries=2))
    first = compare(history, DEFAULT, cheaper, SimulatorConfig(seed=11))
    again = compare(list(reversed(history)), DEFAULT, cheaper, SimulatorConfig(seed=11))
    assert first == again  # and the order given does not matter: time order is replayed
    other = compare(history, DEFAULT, cheaper, SimulatorConfig(seed=12))
    assert other.running.recovered_by_retry != first.running.recovered_by_retry


def test_the_default_policy_breaks_no_network_rule_on_a_realistic_year() -> None:
    found = compare(population(600), DEFAULT, DEFAULT, SimulatorConfig(seed=5))
    assert found.running.retries > 100
    assert found.running.violations == 0 and found.running.listed_violations == ()
    assert found.running == found.candidate  # the same policy twice: the same figures


def test_the_violation_check_catches_a_retry_over_the_card_limits() -> None:
    """The audit is not the gate that decided: fed a card past Visa's 20 reattempts in 30
    days, a stop marker of another invoice and an early Mastercard retry, it says so."""
    book = rulebook()
    saga = Saga(
        tenant="acme", invoice_ref="in_1", card="acme/fp/fp_1", network="visa",
        amount_minor=4900, currency="EUR",
    )  # fmt: skip

    def attempt(n: int, at: datetime, **kw: object) -> CardAttempt:
        return CardAttempt.model_validate(
            {"id": f"a{n}", "card": "acme/fp/fp_1", "invoice_ref": "in_other",
             "provider": "adyen", "source": AttemptSource.PROVIDER, "at": at, **kw}
        )  # fmt: skip

    now = T0 + 29 * DAY
    within = [attempt(n, T0 + n * DAY) for n in range(20)]
    assert network_violations(within, saga, now, book) == []
    over = [*within, attempt(20, now - DAY)]
    assert [r.id for r in network_violations(over, saga, now, book)] == ["visa.reattempts"]
    stop = paywatch_rule("category.hard")
    marker = attempt(99, now - DAY, counted=False, stop=stop)
    assert network_violations([marker], saga, now, book) == [stop]
    wait = paywatch_rule("mastercard.mac.02")
    early = saga.model_copy(update={"not_before": now + DAY, "not_before_rule": wait})
    assert network_violations([], early, now, book) == [wait]


def test_a_history_with_provider_owned_retries() -> None:
    """Stripe retries by itself (its failures announce the next attempt): the backtest
    spends no paywatch retry, and the provider's own recovery is replayed as it happened."""

    def stripe(n: int, kind: EventType, day: int, **kw: object) -> PaymentEvent:
        return event(n, kind, T0 + day * DAY, provider="stripe", **kw)

    history = [
        stripe(1, EventType.PAYMENT_FAILED, 0, attempt=1, provider_retry_at=T0 + 3 * DAY),
        stripe(2, EventType.PAYMENT_FAILED, 3, attempt=2, provider_retry_at=T0 + 5 * DAY),
        stripe(3, EventType.PAYMENT_SUCCEEDED, 5, attempt=3),
    ]
    ours = TenantPolicy(owners={"stripe": RetryOwner.PAYWATCH})
    found = compare(history, DEFAULT, ours, ALWAYS)
    for figures in (found.running, found.candidate):
        assert figures.retries == 0 and figures.violations == 0
        assert (figures.recovered, figures.recovered_by_retry) == (1, 0)
        assert figures.median_days_to_recover == 5.0
        assert figures.revenue == {"EUR": 4900}


def test_paywatch_retry_outcomes_in_the_history_are_not_reused() -> None:
    history = [
        event(0, EventType.PAYMENT_FAILED, T0),
        event(1, EventType.PAYMENT_SUCCEEDED, T0 + DAY + timedelta(hours=1), paywatch_retry=True),
    ]
    assert prepare(history).skipped_outcomes == 1
    lost = run(prepare(history).events, DEFAULT, NEVER, T0 + 40 * DAY)
    assert (lost.recovered, lost.retries, lost.outcomes["exhausted"]) == (0, 4, 1)
    won = run(prepare(history).events, DEFAULT, ALWAYS, T0 + 40 * DAY)
    assert (won.recovered, won.recovered_by_retry, won.retries) == (1, 1, 1)
    assert won.median_days_to_recover is not None and 0.9 < won.median_days_to_recover < 1.5


def test_failures_after_a_backtest_recovery_are_echoes_not_new_episodes() -> None:
    """The generic provider's own next attempt (day 3) would not have happened had the
    day-1 retry recovered the invoice: it opens no second episode."""
    history = [
        event(0, EventType.PAYMENT_FAILED, T0, provider="generic"),
        event(1, EventType.PAYMENT_FAILED, T0 + 3 * DAY, provider="generic", attempt=2),
        event(2, EventType.PAYMENT_SUCCEEDED, T0 + 5 * DAY, provider="generic"),
        event(3, EventType.PAYMENT_FAILED, T0 + 35 * DAY, provider="generic"),  # next cycle
    ]
    found = run(prepare(history).events, DEFAULT, ALWAYS, T0 + 36 * DAY)
    assert found.echoes == 1
    assert found.sagas == 2 and found.recovered == 1 and found.outcomes["open"] == 1


def test_invoices_never_failing_are_left_out_and_the_answer_is_json() -> None:
    paid = event(9, EventType.PAYMENT_SUCCEEDED, T0, invoice="in_paid")
    history = [*failures(2), paid]
    found = compare(history, DEFAULT, DEFAULT, NEVER, T0 + 3 * DAY)
    assert found.history.given == 3 and len(found.history.events) == 2
    answer = comparison_json(found, tenant="acme", tenant_events=3, running_source="default")
    assert answer["running"]["source"] == "default" and answer["history"]["tenant_events"] == 3
    assert answer["candidate"]["outcomes"] == {
        "recovered": 0, "exhausted": 0, "canceled": 0, "open": 2,
    }  # fmt: skip
    assert answer["history"]["horizon"] == "2026-03-05T09:00:00Z"
