"""Card usage and the retry gate: card keys, attempt counting, counters, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paywatch.recovery.ledger import (
    AttemptSource,
    CardAttempt,
    CardLedger,
    card_key,
    observed_attempts,
)
from paywatch.recovery.limits import earliest, retry_gate
from paywatch.recovery.rules import Action, Verdict, rulebook
from paywatch.recovery.state import Saga, Timer, TimerPurpose
from paywatch.recovery.tenant_policy import RetryOwner, TenantPolicy
from paywatch.schemas.models import EventType, PaymentEvent, PaymentMethod, RuleRef

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
CARD = "acme/fp/fp_1"
PAYWATCH_OWNS = TenantPolicy(owners={"stripe": RetryOwner.PAYWATCH})
SOFT = Verdict(action=Action.RETRY, rule=RuleRef(id="visa.category2", edition="e", source="s"))


def failure(
    n: int, *, minutes: float = 0, attempt: int | None = None, **kw: object
) -> PaymentEvent:
    return PaymentEvent.model_validate(
        {
            "event_id": f"e{n}",
            "type": EventType.PAYMENT_FAILED,
            "tenant": "acme",
            "provider": "stripe",
            "source_type": "test",
            "occurred_at": T0 + timedelta(minutes=minutes),
            "invoice_ref": "in_1",
            "amount_minor": 4900,
            "currency": "USD",
            "attempt": attempt,
            **kw,
        }
    )


def attempt(n: int, at: datetime, *, amount: int = 4900, invoice: str = "in_other") -> CardAttempt:
    return CardAttempt(
        id=f"a{n}",
        card=CARD,
        invoice_ref=invoice,
        provider="stripe",
        source=AttemptSource.PROVIDER,
        at=at,
        amount_minor=amount,
        currency="USD",
    )


def saga(*entries: CardAttempt, network: str | None = "visa", **kw: object) -> Saga:
    deadline = Timer(id="d", due_at=T0 + timedelta(days=30), purpose=TimerPurpose.DEADLINE)
    base = {
        "tenant": "acme",
        "invoice_ref": "in_1",
        "provider": "stripe",
        "card": CARD,
        "network": network,
        "verdict": SOFT,
        "amount_minor": 4900,
        "currency": "USD",
        "opened_at": T0,
        "pending": (deadline,),
        "attempts": (attempt(-1, T0, invoice="in_1"),),  # this invoice's first failure
        "ledger": CardLedger(card=CARD, entries=entries),
    }
    return Saga.model_validate({**base, **kw})


def test_card_key_prefers_fingerprint_then_brand_last4_expiry() -> None:
    full = PaymentMethod(brand="Visa", last4="4242", exp_month=3, exp_year=2030, fingerprint="fp9")
    assert card_key("acme", full) == "acme/fp/fp9"
    no_fp = full.model_copy(update={"fingerprint": None})
    assert card_key("acme", no_fp) == "acme/card/visa/4242/2030-03"
    assert card_key("acme", no_fp.model_copy(update={"exp_year": None})) is None
    assert card_key("acme", None) is None


def test_one_authorization_reported_three_times_is_one_attempt() -> None:
    first = observed_attempts((), failure(1, minutes=0), CARD)
    assert [a.id for a in first] == ["e1"]
    # charge.failed + payment_intent.payment_failed + invoice.payment_failed, seconds apart.
    assert observed_attempts(first, failure(2, minutes=0.2), CARD) == ()
    (number,) = observed_attempts(first, failure(3, minutes=0.5, attempt=1), CARD)
    assert (number.counted, number.attempt) == (False, 1)  # records that attempt 1 was seen
    # The next automatic retry, a day later, is another attempt (and only that).
    later = observed_attempts((*first, number), failure(4, minutes=24 * 60, attempt=2), CARD)
    assert [(a.id, a.counted) for a in later] == [("e4", True)]


def test_distinct_attempt_numbers_are_distinct_attempts_even_close_together() -> None:
    first = observed_attempts((), failure(1, attempt=1), CARD)
    assert [
        a.attempt for a in observed_attempts(first, failure(2, minutes=0.1, attempt=2), CARD)
    ] == [2]


def test_a_provider_counter_ahead_of_what_was_seen_adds_the_missing_attempts() -> None:
    added = observed_attempts((), failure(7, minutes=60, attempt=3), CARD)
    assert [(a.id, a.attempt) for a in added] == [("e7", 3), ("e7#gap1", 1), ("e7#gap2", 2)]
    assert {a.at for a in added} == {T0 + timedelta(minutes=60)}


def test_an_unnumbered_attempt_does_not_hide_a_missing_number() -> None:
    # Attempt 3 reported without its number, then attempt 2 with it: attempt 1 happened too.
    third = observed_attempts((), failure(3, minutes=120), CARD)
    second = observed_attempts(third, failure(2, minutes=60, attempt=2), CARD)
    assert [(a.id, a.attempt) for a in second] == [("e2", 2), ("e2#gap1", 1)]
    sibling = observed_attempts(third + second, failure(4, minutes=120.5, attempt=3), CARD)
    assert [(a.id, a.counted) for a in sibling] == [("e4", False)]


def test_a_paywatch_retry_outcome_adds_nothing() -> None:
    assert observed_attempts((), failure(1, paywatch_retry=True), CARD) == ()


def test_ledger_add_is_idempotent_by_id_and_card() -> None:
    ledger = CardLedger(card=CARD).add([attempt(1, T0), attempt(1, T0)])
    assert ledger.add([attempt(1, T0)]) is ledger
    other = attempt(2, T0).model_copy(update={"card": "acme/fp/other"})
    assert [e.id for e in ledger.add([other]).entries] == ["a1"]


def test_earliest_is_when_the_oldest_excess_attempt_leaves_the_window() -> None:
    (visa,) = rulebook().limits("visa")  # at most 20 prior attempts in 30 days
    times = [T0 + timedelta(hours=h) for h in range(21)]
    assert earliest(times[:20], visa) is None
    assert earliest(times, visa) == T0 + timedelta(days=30)


def test_visa_reattempt_limit_defers_the_retry_edition_20_vs_15() -> None:
    now = T0 + timedelta(days=2)
    # 16 attempts on the card in the last 30 days (other invoices, this one's first failure).
    entries = [attempt(i, T0 - timedelta(days=10) + timedelta(hours=i)) for i in range(15)]
    gate = retry_gate(saga(*entries), now, PAYWATCH_OWNS)
    assert gate.allowed_at == now  # 16 prior <= 20: the 17th attempt is reattempt 16
    old = PAYWATCH_OWNS.model_copy(update={"visa_edition": "visa-rules-2021-04"})
    gate = retry_gate(saga(*entries), now, old)
    assert gate.rule.id == "visa.reattempts" and gate.rule.edition == "visa-rules-2021-04"
    # 16 > 15: the oldest must leave the window: day -10 + 30 days.
    assert gate.allowed_at == T0 + timedelta(days=20)


def test_mastercard_ten_declines_in_24_hours() -> None:
    now = T0 + timedelta(hours=2)
    entries = [attempt(i, T0 - timedelta(hours=20) + timedelta(hours=i)) for i in range(9)]
    gate = retry_gate(saga(*entries, network="mastercard"), now, PAYWATCH_OWNS)
    assert gate.rule.id == "mastercard.declines_24h"
    assert gate.allowed_at == T0 + timedelta(hours=4)  # the oldest (T0-20h) leaves at T0+4h
    assert (
        retry_gate(saga(*entries[:8], network="mastercard"), now, PAYWATCH_OWNS).allowed_at == now
    )


def test_mastercard_35_attempts_in_30_days_for_the_same_amount() -> None:
    now = T0 + timedelta(days=1)
    start = T0 - timedelta(days=25)
    same = [attempt(i, start + timedelta(days=i * 0.5)) for i in range(34)]
    gate = retry_gate(saga(*same, network="mastercard"), now, PAYWATCH_OWNS)
    assert gate.rule.id == "mastercard.same_amount_30d"
    assert gate.allowed_at == start + timedelta(days=30)
    other_amount = [a.model_copy(update={"amount_minor": 1000}) for a in same]
    assert retry_gate(saga(*other_amount, network="mastercard"), now, PAYWATCH_OWNS).allowed_at == (
        now
    )


def test_an_unknown_network_is_held_to_every_counter() -> None:
    now = T0 + timedelta(hours=2)
    entries = [attempt(i, T0 - timedelta(hours=1)) for i in range(9)]
    assert retry_gate(saga(*entries, network="visa"), now, PAYWATCH_OWNS).allowed_at == now
    assert retry_gate(saga(*entries, network=None), now, PAYWATCH_OWNS).rule.id == (
        "mastercard.declines_24h"
    )


def test_gate_refusals_name_their_rule() -> None:
    now = T0 + timedelta(days=1)
    stop = RuleRef(id="mastercard.mac.03", edition="e", source="s")
    marker = attempt(9, T0 - timedelta(days=3)).model_copy(update={"counted": False, "stop": stop})
    cases = [
        (retry_gate(saga(), now, TenantPolicy()), "tenant.retry_owner"),
        (retry_gate(saga(provider_retry_at=now), now, PAYWATCH_OWNS), "paywatch.provider_retries"),
        (retry_gate(saga(stop=stop), now, PAYWATCH_OWNS), "mastercard.mac.03"),
        (retry_gate(saga(marker), now, PAYWATCH_OWNS), "mastercard.mac.03"),
        (retry_gate(saga(needs_update=True), now, PAYWATCH_OWNS), "visa.category2"),
        (retry_gate(saga(verdict=None), now, PAYWATCH_OWNS), "paywatch.no_advice"),
    ]
    for gate, rule_id in cases:
        assert (gate.allowed_at, gate.rule.id) == (None, rule_id)
    # A stop marker older than 30 days no longer blocks.
    old = marker.model_copy(update={"at": T0 - timedelta(days=31)})
    assert retry_gate(saga(old), now, PAYWATCH_OWNS).allowed_at == now


def test_tenant_budget_counts_provider_attempts_too() -> None:
    own = tuple(attempt(i, T0 + timedelta(hours=i), invoice="in_1") for i in range(5))
    fewer = retry_gate(saga(attempts=own[:4]), T0 + timedelta(days=1), PAYWATCH_OWNS)
    assert fewer.allowed_at == T0 + timedelta(days=1)  # 3 reattempts made, a 4th may go
    gate = retry_gate(saga(attempts=own), T0 + timedelta(days=1), PAYWATCH_OWNS)
    assert (gate.allowed_at, gate.rule.id) == (None, "tenant.max_retries")  # 4 reattempts made


def test_without_the_cards_ledger_the_gate_does_not_know() -> None:
    gate = retry_gate(saga(ledger=None), T0, PAYWATCH_OWNS)
    assert (gate.known, gate.allowed_at) == (False, None)
    wrong = CardLedger(card="acme/fp/another")
    assert retry_gate(saga(ledger=wrong), T0, PAYWATCH_OWNS).known is False


def test_a_retry_the_counters_push_past_the_deadline_does_not_go() -> None:
    deadline = Timer(id="d", due_at=T0 + timedelta(days=3), purpose=TimerPurpose.DEADLINE)
    gate = retry_gate(
        saga(not_before=T0 + timedelta(days=4), pending=(deadline,)), T0, PAYWATCH_OWNS
    )
    assert (gate.allowed_at, gate.rule.id) == (None, "visa.category2")
