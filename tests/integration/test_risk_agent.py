"""The risk agent on the production store (rocksdb), real Kafka, a real worker process.

Customers' events go to ``risk.customers`` (keyed by customer, as the normalize agents
repartition them); the worker folds each customer's features into one table entry and sends
a ``RiskScore`` whenever the score moved. The test computes, with the pure functions alone,
what must have been emitted for the records in the topic (``expected``) and compares it with
``risk.scores``, record for record: before a restart, and after a *cold* restart (a new
worker with an empty state directory, its table restored from the changelog), which must
carry on exactly as if it had never stopped. A poison record is dead-lettered, not fatal.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from paywatch.kafka.codec import make_codec
from paywatch.risk.features import CustomerFeatures, evolve
from paywatch.risk.model import Score, changed, load_model, score
from paywatch.risk.population import generate
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import (
    DeadLetter,
    DeclineCategory,
    EventType,
    PaymentEvent,
    RiskScore,
)
from paywatch.schemas.topics import customer_key
from paywatch.settings import Settings
from paywatch.streams.risk import risk_score
from tests.integration.test_saga_agent import failure, success
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process

Emitted = dict[bytes, list[RiskScore]]


def _settings(test_settings: Settings, tmp_path: Path, name: str) -> Settings:
    return test_settings.model_copy(
        update={"table_store": "rocksdb://", "state_dir": tmp_path / name}
    )


def history(tenant: str, customer: str, invoices: int, *, hard: bool = False) -> list[PaymentEvent]:
    """A customer failing on ``invoices`` invoices over the last weeks, one recovered."""
    now = datetime.now(UTC)
    category = DeclineCategory.HARD if hard else DeclineCategory.SOFT
    events = []
    for i in range(invoices):
        inv = f"{customer}_inv_{i}"
        when = now - timedelta(days=3 * (invoices - i))
        events.append(
            failure(tenant, inv, category=category).model_copy(
                update={"customer_ref": customer, "occurred_at": when}
            )
        )
    paid = success(tenant, f"{customer}_inv_0").model_copy(update={"customer_ref": customer})
    return [*events, paid]


async def publish(
    settings: Settings, bootstrap: str, *items: PaymentEvent | tuple[str, bytes]
) -> None:
    """Append events (or (customer key, raw bytes) poison) to risk.customers, in order."""
    codec = make_codec(settings)
    topic = settings.topic("risk.customers")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for item in items:
            if isinstance(item, PaymentEvent):
                assert item.customer_ref is not None
                key = customer_key(item.tenant, item.customer_ref).encode()
                await producer.send_and_wait(topic, codec.encode(item, topic=topic), key=key)
            else:
                await producer.send_and_wait(topic, item[1], key=item[0].encode())
    finally:
        await producer.stop()


def expected(codec: Codec, records: list[Any]) -> Emitted:
    """What the agent must have sent for ``records`` (partition/offset order), per key."""
    model = load_model()
    state: dict[bytes, tuple[CustomerFeatures | None, Score | None]] = {}
    out: Emitted = defaultdict(list)
    for r in records:
        try:
            event = codec.decode(r.value, PaymentEvent, topic=r.topic)
        except Exception:  # the poison record: dead-lettered, no score
            continue
        assert event.customer_ref is not None
        features, last = state.get(r.key, (None, None))
        features = evolve(features, event)
        new = score(model, features, datetime.fromtimestamp(r.timestamp / 1000.0, UTC))
        if changed(last, new):
            out[r.key].append(risk_score(event.tenant, event.customer_ref, new))
            last = new
        state[r.key] = (features, last)
    return dict(out)


async def emitted(settings: Settings, bootstrap: str) -> Emitted:
    codec = make_codec(settings)
    out: Emitted = defaultdict(list)
    for r in await topic_records(bootstrap, settings.topic("risk.scores")):
        out[r.key].append(codec.decode(r.value, RiskScore, topic=r.topic))
    return dict(out)


async def settled(settings: Settings, bootstrap: str, worker: Any, log: Path) -> Emitted:
    """Wait until risk.scores holds exactly what the records of risk.customers call for."""
    codec = make_codec(settings)

    async def same() -> Emitted | None:
        assert worker.poll() is None, log_tail(log)
        records = await topic_records(bootstrap, settings.topic("risk.customers"))
        want = expected(codec, records)
        return want if want and await emitted(settings, bootstrap) == want else None

    with contextlib.suppress(AssertionError):
        return await eventually(same, timeout=120, what="risk.scores matching the pure fold")
    records = await topic_records(bootstrap, settings.topic("risk.customers"))
    assert await emitted(settings, bootstrap) == expected(codec, records), log_tail(log)
    raise AssertionError("unreachable")


async def test_scores_follow_the_pure_fold_and_survive_a_cold_restart(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    other = f"{unique}-other"
    first = [
        *history(unique, "cus_a", 6),
        *history(unique, "cus_b", 2, hard=True),
        *history(other, "cus_a", 1),  # same customer ref, another tenant: its own features
    ]
    poison = (customer_key(unique, "cus_a"), b"\x00not avro")
    await publish(test_settings, kafka_bootstrap, poison, *first)

    run1 = _settings(test_settings, tmp_path, "w1")
    log1 = tmp_path / "w1.log"
    with paywatch_process(run1, "run", "worker", log=log1) as worker:
        before = await settled(run1, kafka_bootstrap, worker, log1)
    keys = {
        customer_key(unique, "cus_a"),
        customer_key(unique, "cus_b"),
        customer_key(other, "cus_a"),
    }
    assert {k.decode() for k in before} == keys
    a = before[customer_key(unique, "cus_a").encode()]
    assert all(s.tenant == unique and s.customer_ref == "cus_a" for s in a)
    assert [c.feature for c in a[-1].contributions] == [r.split(" = ")[0] for r in a[-1].reasons]
    # Hard declines (the card will not work again) weigh more than one soft, recovered one.
    b_last = before[customer_key(unique, "cus_b").encode()][-1]
    other_last = before[customer_key(other, "cus_a").encode()][-1]
    assert b_last.score > other_last.score

    letters = await topic_records(kafka_bootstrap, test_settings.topic("payments.events.dlq"))
    risk_letters = [
        make_codec(test_settings).decode(r.value, DeadLetter, topic=r.topic) for r in letters
    ]
    risk_letters = [d for d in risk_letters if d.stage == "risk" and d.payload == poison[1]]
    assert len(risk_letters) == 1 and "CodecError" in risk_letters[0].error

    # A new worker with an empty state directory restores the table from its changelog
    # and goes on as if it had never stopped: the same records call for the same scores.
    more = [
        failure(unique, "cus_a_inv_new", category=DeclineCategory.FRAUD).model_copy(
            update={"customer_ref": "cus_a", "type": EventType.PAYMENT_FAILED}
        ),
        *history(unique, "cus_b", 4, hard=True)[2:],
    ]
    await publish(test_settings, kafka_bootstrap, *more)
    run2 = _settings(test_settings, tmp_path, "w2")
    log2 = tmp_path / "w2.log"
    with paywatch_process(run2, "run", "worker", log=log2) as worker:
        after = await settled(run2, kafka_bootstrap, worker, log2)
    grown = sum(map(len, after.values())) - sum(map(len, before.values()))
    assert grown >= 1, "the events after the restart moved at least one score"


async def test_a_generated_population_scores_the_same_across_a_cold_restart(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """A realistic history (risk.population) in two halves, a new worker with an empty state
    directory for the second: every score equals the one-pass pure fold of the whole log."""
    start = datetime.now(UTC) - timedelta(days=120)
    people = generate(customers=60, months=4, seed=11, start=start, tenant=unique)
    events = [e for e in people.events if e.customer_ref is not None]
    half = len(events) // 2
    await publish(test_settings, kafka_bootstrap, *events[:half])
    for n, part in enumerate((events[half:], [])):
        run = _settings(test_settings, tmp_path, f"w{n}")
        log = tmp_path / f"w{n}.log"
        with paywatch_process(run, "run", "worker", log=log) as worker:
            scored = await settled(run, kafka_bootstrap, worker, log)
        if part:
            await publish(test_settings, kafka_bootstrap, *part)
    customers = {e.customer_ref for e in events}
    assert len(scored) == len(customers) and sum(map(len, scored.values())) > len(customers)
