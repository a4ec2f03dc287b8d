"""The recovery_workflows fold: the newest transition's snapshot wins, never an older one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from paywatch.projections import recovery_log
from paywatch.projections.recovery_workflows import WorkflowRow, evolve
from paywatch.projections.runner import dead_letter_topic
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import (
    CommandType,
    RecoveryCommand,
    RuleRef,
    SagaState,
    SagaTransition,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TOPIC = "recovery.transitions"


def rule(n: int) -> RuleRef:
    return RuleRef(id=f"rule.{n}", edition="2024-04", source="test rulebook")


def tr(
    src: SagaState | None,
    dst: SagaState,
    *,
    minutes: int = 0,
    n: int = 0,
    used: int | None = 0,
    action: CommandType | None = None,
) -> SagaTransition:
    return SagaTransition(
        tenant="acme",
        invoice_ref="in_1",
        from_state=src,
        to_state=dst,
        cause_event_id=f"evt_{n}",
        at=T0 + timedelta(minutes=minutes),
        rule=rule(n),
        reason=f"decision {n}",
        attempts_used=used,
        attempts_allowed=4,
        next_action=action,
        next_action_at=T0 + timedelta(days=1) if action else None,
    )


def at(offset: int, partition: int = 0) -> Coords:
    return Coords(TOPIC, partition, offset)


def fold(*steps: tuple[SagaTransition, Coords]) -> WorkflowRow:
    row: WorkflowRow | None = None
    for transition, coords in steps:
        row = evolve(row, transition, coords)
    assert row is not None
    return row


S = SagaState
OPENING = [
    (tr(None, S.failed, n=1), at(0)),
    (tr(S.failed, S.retrying, n=2, action=CommandType.RETRY_PAYMENT), at(1)),
]


def test_opening_decision_gives_the_second_snapshot() -> None:
    row = fold(*OPENING)
    assert row.state is S.retrying
    assert row.next_action is CommandType.RETRY_PAYMENT
    assert row.next_action_at == T0 + timedelta(days=1)
    assert (row.attempts_used, row.attempts_allowed) == (0, 4)
    assert (row.last_rule_id, row.last_rule_edition) == ("rule.2", "2024-04")
    assert (row.last_reason, row.last_cause_event_id) == ("decision 2", "evt_2")
    assert row.started_at == T0 and row.closed_at is None
    assert (row.last_topic, row.last_partition, row.last_offset) == (TOPIC, 0, 1)


def test_self_transition_moves_the_snapshot() -> None:
    retry = tr(S.retrying, S.retrying, minutes=60, n=3, used=1, action=CommandType.RETRY_PAYMENT)
    row = fold(*OPENING, (retry, at(2)))
    assert (row.state, row.attempts_used, row.last_rule_id) == (S.retrying, 1, "rule.3")
    assert row.started_at == T0 and row.last_transition_at == T0 + timedelta(minutes=60)


def test_older_or_same_transition_changes_nothing() -> None:
    row = fold(*OPENING)
    assert evolve(row, *OPENING[0]) is row  # replayed, older
    assert evolve(row, *OPENING[1]) is row  # replayed, the same
    earlier = tr(S.failed, S.awaiting_customer, minutes=-1, n=9)
    assert evolve(row, earlier, at(7)) is row  # a later offset but an older decision


def test_ties_on_time_are_broken_by_kafka_coordinates() -> None:
    row = fold(*OPENING)
    assert row.last_offset == 1
    # Same `at`, higher offset: newer.
    again = evolve(row, tr(S.retrying, S.awaiting_customer, n=4), at(5))
    assert again.state is S.awaiting_customer and again.last_offset == 5


def test_closed_at_is_when_the_episode_ended() -> None:
    done = tr(S.retrying, S.recovered, minutes=90, n=5)
    row = fold(*OPENING, (done, at(2)))
    assert row.state is S.recovered and row.closed_at == T0 + timedelta(minutes=90)
    assert row.next_action is None and row.next_action_at is None


def test_a_new_episode_reopens_the_workflow() -> None:
    done = (tr(S.retrying, S.recovered, minutes=90, n=5), at(2))
    reopen = (tr(None, S.failed, minutes=600, n=6), at(3))
    row = fold(*OPENING, done, reopen)
    assert row.state is S.failed
    assert row.started_at == T0 + timedelta(minutes=600) and row.closed_at is None


@given(st.permutations(range(6)), st.lists(st.integers(0, 5), max_size=6))
def test_any_arrival_order_and_replays_end_on_the_newest(
    order: list[int], replays: list[int]
) -> None:
    chain = [
        (tr(None, S.failed, n=0), at(0)),
        (tr(S.failed, S.retrying, n=1, action=CommandType.RETRY_PAYMENT), at(1)),
        (tr(S.retrying, S.retrying, minutes=30, n=2, used=1), at(2)),
        (tr(S.retrying, S.awaiting_customer, minutes=30, n=3, used=2), at(3)),
        (tr(S.awaiting_customer, S.retrying, minutes=45, n=4, used=2), at(4)),
        (tr(S.retrying, S.exhausted, minutes=50, n=5, used=4), at(5)),
    ]
    row = fold(*(chain[i] for i in [*order, *replays]))
    newest = fold(*chain)
    snapshot = ("state", "last_rule_id", "attempts_used", "last_offset", "closed_at")
    assert [getattr(row, f) for f in snapshot] == [getattr(newest, f) for f in snapshot]
    assert newest.closed_at == T0 + timedelta(minutes=50) and newest.started_at == T0


def test_recovery_log_rows() -> None:
    command = RecoveryCommand(
        command_id="cmd_1",
        type=CommandType.RETRY_PAYMENT,
        tenant="acme",
        invoice_ref="in_1",
        due_at=T0 + timedelta(days=2),
        reason="soft decline",
        rule=rule(1),
    )
    row = recovery_log.row(command, Coords("recovery.commands", 2, 9))
    assert row[:7] == ("recovery.commands", 2, 9, "acme", "in_1", "command", command.due_at)
    issued = command.model_copy(update={"issued_at": T0})
    assert recovery_log.row(issued, Coords("recovery.commands", 2, 9))[6] == T0
    t = recovery_log.row(OPENING[0][0], at(0))
    assert t[5:9] == ("transition", T0, None, "failed")


def test_dead_letters_go_to_the_source_dlq_else_the_projectors() -> None:
    assert dead_letter_topic("payments.events") == "payments.events.dlq"
    assert dead_letter_topic("recovery.commands") == "recovery.commands.dlq"
    assert dead_letter_topic("recovery.transitions") == "payments.events.dlq"
