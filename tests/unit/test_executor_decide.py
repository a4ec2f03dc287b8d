"""Deciding a batch of due commands: same verdicts as one by one, duplicates, poison alone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from paywatch.executor.decide import Context, Coords, Decision, decide, decide_batch
from paywatch.executor.simulator import SimulatorConfig
from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import (
    CommandType,
    DeclineCategory,
    PaymentEvent,
    RecoveryCommand,
    RuleRef,
)
from paywatch.settings import Settings

DUE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
AT = Coords("recovery.commands", 1, 7)
CODEC = make_codec(Settings())


def command(
    command_id: str, invoice: str = "in_1", days: float = 0, **changes: Any
) -> RecoveryCommand:
    return RecoveryCommand(
        command_id=command_id,
        type=changes.pop("type", CommandType.RETRY_PAYMENT),
        tenant="acme",
        invoice_ref=invoice,
        due_at=DUE + timedelta(days=days),
        attempt=1,
        reason="test",
        rule=RuleRef(id="r", edition="2026-01", source="tests"),
        decline_category=DeclineCategory.SOFT,
        **changes,
    )


def context(encode: Callable[[PaymentEvent], bytes] | None = None) -> Context:
    def default(event: PaymentEvent) -> bytes:
        return CODEC.encode(event, topic="payments.events")

    return Context(
        SimulatorConfig.parse(3, ""),
        1.0,
        DUE,
        "payments.events",
        encode or default,
    )


def test_a_batch_decides_like_commands_journaled_one_by_one() -> None:
    # Three retries of one invoice days apart and one of another, in due order: each
    # command's day 0 is the invoice's earliest journaled due time, including those
    # decided earlier in the batch (one by one, they were journaled before it).
    cmds = [command("a", days=0), command("b", "in_2", days=1), command("c", days=4),
            command("d", days=9)]  # fmt: skip
    journaled = {("acme", "in_2"): DUE - timedelta(days=3)}
    batch = decide_batch([(c.command_id, c, AT) for c in cmds], journaled, context())

    earliest = dict(journaled)
    one_by_one: list[Decision] = []
    for c in cmds:
        key = (c.tenant, c.invoice_ref)
        one_by_one.append(decide(c.command_id, c, AT, earliest.get(key), context()))
        earliest[key] = min(earliest.get(key, c.due_at), c.due_at)
    assert batch.decisions == one_by_one
    days = {d.token: d.entry.detail["day"] for d in batch.decisions}
    assert days == {"a": 0, "b": 4, "c": 4, "d": 9}


def test_first_failed_at_wins_over_the_journal() -> None:
    c = command("a", days=10, first_failed_at=DUE)
    [d] = decide_batch(
        [("a", c, AT)], {("acme", "in_1"): DUE + timedelta(days=9)}, context()
    ).decisions
    assert d.entry.detail["day"] == 10


def test_a_command_twice_in_a_batch_is_decided_once() -> None:
    c = command("a")
    batch = decide_batch([("first", c, AT), ("second", c, AT)], {}, context())
    assert [d.token for d in batch.decisions] == ["first"]
    assert batch.duplicates == ["second"]


def test_notices_are_recorded_without_an_outcome_record() -> None:
    c = command("n", type=CommandType.NOTIFY_CUSTOMER, channel="email")
    [d] = decide_batch([("n", c, AT)], {}, context()).decisions
    assert (d.entry.outcome, d.output) == ("recorded", None)
    assert d.entry.detail["source"] == {"topic": AT.topic, "partition": 1, "offset": 7}


def test_retry_outputs_are_encoded_outcomes_keyed_by_invoice() -> None:
    [d] = decide_batch([("a", command("a"), AT)], {}, context()).decisions
    assert d.output is not None
    assert (d.output.topic, d.output.key) == ("payments.events", b"acme/in_1")
    event = CODEC.decode(d.output.value, PaymentEvent, topic="payments.events")
    assert event.event_id == d.entry.detail["event_id"]


def test_a_command_that_cannot_be_decided_is_refused_alone() -> None:
    def encode(event: PaymentEvent) -> bytes:
        if event.raw and event.raw.provider_event_id == "bad":
            raise ValueError("cannot encode this one")
        return b"ok"

    cmds = [command("a"), command("bad", "in_2"), command("c", "in_3")]
    batch = decide_batch([(c.command_id, c, AT) for c in cmds], {}, context(encode))
    assert [d.token for d in batch.decisions] == ["a", "c"]
    [refused] = batch.refused
    assert refused.token == "bad" and "cannot encode" in str(refused.error)
