"""decide(): one test per rule, driven through the in-memory shell the Faust agent mirrors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paywatch.recovery import (
    AttemptSource,
    CardAttempt,
    DunningStep,
    FinalAction,
    PolicyChanged,
    RetryOwner,
    Saga,
    TenantPolicy,
    TimerFired,
    TimerPurpose,
    decide,
    ledger_card,
)
from paywatch.recovery.memory_shell import MemoryShell
from paywatch.schemas.models import (
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RecoveryCommand,
    SagaState,
)

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)  # a Monday, noon UTC
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
VISA = PaymentMethod(brand="visa", last4="4242", exp_month=1, exp_year=2030, fingerprint="fp_v")
MC = PaymentMethod(brand="mastercard", last4="4444", exp_month=1, exp_year=2030, fingerprint="fp_m")
NEW_CARD = PaymentMethod(brand="visa", last4="1881", exp_month=2, exp_year=2031, fingerprint="fp_n")
RETRY, NOTIFY = CommandType.RETRY_PAYMENT, CommandType.NOTIFY_CUSTOMER
REQUEST = CommandType.REQUEST_PAYMENT_METHOD_UPDATE
ON, OFF = SagaState.retrying, SagaState.awaiting_customer
SOFT = DeclineCategory.SOFT


def visa(code: str, category: DeclineCategory = SOFT) -> Decline:
    return Decline(category=category, network="visa", network_code=code)


def mc(mac: str | None, category: DeclineCategory = SOFT, code: str = "51") -> Decline:
    return Decline(category=category, network="mastercard", network_code=code, advice_code=mac)


def ev(
    n: int | str,
    kind: EventType = EventType.PAYMENT_FAILED,
    *,
    at: datetime = T0,
    provider: str = "adyen",
    invoice: str = "in_1",
    decline: Decline | None = None,
    pm: PaymentMethod | None = VISA,
    **kw: Any,
) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"evt_{n}",
        type=kind,
        tenant="acme",
        provider=provider,
        source_type="test",
        occurred_at=at,
        customer_ref="cus_1",
        invoice_ref=invoice,
        amount_minor=4900,
        currency="USD",
        decline=decline,
        payment_method=pm,
        **kw,
    )


def shell(**policy: Any) -> MemoryShell:
    return MemoryShell(TenantPolicy.model_validate(policy))


def saga(sh: MemoryShell, invoice: str = "in_1") -> Saga:
    return sh.sagas[("acme", invoice)]


def advance(sh: MemoryShell, until: datetime) -> None:
    """Fire timers in due order, as the shell's clock reaches each one."""
    while True:
        due = [t.due_at for s in sh.sagas.values() for t in s.pending if t.due_at <= until]
        if not due:
            return
        sh.fire_due(min(due))


def of(sh: MemoryShell, kind: CommandType) -> list[RecoveryCommand]:
    return [c for c in sh.commands if c.type is kind]


def edges(sh: MemoryShell) -> list[tuple[SagaState | None, SagaState, str]]:
    return [(t.from_state, t.to_state, t.rule.id) for t in sh.transitions]


def prior_attempts(sh: MemoryShell, card: str, times: list[datetime], amount: int = 4900) -> None:
    """Attempts other invoices made on `card`, as the card table holds them."""
    for i, at in enumerate(times):
        entry = CardAttempt(
            id=f"other_{i}",
            card=card,
            invoice_ref=f"in_other_{i}",
            provider="adyen",
            source=AttemptSource.PROVIDER,
            at=at,
            amount_minor=amount,
            currency="USD",
        )
        sh.cards.setdefault(card, {})[entry.id] = entry


def fail_every_retry(sh: MemoryShell, until: datetime, decline: Decline) -> None:
    """Advance time; each paywatch retry's outcome is a failure reported an hour later."""
    handled = 0
    while True:
        due = [t.due_at for s in sh.sagas.values() for t in s.pending if t.due_at <= until]
        if not due:
            return
        sh.fire_due(min(due))
        for cmd in of(sh, RETRY)[handled:]:
            outcome = ev(
                f"out_{cmd.command_id}", at=cmd.due_at, decline=decline, paywatch_retry=True
            )
            sh.receive(outcome, cmd.due_at + HOUR)
        handled = len(of(sh, RETRY))


