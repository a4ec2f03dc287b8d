"""Saga table entries, version 2 (recovery/entry_codec.py): exact round trips, compactness,
the header the timer index reads, and version-1 (JSON) entries still readable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from paywatch.recovery import entry_codec
from paywatch.recovery.clock import SagaClock
from paywatch.recovery.shell import Entry, entry_next, entry_partition, saga_of, step
from paywatch.recovery.state import Saga, TimerFired
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RiskBand,
    SagaState,
)

NOW = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
CLOCK = SagaClock()
POLICY = TenantPolicy()


def failure(invoice: str, n: int = 1, at: datetime = NOW, code: str = "51") -> PaymentEvent:
    return PaymentEvent(
        event_id=f"ev-{invoice}-{n}",
        type=EventType.PAYMENT_FAILED,
        tenant="acme",
        provider="generic",
        source_type="bench",
        occurred_at=at,
        customer_ref="cus_1",
        invoice_ref=invoice,
        amount_minor=4900,
        currency="EUR",
        decline=Decline(
            code=code, category=DeclineCategory.SOFT, network="visa", network_code=code
        ),
        attempt=n,
        payment_method=PaymentMethod(brand="visa", last4="4242", fingerprint="fp_1"),
    )


def decided(*events: PaymentEvent, partition: int = 3) -> Entry:
    entry: Entry | None = None
    for event in events:
        entry = step(
            entry, event, partition=partition, wall_now=NOW, clock=CLOCK, policy=POLICY
        ).entry
    assert entry is not None
    return entry


def v1_entry(saga: Saga, partition: int, decided_at: datetime) -> bytes:
    """A table value as the version-1 shell wrote it (Faust's json value serializer)."""
    return json.dumps(
        {
            "v": 1,
            "p": partition,
            "d": decided_at.isoformat(),
            "t": [[tid, due.isoformat()] for tid, due in saga.timers()],
            "s": saga.model_dump(mode="json", exclude={"ledger"}),
        }
    ).encode()


def test_every_saga_of_a_history_round_trips_exactly() -> None:
    entry = decided(failure("in_1"), failure("in_1", 2, NOW + timedelta(hours=1), code="05"))
    saga = saga_of(entry)
    assert saga is not None and saga.pending and saga.attempts
    assert any(t.command is not None for t in saga.pending)
    again = entry_codec.decode(entry_codec.encode(saga, 3, NOW, []))
    assert again == saga
    assert again.model_dump(mode="json") == saga.model_dump(mode="json")


def test_an_offset_other_than_utc_and_non_default_values_are_kept() -> None:
    saga = saga_of(decided(failure("in_2")))
    assert saga is not None
    plus2 = timezone(timedelta(hours=2))
    timer = saga.pending[0]
    assert timer.command is not None
    odd_command = timer.command.model_copy(
        update={"tenant": "other", "invoice_ref": "elsewhere", "amount_minor": 0}
    )
    odd = saga.model_copy(
        update={
            "opened_at": NOW.astimezone(plus2),
            "amount_minor": 0,
            "retries": 3,
            "pending": (timer.model_copy(update={"command": odd_command}), *saga.pending[1:]),
        }
    )
    again = entry_codec.decode(entry_codec.encode(odd, 0, NOW, []))
    assert again == odd
    assert again.opened_at is not None and again.opened_at.utcoffset() == timedelta(hours=2)
    assert again.pending[0].command == odd_command


def test_the_entry_is_at_least_3x_smaller_and_holds_no_command_twice() -> None:
    entry = decided(failure("in_3"))
    saga = saga_of(entry)
    assert saga is not None
    old = v1_entry(saga, 3, NOW)
    assert len(old) >= 3 * len(entry), (len(old), len(entry))
    for timer in saga.pending:
        if timer.command is not None:  # reasons and rule sources are stored once
            assert entry.count(timer.command.reason.encode()) == 1
    assert entry.count(b"tenant policy (paywatch.recovery.tenant_policy)") == 1


def test_the_header_names_the_partition_and_the_next_timer_without_the_saga() -> None:
    entry = decided(failure("in_4"), partition=7)
    saga = saga_of(entry)
    assert saga is not None
    nxt = entry_next(entry)
    assert nxt is not None and entry_partition(entry) == 7
    first = saga.pending[0]
    assert (nxt.partition, nxt.pending, nxt.timer_id, nxt.due) == (
        7,
        len(saga.pending),
        first.id,
        CLOCK.to_wall(first.due_at),
    )


def test_a_version_1_entry_is_read_and_decided_on_then_written_as_version_2() -> None:
    """A worker upgraded in place restores its changelog of JSON entries."""
    saga = saga_of(decided(failure("in_5")))
    assert saga is not None
    old = v1_entry(saga, 5, NOW)
    assert saga_of(old) == saga and entry_partition(old) == 5
    nxt = entry_next(old)
    assert nxt is not None and (nxt.timer_id, nxt.pending) == (
        saga.pending[0].id,
        len(saga.pending),
    )
    timer = saga.pending[0]
    fired = TimerFired(tenant="acme", invoice_ref="in_5", timer_id=timer.id, due_at=timer.due_at)
    from_old = step(old, fired, partition=5, wall_now=timer.due_at, clock=CLOCK, policy=POLICY)
    new = entry_codec.encode(saga, 5, NOW, [(t.id, t.due_at) for t in saga.pending])
    from_new = step(new, fired, partition=5, wall_now=timer.due_at, clock=CLOCK, policy=POLICY)
    assert from_old.entry is not None and entry_codec.is_v2(from_old.entry)
    emitted = (from_old.commands, from_old.card_messages, from_old.transitions)
    assert emitted == (from_new.commands, from_new.card_messages, from_new.transitions)
    assert from_old.card_messages or from_old.commands  # the timer fired
    assert saga_of(from_old.entry) == saga_of(from_new.entry)


def test_a_decision_that_changes_nothing_keeps_the_entry_byte_for_byte() -> None:
    entry = decided(failure("in_6"))
    replay = step(entry, failure("in_6"), partition=3, wall_now=NOW, clock=CLOCK, policy=POLICY)
    assert replay.entry is entry and not replay.commands and not replay.transitions
    assert replay.timers  # the index is still told the saga's timers


def test_every_stored_model_field_has_a_code() -> None:
    for cls, names in entry_codec.FIELDS.items():
        assert set(cls.model_fields) <= set(names), cls
        assert len(set(names)) == len(names), cls


OLD_ENTRY = bytes.fromhex(
    "0203000000009015ef2f53060000000000000000000000008900a461636d6501a6696e5f6f6c6402b161"
    "77616974696e675f637573746f6d6572030104cf0006532fef15900009a56375735f3119011c022091a4"
    "65762d31"
)
"""A value written before ``Saga.high_risk`` existed (field codes 0-36 only)."""


def test_a_high_risk_saga_round_trips_and_an_older_entry_reads_as_not_high_risk() -> None:
    policy = TenantPolicy.model_validate({"high_risk": {}})
    entry = step(
        None, failure("in_7"), partition=3, wall_now=NOW, clock=CLOCK, policy=policy,
        risk=RiskBand.CRITICAL,
    ).entry  # fmt: skip
    saga = saga_of(entry)
    assert saga is not None and saga.high_risk is RiskBand.CRITICAL
    assert entry_codec.decode(entry_codec.encode(saga, 3, NOW, [])) == saga
    old = entry_codec.decode(OLD_ENTRY)
    assert old == Saga(
        tenant="acme", invoice_ref="in_old", status=SagaState.awaiting_customer, episode=1,
        opened_at=datetime(2026, 6, 1, 12, tzinfo=UTC), customer_ref="cus_1",
        update_requests=1, retries=2, seen=("ev-1",),
    )  # fmt: skip
    assert old.high_risk is None
    assert entry_codec.encode(old, 3, datetime(2026, 6, 1, 12, tzinfo=UTC), []) == OLD_ENTRY
