"""The recovery saga agent on a real broker: a real `paywatch run worker` process.

At ``PAYWATCH_TIME_SCALE=86400`` a saga day lasts a wall second, so the default schedule
(dunning on day 0, retries on days 1, 3, 5, 7, deadline on day 30) plays out in seconds.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from paywatch.executor.outcome import outcome_event
from paywatch.executor.simulator import Verdict
from paywatch.kafka.codec import make_codec
from paywatch.providers.base import event_id
from paywatch.schemas.models import (
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RecoveryCommand,
    SagaState,
    SagaTransition,
)
from paywatch.settings import Settings
from paywatch.streams.normalize import event_key
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process

SCALE = 86400.0


def failure(
    tenant: str,
    invoice: str,
    *,
    code: str = "51",
    advice: str | None = None,
    network: str = "visa",
    category: DeclineCategory = DeclineCategory.SOFT,
    provider: str = "generic",
    card: str = "fp_card_1",
) -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id(tenant, provider, f"{invoice}-failed"),
        type=EventType.PAYMENT_FAILED,
        tenant=tenant,
        provider=provider,
        source_type="payment.failed",
        occurred_at=datetime.now(UTC),
        customer_ref="cus_1",
        invoice_ref=invoice,
        amount_minor=4900,
        currency="EUR",
        decline=Decline(
            code=code, category=category, network=network, network_code=code, advice_code=advice
        ),
        attempt=1,
        payment_method=PaymentMethod(brand=network, last4="4242", fingerprint=card),
    )


def success(tenant: str, invoice: str, provider: str = "generic") -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id(tenant, provider, f"{invoice}-paid"),
        type=EventType.PAYMENT_SUCCEEDED,
        tenant=tenant,
        provider=provider,
        source_type="payment.succeeded",
        occurred_at=datetime.now(UTC),
        invoice_ref=invoice,
        amount_minor=4900,
        currency="EUR",
    )


async def publish(settings: Settings, bootstrap: str, *events: PaymentEvent) -> None:
    codec = make_codec(settings)
    topic = settings.topic("payments.events")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for ev in events:
            await producer.send_and_wait(topic, codec.encode(ev, topic=topic), key=event_key(ev))
    finally:
        await producer.stop()


async def commands(settings: Settings, bootstrap: str, invoice: str) -> list[RecoveryCommand]:
    codec = make_codec(settings)
    records = await topic_records(bootstrap, settings.topic("recovery.commands"))
    found = [codec.decode(r.value, RecoveryCommand, topic=r.topic) for r in records]
    return [c for c in found if c.invoice_ref == invoice]


async def transitions(settings: Settings, bootstrap: str, invoice: str) -> list[SagaTransition]:
    codec = make_codec(settings)
    records = await topic_records(bootstrap, settings.topic("recovery.transitions"))
    found = [codec.decode(r.value, SagaTransition, topic=r.topic) for r in records]
    return [t for t in found if t.invoice_ref == invoice]


async def committed(
    settings: Settings, bootstrap: str, partitions: int, source: str = "payments.events"
) -> int:
    """Offsets the worker's consumer group committed on ``source`` (sum)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.app_id)
    await consumer.start()
    try:
        topic = settings.topic(source)
        total = 0
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, p))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


def scaled(settings: Settings) -> Settings:
    return settings.model_copy(update={"time_scale": SCALE})