# --- Visa --------------------------------------------------------------------------------


def test_stolen_card_is_never_retried_and_the_customer_is_asked_for_another() -> None:
    sh = shell()
    decision = sh.receive(ev(1, decline=visa("43", DeclineCategory.FRAUD)), T0)
    assert [(c.type, c.due_at) for c in decision.commands] == [(REQUEST, T0), (NOTIFY, T0)]
    request = decision.commands[0]
    assert (request.template, request.channel, request.rule.id) == (
        "update_payment_method",
        "email",
        "visa.category1",
    )
    assert edges(sh) == [
        (None, SagaState.failed, "paywatch.saga_opened"),
        (SagaState.failed, OFF, "visa.category1"),
    ]
    # The attempt counts, and a stop marker warns other invoices on the card.
    assert [(e.id, e.counted, e.stop.id if e.stop else None) for e in decision.ledger_entries] == [
        ("evt_1", True, None),
        ("evt_1#stop", False, "visa.category1"),
    ]
    advance(sh, T0 + 40 * DAY)
    assert of(sh, RETRY) == []
    assert saga(sh).status is SagaState.exhausted


def test_another_invoice_on_a_stopped_card_is_not_retried_for_30_days() -> None:
    sh = shell()
    sh.receive(ev(1, decline=visa("43", DeclineCategory.HARD)), T0)
    sh.receive(ev(2, invoice="in_2", at=T0 + HOUR, decline=visa("51")), T0 + HOUR)
    advance(sh, T0 + 40 * DAY)
    assert of(sh, RETRY) == []
    assert (None, SagaState.failed, "paywatch.saga_opened") in edges(sh)
    assert edges(sh)[3] == (SagaState.failed, OFF, "visa.category1")  # in_2, by the marker


def test_visa_category_2_retries_on_the_tenant_schedule_up_to_the_tenant_limit() -> None:
    sh = shell()
    sh.receive(ev(1, decline=visa("51")), T0)
    fail_every_retry(sh, T0 + 40 * DAY, visa("51"))
    retries = of(sh, RETRY)
    # Day 1 at 10:00 UTC is < 24 h after the noon failure: it waits for the gap.
    assert [c.due_at for c in retries] == [
        T0 + DAY,
        datetime(2026, 11, 5, 10, tzinfo=UTC),
        datetime(2026, 11, 7, 10, tzinfo=UTC),
        datetime(2026, 11, 9, 10, tzinfo=UTC),
    ]
    assert [c.attempt for c in retries] == [1, 2, 3, 4]
    assert {c.rule.id for c in retries} == {"visa.category2"}
    assert (ON, OFF, "tenant.max_retries") in edges(sh)
    assert saga(sh).status is SagaState.exhausted


@pytest.mark.parametrize(
    ("edition", "emitted"), [("visa-core-rules-2026-04-18", 1), ("visa-rules-2021-04", 0)]
)
def test_visa_reattempt_limit_20_vs_15_counts_other_invoices(edition: str, emitted: int) -> None:
    sh = shell(visa_edition=edition)
    prior_attempts(sh, "acme/fp/fp_v", [T0 - 10 * DAY + i * HOUR for i in range(15)])
    sh.receive(ev(1, decline=visa("51")), T0)  # the 16th attempt on the card
    advance(sh, T0 + 2 * DAY)
    assert len(of(sh, RETRY)) == emitted
    if not emitted:  # 15 reattempts already: the next may go on day 20 (the oldest leaves)
        timer = next(t for t in saga(sh).pending if t.purpose is TimerPurpose.RETRY)
        assert timer.due_at == T0 + 20 * DAY
        assert timer.command is not None and timer.command.rule.id == "visa.category2"


# --- Mastercard ---------------------------------------------------------------------------


def test_mastercard_03_stops_at_once_even_after_the_same_card_is_re_entered() -> None:
    sh = shell()
    decision = sh.receive(ev(1, decline=mc("03"), pm=MC), T0)
    assert [c.type for c in decision.commands] == [REQUEST, NOTIFY]
    assert saga(sh).status is OFF and not saga(sh).has(TimerPurpose.RETRY)
    sh.receive(ev(2, EventType.PAYMENT_METHOD_UPDATED, at=T0 + HOUR, pm=MC), T0 + HOUR)
    advance(sh, T0 + 5 * DAY)
    assert of(sh, RETRY) == []
    # A different card may be tried at once.
    decision = sh.receive(
        ev(3, EventType.PAYMENT_METHOD_UPDATED, at=T0 + 5 * DAY, pm=NEW_CARD), T0 + 5 * DAY
    )
    assert [(c.type, c.due_at, c.rule.id) for c in decision.commands] == [
        (RETRY, T0 + 5 * DAY, "paywatch.payment_method_updated")
    ]
    assert [e.card for e in decision.ledger_entries] == ["acme/fp/fp_n"]


def test_mastercard_21_stops_and_cancels_the_agreement() -> None:
    sh = shell()
    decision = sh.receive(ev(1, decline=mc("21"), pm=MC), T0)
    assert [(c.type, c.rule.id, c.rule.edition) for c in decision.commands] == [
        (CommandType.CANCEL, "mastercard.mac.21", "mastercard-tpe-2022-10")
    ]
    assert edges(sh) == [
        (None, SagaState.failed, "paywatch.saga_opened"),
        (SagaState.failed, SagaState.canceled, "mastercard.mac.21"),
    ]
    assert saga(sh).pending == ()
    assert sh.receive(ev(2, at=T0 + DAY, decline=mc("02"), pm=MC), T0 + DAY).commands == ()


def test_mastercard_01_asks_for_new_credentials_then_retries_at_once() -> None:
    sh = shell()
    first = sh.receive(ev(1, decline=mc("01", DeclineCategory.ACTION), pm=MC), T0)
    assert [c.type for c in first.commands] == [REQUEST, NOTIFY]
    advance(sh, T0 + 2 * DAY)
    assert of(sh, RETRY) == [] and saga(sh).status is OFF
    now = T0 + 2 * DAY
    decision = sh.receive(ev(2, EventType.PAYMENT_METHOD_UPDATED, at=now, pm=MC), now)
    assert [(c.type, c.due_at, c.rule.id) for c in decision.commands] == [
        (RETRY, now, "mastercard.mac.01")
    ]
    assert [(t.from_state, t.to_state) for t in decision.transitions] == [(OFF, ON)]


@pytest.mark.parametrize(
    ("mac", "hours"),
    [
        ("24", 1),
        ("25", 24),
        ("26", 48),
        ("27", 96),
        ("28", 144),
        ("29", 192),
        ("30", 240),
        ("02", 72),
    ],
)
def test_mastercard_retry_after_codes_set_the_earliest_retry(mac: str, hours: int) -> None:
    sh = shell()
    sh.receive(ev(1, decline=mc(mac), pm=MC), T0)
    advance(sh, T0 + 20 * DAY)
    first = of(sh, RETRY)[0]
    assert first.due_at == max(T0 + DAY, T0 + hours * HOUR)
    assert first.rule.id == f"mastercard.mac.{mac}" if hours > 24 else True


def test_mastercard_10_declines_in_24_hours_defers_the_retry() -> None:
    sh = shell()
    now = T0 + 2 * DAY
    prior = [now - 20 * HOUR + i * HOUR for i in range(8)]
    prior_attempts(sh, "acme/fp/fp_m", prior)
    sh.receive(ev(1, at=now - HOUR, decline=mc("01", DeclineCategory.ACTION), pm=MC), now - HOUR)
    decision = sh.receive(ev(2, EventType.PAYMENT_METHOD_UPDATED, at=now, pm=MC), now)
    # 9 declines on the card in 24 h: a 10th attempt is allowed, at once.
    assert [(c.type, c.due_at) for c in decision.commands] == [(RETRY, now)]
    # It is declined too: the 11th must wait until the oldest of the 10 is 24 h old.
    outcome = ev(3, at=now, decline=mc("01", DeclineCategory.ACTION), pm=MC, paywatch_retry=True)
    sh.receive(outcome, now + HOUR)
    decision = sh.receive(ev(4, EventType.PAYMENT_METHOD_UPDATED, at=now + HOUR, pm=MC), now + HOUR)
    assert decision.commands == ()
    timer = next(t for t in saga(sh).pending if t.purpose is TimerPurpose.RETRY)
    assert timer.due_at == prior[0] + DAY
    advance(sh, prior[0] + DAY)
    assert [c.due_at for c in of(sh, RETRY)] == [now, prior[0] + DAY]