async def test_soft_decline_is_retried_on_schedule_and_a_success_closes_the_saga(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The test plays the executor: the first retry fails, the second one succeeds."""
    settings = scaled(test_settings)
    log = tmp_path / "worker.log"
    with paywatch_process(settings, "run", "worker", log=log) as worker:
        first = failure(unique, "inv_soft")
        await publish(settings, kafka_bootstrap, first)

        async def retries(n: int) -> list[RecoveryCommand] | None:
            assert worker.poll() is None, log_tail(log)
            found = await commands(settings, kafka_bootstrap, "inv_soft")
            wanted = [c for c in found if c.type is CommandType.RETRY_PAYMENT]
            return wanted if len(wanted) >= n else None

        (retry1,) = await eventually(lambda: retries(1), timeout=90, what="first retry")
        await publish(settings, kafka_bootstrap, outcome(retry1, succeeded=False))
        found = await eventually(lambda: retries(2), timeout=60, what="second retry")
        await publish(settings, kafka_bootstrap, outcome(found[1], succeeded=True))

        async def recovered() -> list[SagaTransition] | None:
            assert worker.poll() is None, log_tail(log)
            moves = await transitions(settings, kafka_bootstrap, "inv_soft")
            return moves if moves and moves[-1].to_state is SagaState.recovered else None

        moves = await eventually(recovered, timeout=60, what="the saga recovered")
        everything = await commands(settings, kafka_bootstrap, "inv_soft")
    assert len(found) == 2
    # Day 1 then day 3 of the default schedule: two saga days = two wall seconds here.
    assert retry1.due_at > first.occurred_at
    gap = (found[1].due_at - found[0].due_at).total_seconds()
    assert 1.0 <= gap <= 3.5, [c.due_at for c in found]
    assert [c.attempt for c in found] == [1, 2]
    assert (retry1.provider, retry1.amount_minor, retry1.currency) == ("generic", 4900, "EUR")
    assert retry1.decline_category is DeclineCategory.SOFT
    assert all(c.rule.id and c.rule.edition and c.rule.source for c in everything)
    assert moves[0].from_state is None and moves[0].to_state is SagaState.failed
    assert SagaState.retrying in {t.to_state for t in moves}
    assert all(t.rule.id and t.rule.edition for t in moves)
    # Closed: nothing is due any more, no third retry ever comes.
    assert len([c for c in everything if c.type is CommandType.RETRY_PAYMENT]) == 2


def outcome(command: RecoveryCommand, *, succeeded: bool) -> PaymentEvent:
    """What the sandbox executor appends for a retry."""
    category = command.decline_category or DeclineCategory.UNKNOWN
    verdict = Verdict(succeeded=succeeded, category=category, day=1, probability=0.5, draw=0.5)
    return outcome_event(
        command, verdict, topic="recovery.commands", partition=0, offset=command.attempt
    )


async def test_stolen_card_gets_no_retry_and_mastercard_03_stops_at_once(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = scaled(test_settings)
    stolen = failure(unique, "inv_stolen", code="43", category=DeclineCategory.FRAUD, card="fp_2")
    mc03 = failure(unique, "inv_mc03", code="51", advice="03", network="mastercard", card="fp_3")
    log = tmp_path / "worker.log"
    with paywatch_process(settings, "run", "worker", log=log) as worker:
        await publish(settings, kafka_bootstrap, stolen, mc03)

        async def settled(invoice: str, state: SagaState) -> list[SagaTransition] | None:
            assert worker.poll() is None, log_tail(log)
            moves = await transitions(settings, kafka_bootstrap, invoice)
            return moves if any(t.to_state is state for t in moves) else None

        stolen_moves = await eventually(
            lambda: settled("inv_stolen", SagaState.awaiting_customer), timeout=90, what="stolen"
        )
        mc_moves = await eventually(
            lambda: settled("inv_mc03", SagaState.awaiting_customer), timeout=90, what="MC 03"
        )
        # Let the schedule run past every retry day (1, 3, 5, 7): still no retry may appear.
        await eventually(
            lambda: _later_than(settings, kafka_bootstrap, "inv_mc03", seconds=8),
            timeout=60,
            what="8 saga days",
        )
        stolen_cmds = await commands(settings, kafka_bootstrap, "inv_stolen")
        mc_cmds = await commands(settings, kafka_bootstrap, "inv_mc03")
    for moves, cmds, rule in (
        (stolen_moves, stolen_cmds, "visa.category1"),
        (mc_moves, mc_cmds, "mastercard.mac.03"),
    ):
        assert not [c for c in cmds if c.type is CommandType.RETRY_PAYMENT], rule
        # The very first decision stops retrying and asks the customer for a new card.
        opened, stopped = moves[0], moves[1]
        assert (opened.to_state, stopped.from_state, stopped.to_state) == (
            SagaState.failed,
            SagaState.failed,
            SagaState.awaiting_customer,
        )
        assert stopped.rule.id == rule and stopped.rule.edition, stopped.rule
        update = [c for c in cmds if c.type is CommandType.REQUEST_PAYMENT_METHOD_UPDATE]
        assert update and update[0].rule.id == rule


async def _later_than(settings: Settings, bootstrap: str, invoice: str, seconds: float) -> bool:
    moves = await transitions(settings, bootstrap, invoice)
    return bool(moves) and (datetime.now(UTC) - moves[0].at).total_seconds() >= seconds


async def test_pending_timers_fire_exactly_once_after_a_kill_9(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = scaled(test_settings)
    invoices = [f"inv_kill_{i}" for i in range(4)]
    log = tmp_path / "worker.log"
    with paywatch_process(settings, "run", "worker", log=log) as worker:
        await publish(
            settings,
            kafka_bootstrap,
            *(failure(unique, inv, card=f"fp_kill_{inv}") for inv in invoices),
        )

        async def decided() -> bool:
            assert worker.poll() is None, log_tail(log)
            done = [await transitions(settings, kafka_bootstrap, inv) for inv in invoices]
            offsets = await committed(settings, kafka_bootstrap, settings.topic_partitions)
            return all(done) and offsets >= len(invoices)

        await eventually(decided, timeout=90, what="first decisions committed")
        before: dict[str, list[RecoveryCommand]] = {
            inv: await commands(settings, kafka_bootstrap, inv) for inv in invoices
        }
        killed_at = datetime.now(UTC)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    # Timers keep coming due while the worker is down; a new worker takes over.
    with paywatch_process(settings, "run", "worker", log=log) as worker:

        async def all_exhausted() -> bool:
            assert worker.poll() is None, log_tail(log)
            for inv in invoices:
                moves = await transitions(settings, kafka_bootstrap, inv)
                if not moves or moves[-1].to_state is not SagaState.exhausted:
                    return False
            return True

        await eventually(all_exhausted, timeout=120, what="every saga reached its deadline")
    for inv in invoices:
        emitted = await commands(settings, kafka_bootstrap, inv)
        per_id: Counter[str] = Counter(c.command_id for c in emitted)
        assert per_id and max(per_id.values()) == 1, (inv, per_id)
        # Commands were pending at the kill and fired after the restart.
        assert len(emitted) > len(before[inv]), inv
        # ... among them commands that were still pending (not yet due) when it was killed.
        assert [c for c in emitted if c.due_at > killed_at], inv


async def test_two_workers_with_standbys_fire_each_command_once(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Partitions move when the second worker joins; standbys hold copies, never fire."""
    base = scaled(test_settings).model_copy(
        update={"table_standby_replicas": 1, "time_anchor": datetime.now(UTC)}
    )
    one = base.model_copy(update={"state_dir": tmp_path / "w1"})
    two = base.model_copy(update={"state_dir": tmp_path / "w2"})
    invoices = [f"inv_two_{i}" for i in range(6)]
    log1, log2 = tmp_path / "w1.log", tmp_path / "w2.log"
    with (
        paywatch_process(one, "run", "worker", log=log1) as first,
        paywatch_process(two, "run", "worker", log=log2) as second,
    ):
        await publish(
            base, kafka_bootstrap, *(failure(unique, inv, card=f"fp_{inv}") for inv in invoices)
        )

        async def all_exhausted() -> bool:
            assert first.poll() is None, log_tail(log1)
            assert second.poll() is None, log_tail(log2)
            for inv in invoices:
                moves = await transitions(base, kafka_bootstrap, inv)
                if not moves or moves[-1].to_state is not SagaState.exhausted:
                    return False
            return True

        await eventually(all_exhausted, timeout=150, what="every saga reached its deadline")
    # Both workers owned partitions at the same time (each indexed a non-empty share).
    owned = [
        re.findall(
            r"timer index rebuilt: \d+ sagas with timers on partitions \[(\d[^\]]*)\]",
            log.read_text(),
        )
        for log in (log1, log2)
    ]
    assert all(owned), owned
    for inv in invoices:
        emitted = await commands(base, kafka_bootstrap, inv)
        per_id: Counter[str] = Counter(c.command_id for c in emitted)
        assert per_id and max(per_id.values()) == 1, (inv, per_id)
        assert {c.type for c in emitted} >= {CommandType.NOTIFY_CUSTOMER, CommandType.RETRY_PAYMENT}