def test_mastercard_35_attempts_in_30_days_for_the_same_amount() -> None:
    sh = shell()
    prior = [T0 - 26 * DAY + i * 15 * HOUR for i in range(34)]
    prior_attempts(sh, "acme/fp/fp_m", prior)
    sh.receive(ev(1, decline=mc("02"), pm=MC), T0)  # the 35th attempt in 30 days
    advance(sh, T0 + 5 * DAY)
    retry = of(sh, RETRY)[0]
    assert retry.due_at == prior[0] + 30 * DAY  # MAC 02 allows day 3; the counter day 4
    other = shell()
    prior_attempts(other, "acme/fp/fp_m", prior, amount=100)
    other.receive(ev(1, decline=mc("02"), pm=MC), T0)
    advance(other, T0 + 4 * DAY)
    assert of(other, RETRY)[0].due_at == T0 + 3 * DAY  # other amounts do not count


# --- No advice, closing, providers ----------------------------------------------------------


def test_no_advice_means_no_retry_and_ask_the_customer() -> None:
    sh = shell()
    decision = sh.receive(ev(1, decline=Decline(), pm=None), T0)
    assert next((c.type, c.rule.id, c.rule.source) for c in decision.commands) == (
        REQUEST,
        "paywatch.no_advice",
        "[NW11]",
    )
    advance(sh, T0 + 40 * DAY)
    assert of(sh, RETRY) == []


@pytest.mark.parametrize(
    "closing",
    [
        ev(9, EventType.PAYMENT_SUCCEEDED, at=T0 + DAY, provider="adyen"),
        ev(9, EventType.PAYMENT_SUCCEEDED, at=T0 + DAY, provider="stripe"),
        ev(9, EventType.PAYMENT_SUCCEEDED, at=T0 + DAY, provider="paywatch", paywatch_retry=True),
        ev(9, EventType.SUBSCRIPTION_REACTIVATED, at=T0 + DAY, provider="adyen"),
    ],
)
def test_a_success_from_any_source_closes(closing: PaymentEvent) -> None:
    sh = shell()
    sh.receive(ev(1, decline=visa("51")), T0)
    pending = saga(sh).pending
    decision = sh.receive(closing, T0 + DAY)
    assert [(t.from_state, t.to_state, t.rule.id) for t in decision.transitions] == [
        (ON, SagaState.recovered, "paywatch.payment_succeeded")
    ]
    assert saga(sh).pending == ()
    for timer in pending:  # every timer the shell still holds is now a no-op
        fired = TimerFired(
            tenant="acme", invoice_ref="in_1", timer_id=timer.id, due_at=timer.due_at
        )
        assert sh.apply(fired, T0 + 60 * DAY).commands == ()
    # A late, older failure does not reopen it, and does not open a new episode.
    late = sh.receive(ev(2, at=T0 + HOUR, decline=visa("51")), T0 + 2 * DAY)
    assert (late.commands, late.transitions, saga(sh).status) == ((), (), SagaState.recovered)


def test_a_success_seen_before_the_failure_leaves_a_tombstone() -> None:
    sh = shell()
    assert sh.receive(ev(9, EventType.PAYMENT_SUCCEEDED, at=T0 + HOUR), T0 + HOUR).transitions == ()
    late = sh.receive(ev(1, at=T0, decline=visa("51")), T0 + 2 * HOUR)
    assert (late.commands, late.transitions) == ((), ())
    assert [e.id for e in late.ledger_entries] == ["evt_1"]  # still counted on the card


def test_provider_cancel_and_void_close_canceled_uncollectible_exhausted() -> None:
    for kind, to in [
        (EventType.SUBSCRIPTION_CANCELED, SagaState.canceled),
        (EventType.INVOICE_VOIDED, SagaState.canceled),
        (EventType.INVOICE_UNCOLLECTIBLE, SagaState.exhausted),
    ]:
        sh = shell()
        sh.receive(ev(1, decline=visa("51")), T0)
        decision = sh.receive(ev(2, kind, at=T0 + DAY), T0 + DAY)
        assert [(t.to_state, t.rule.id) for t in decision.transitions] == [
            (to, "paywatch.provider_closed")
        ]
        assert decision.commands == ()


def test_provider_owned_retries_are_counted_never_duplicated() -> None:
    sh = shell()  # stripe retries by itself (default owner)
    first = ev(1, provider="stripe", decline=visa("51"), attempt=1, provider_retry_at=T0 + 3 * DAY)
    decision = sh.receive(first, T0)
    assert [t.to_state for t in decision.transitions] == [SagaState.failed, ON]
    sh.receive(
        ev(2, provider="stripe", at=T0 + timedelta(seconds=2), decline=visa("51")), T0 + HOUR
    )  # sibling
    third = ev(3, provider="stripe", at=T0 + 3 * DAY, decline=visa("51"), attempt=3)
    decision = sh.receive(third, T0 + 3 * DAY)  # attempt 2 was never reported
    assert [e.id for e in decision.ledger_entries] == ["evt_3", "evt_3#gap2"]
    assert [t.to_state for t in decision.transitions] == [OFF]  # stripe stopped retrying
    advance(sh, T0 + 40 * DAY)
    assert of(sh, RETRY) == []
    assert [c.due_at for c in of(sh, NOTIFY)] == [T0, T0 + 3 * DAY, T0 + 7 * DAY]
    assert len(saga(sh).attempts) == 3


def test_a_provider_that_announces_its_retry_owns_it_whatever_the_policy() -> None:
    sh = shell(owners={"stripe": "paywatch"})
    sh.receive(ev(1, provider="stripe", decline=visa("51"), provider_retry_at=T0 + DAY), T0)
    advance(sh, T0 + 10 * DAY)
    assert of(sh, RETRY) == []
    assert saga(sh).status is ON


def test_dunning_steps_go_on_their_days_with_channel_and_template() -> None:
    steps = [
        {"day": 0, "channel": "email", "template": "first"},
        {"day": 2, "channel": "sms", "template": "nudge"},
        {"day": 9, "channel": "webhook", "template": "last"},
    ]
    sh = shell(dunning=steps, owners={"adyen": "provider"})
    sh.receive(ev(1, decline=visa("51")), T0)
    advance(sh, T0 + 40 * DAY)
    assert [(c.due_at, c.channel, c.template) for c in of(sh, NOTIFY)] == [
        (T0, "email", "first"),
        (T0 + 2 * DAY, "sms", "nudge"),
        (T0 + 9 * DAY, "webhook", "last"),
    ]
    assert {c.rule.id for c in of(sh, NOTIFY)} == {"tenant.dunning"}


def test_escalation_after_n_days_or_after_waiting_for_the_customer() -> None:
    sh = shell()  # stripe owns retries and keeps retrying: escalate on day 14
    sh.receive(ev(1, provider="stripe", decline=visa("51"), provider_retry_at=T0 + 20 * DAY), T0)
    advance(sh, T0 + 40 * DAY)
    (escalate,) = of(sh, CommandType.ESCALATE)
    assert (escalate.due_at, escalate.channel, escalate.template) == (
        T0 + 14 * DAY,
        "slack",
        "recovery_escalation",
    )
    waiting = shell()  # waiting for the customer since the failure: escalate on day 7
    waiting.receive(ev(1, decline=visa("54")), T0)
    advance(waiting, T0 + 40 * DAY)
    assert [c.due_at for c in of(waiting, CommandType.ESCALATE)] == [T0 + 7 * DAY]


@pytest.mark.parametrize(
    ("action", "kinds"),
    [
        (FinalAction.CANCEL, [CommandType.CANCEL]),
        (FinalAction.WRITE_OFF, [CommandType.WRITE_OFF]),
        (FinalAction.LEAVE_OPEN, []),
    ],
)
def test_final_action_when_exhausted(action: FinalAction, kinds: list[CommandType]) -> None:
    sh = shell(final_action=action, window_days=20, escalation=None)
    sh.receive(ev(1, decline=visa("51")), T0)
    fail_every_retry(sh, T0 + 19 * DAY, visa("51"))
    sh.commands.clear()
    advance(sh, T0 + 20 * DAY)
    assert [c.type for c in sh.commands] == kinds
    assert [c.due_at for c in sh.commands] == [T0 + 20 * DAY] * len(kinds)
    assert edges(sh)[-1] == (OFF, SagaState.exhausted, "tenant.final_action")


# --- Timers, duplicates, policy changes, episodes -------------------------------------------


def test_a_timer_fires_once_and_not_before_it_is_due() -> None:
    sh = shell()
    sh.receive(ev(1, decline=visa("51")), T0)
    timer = next(t for t in saga(sh).pending if t.purpose is TimerPurpose.RETRY)
    fired = TimerFired(tenant="acme", invoice_ref="in_1", timer_id=timer.id, due_at=timer.due_at)
    early = sh.apply(fired, timer.due_at - HOUR)
    assert (early.commands, early.new_state) == ((), saga(sh))
    assert [c.type for c in sh.apply(fired, timer.due_at).commands] == [RETRY]
    again = sh.apply(fired, timer.due_at + HOUR)
    assert (again.commands, again.transitions, again.ledger_entries) == ((), (), ())


def test_a_duplicate_event_changes_nothing_and_counts_nothing_twice() -> None:
    sh = shell()
    first = ev(1, decline=visa("51"))
    sh.receive(first, T0)
    before = saga(sh)
    again = sh.receive(first, T0)
    assert again.new_state == before
    assert (again.commands, again.transitions, again.ledger_entries) == ((), (), ())


def test_a_redelivered_card_expiring_after_the_deadline_changes_nothing() -> None:
    # The first delivery is ignored, then its flush closes the saga at the deadline; the
    # redelivery (Kafka is at-least-once) finds it closed and must not move ``closed_at``.
    sh = shell(window_days=20, escalation=None)
    sh.receive(ev(1, decline=visa("51")), T0)
    fail_every_retry(sh, T0 + 19 * DAY, visa("51"))
    late = T0 + 20 * DAY + HOUR
    notice = ev(9, EventType.CARD_EXPIRING, at=late)
    first = sh.receive(notice, late)
    assert [t.to_state for t in first.transitions] == [SagaState.exhausted]
    before = saga(sh)
    again = sh.receive(notice, late)
    assert saga(sh) == before and before.closed_at is not None and before.closed_at < late
    assert (again.commands, again.transitions, again.ledger_entries) == ((), (), ())


def test_same_input_gives_the_same_command_ids() -> None:
    a = decide(None, ev(1, decline=visa("54")), T0, TenantPolicy())
    b = decide(None, ev(1, decline=visa("54")), T0, TenantPolicy())
    assert [c.command_id for c in a.commands] == [c.command_id for c in b.commands]
    assert len({c.command_id for c in a.commands}) == len(a.commands) == 2
    other = decide(None, ev(1, decline=visa("54"), invoice="in_2"), T0, TenantPolicy())
    assert not {c.command_id for c in a.commands} & {c.command_id for c in other.commands}


def test_a_policy_change_keeps_what_is_planned_and_drops_what_it_forbids() -> None:
    sh = shell()
    sh.receive(ev(1, decline=visa("51")), T0)
    notifies = [t for t in saga(sh).pending if t.purpose is TimerPurpose.NOTIFY]
    # New templates apply to new episodes only; paywatch no longer owns Adyen retries.
    changed = TenantPolicy(
        owners={"adyen": RetryOwner.PROVIDER},
        dunning=(DunningStep(day=1, template="new_copy"),),
    )
    (decision,) = sh.change_policy(changed, T0 + HOUR)
    assert [(t.from_state, t.to_state, t.rule.id) for t in decision.transitions] == [
        (ON, OFF, "tenant.policy_change")
    ]
    assert not saga(sh).has(TimerPurpose.RETRY)
    assert [t for t in saga(sh).pending if t.purpose is TimerPurpose.NOTIFY] == notifies
    assert saga(sh).policy_revision == changed.revision
    # Turning dunning off forbids the notifications still pending.
    sh.change_policy(TenantPolicy(dunning=(), owners={"adyen": RetryOwner.PROVIDER}), T0 + 2 * HOUR)
    assert not saga(sh).has(TimerPurpose.NOTIFY)


def test_a_retry_without_its_cards_ledger_waits_for_one() -> None:
    sh = shell()
    sh.receive(ev(1, decline=visa("51")), T0)
    state = saga(sh).model_copy(update={"ledger": None})
    timer = next(t for t in state.pending if t.purpose is TimerPurpose.RETRY)
    fired = TimerFired(tenant="acme", invoice_ref="in_1", timer_id=timer.id, due_at=timer.due_at)
    blind = decide(state, fired, timer.due_at, sh.policy)
    assert blind.commands == () and blind.new_state is not None
    assert blind.new_state.timer(timer.id) == timer
    assert [c.type for c in sh.apply(fired, timer.due_at).commands] == [RETRY]


def test_a_newer_failure_after_recovery_opens_a_new_episode() -> None:
    sh = shell()  # PayPal-like: one invoice_ref for a whole subscription
    sh.receive(ev(1, decline=visa("51")), T0)
    sh.receive(ev(2, EventType.PAYMENT_SUCCEEDED, at=T0 + DAY), T0 + DAY)
    ids_before = {t.id for t in saga(sh).pending}
    decision = sh.receive(ev(3, at=T0 + 31 * DAY, decline=visa("51")), T0 + 31 * DAY)
    assert [(t.from_state, t.to_state) for t in decision.transitions] == [
        (None, SagaState.failed),
        (SagaState.failed, ON),
    ]
    assert saga(sh).episode == 1
    assert not ids_before & {t.id for t in saga(sh).pending}


def test_an_overdue_invoice_without_a_card_gets_dunning_only() -> None:
    sh = shell()
    decision = sh.receive(ev(1, EventType.INVOICE_OVERDUE, provider="xero", pm=None), T0)
    assert [c.type for c in decision.commands] == [NOTIFY]
    assert [t.to_state for t in decision.transitions] == [SagaState.failed, OFF]
    advance(sh, T0 + 40 * DAY)
    assert of(sh, RETRY) == [] and of(sh, REQUEST) == []


def test_a_method_update_for_an_invoice_without_a_saga_is_ignored() -> None:
    decision = decide(None, ev(1, EventType.PAYMENT_METHOD_UPDATED), T0, TenantPolicy())
    assert decision.new_state is None and decision.commands == ()


def test_every_decision_records_a_transition_with_its_snapshot() -> None:
    sh = shell()
    opening = sh.receive(ev(1, decline=visa("51")), T0)
    assert [(t.from_state, t.to_state) for t in opening.transitions] == [
        (None, SagaState.failed),
        (SagaState.failed, ON),
    ]
    last = opening.transitions[-1]
    assert (
        last.reason == "visa.category2: retryable within the counters; retry 1 due 2026-11-03 12:00"
    )
    assert (last.next_action, last.next_action_at) == (RETRY, T0 + DAY)
    assert (last.attempts_used, last.attempts_allowed) == (0, 4)
    (fired,) = sh.fire_due(T0 + DAY)
    (same,) = fired.transitions  # the state did not change: a self-transition
    assert (same.from_state, same.to_state, same.rule.id) == (ON, ON, "visa.category2")
    assert (same.reason, same.attempts_used) == ("retry allowed now", 1)
    assert (same.next_action, same.next_action_at) == (NOTIFY, T0 + 3 * DAY)
    (notify,) = sh.fire_due(T0 + 3 * DAY)[0].commands
    assert notify.type is NOTIFY


def test_emitted_commands_say_whom_to_charge_and_when_they_were_issued() -> None:
    sh = shell()
    first = ev(1, decline=visa("51"), subscription_ref="sub_1", payment_ref="pi_1")
    sh.receive(first, T0)
    (decision,) = sh.fire_due(T0 + DAY)
    (retry,) = decision.commands
    assert (retry.provider, retry.customer_ref, retry.subscription_ref, retry.payment_ref) == (
        "adyen",
        "cus_1",
        "sub_1",
        "pi_1",
    )
    assert (retry.amount_minor, retry.currency, retry.decline_category) == (4900, "USD", SOFT)
    assert (retry.issued_at, retry.first_failed_at, retry.due_at) == (T0 + DAY, T0, T0 + DAY)


def test_attempts_made_before_the_card_was_named_count_on_that_card() -> None:
    sh = shell()
    sh.receive(ev(1, decline=visa("51"), pm=None), T0)  # an invoice event without the card
    assert saga(sh).card == "acme/invoice/in_1"
    named = sh.receive(ev(2, at=T0 + 2 * HOUR, decline=visa("51")), T0 + 2 * HOUR)
    assert saga(sh).card == "acme/fp/fp_v"
    assert [(e.id, e.card) for e in named.ledger_entries] == [
        ("evt_1", "acme/fp/fp_v"),
        ("evt_2", "acme/fp/fp_v"),
    ]
    verdict = saga(sh).verdict
    assert verdict is not None and verdict.rule.id == "visa.category2"


def test_a_policy_changed_input_reconciles_once() -> None:
    sh = shell()
    sh.receive(ev(1, decline=visa("51")), T0)
    state = saga(sh)
    same = decide(
        state, PolicyChanged(tenant="acme", invoice_ref="in_1", revision="x"), T0, sh.policy
    )
    assert (same.new_state, same.commands, same.transitions) == (state, (), ())
    strict = TenantPolicy.model_validate({"retry": {"max_retries": 0}})
    changed = PolicyChanged(tenant="acme", invoice_ref="in_1", revision=strict.revision)
    decision = decide(state, changed, T0 + HOUR, strict)
    assert decision.new_state is not None and decision.new_state.policy_revision == strict.revision
    assert not decision.new_state.has(TimerPurpose.RETRY)  # no reattempt left in the budget
    assert [(t.to_state, t.rule.id) for t in decision.transitions] == [
        (OFF, "tenant.policy_change")
    ]
    again = decide(decision.new_state, changed, T0 + HOUR, strict)
    assert (again.commands, again.transitions) == ((), ())


def test_a_copied_policy_gets_its_own_revision_and_rulebook() -> None:
    policy = TenantPolicy()
    assert policy.rulebook.visa.reattempts == 20
    older = policy.model_copy(update={"visa_edition": "visa-rules-2021-04"})
    assert older.revision != policy.revision
    assert older.rulebook.visa.reattempts == 15


def test_ledger_card_names_the_card_the_shell_must_load() -> None:
    assert ledger_card(None, ev(1)) == "acme/fp/fp_v"
    assert ledger_card(None, ev(1, pm=None)) == "acme/invoice/in_1"
    sh = shell()
    sh.receive(ev(1, decline=visa("51")), T0)
    timer_id, due_at = saga(sh).timers()[0]
    fired = TimerFired(tenant="acme", invoice_ref="in_1", timer_id=timer_id, due_at=due_at)
    assert ledger_card(saga(sh), fired) == "acme/fp/fp_v"


def test_a_retry_due_during_its_providers_outage_is_held_until_the_alert_closes() -> None:
    sh = shell()
    sh.receive(ev(1, decline=visa("51")), T0)
    sh.outages = frozenset({"adyen"})  # an open PROVIDER_FAILURE_SPIKE for adyen
    advance(sh, T0 + DAY + 3 * HOUR)
    assert of(sh, RETRY) == []
    held = [t for t in sh.transitions if t.rule.id == "paywatch.provider_outage"]
    assert held and all("adyen has an open failure-spike alert" in (t.reason or "") for t in held)
    assert saga(sh).retries == 0 and sh.cards.get("acme/fp/fp_v", {}) == {
        a.id: a for a in saga(sh).attempts
    }  # the card's ledger holds the original failure only: nothing was spent
    assert len(saga(sh).attempts) == 1
    sh.outages = frozenset({"stripe"})  # another provider's outage does not hold adyen's retry
    advance(sh, T0 + DAY + 4 * HOUR)
    retries = of(sh, RETRY)
    assert len(retries) == 1 and T0 + DAY + 3 * HOUR < retries[0].due_at <= T0 + DAY + 4 * HOUR
    assert retries[0].rule.id == "visa.category2"
