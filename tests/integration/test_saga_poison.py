"""Poison records for the saga and card-ledger stages: each dead-lettered alone, both go on.

Real Kafka, the worker as a real process on the production store. Between normal payment
failures go records the saga and card-ledger agents cannot handle: bytes that are not Avro
on ``payments.events``, a tick that is not JSON and one naming no timer on
``recovery.timers``, a ``recovery.cards`` record that is not JSON and one of an unknown
kind. Every poison record must be in ``payments.events.dlq`` with its stage, coordinates
and reason; every normal failure must get its saga transition (the batches around the
poison were decided); and the worker must still be the process that started.
"""

from __future__ import annotations

from pathlib import Path

from aiokafka import AIOKafkaProducer

from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import DeadLetter
from paywatch.settings import Settings
from paywatch.streams.normalize import event_key
from tests.fault_worker import TransitionsTail
from tests.integration.test_projector import event
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process

NORMAL = 30


async def test_every_saga_and_card_poison_is_dead_lettered_alone_and_both_go_on(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = test_settings.model_copy(update={"table_store": "rocksdb://"})
    codec = make_codec(settings)
    events_topic = settings.topic("payments.events")
    poison = {
        "not-avro": (events_topic, b"\x00\x01 not avro", "saga"),
        "tick-not-json": (settings.topic("recovery.timers"), b"{not json", "saga"),
        "tick-no-timer": (settings.topic("recovery.timers"), b'{"kind": "nothing"}', "saga"),
        "card-not-json": (settings.topic("recovery.cards"), b"\xff\xfe", "card-ledger"),
        "card-unknown": (
            settings.topic("recovery.cards"),
            b'{"k": "zz", "card": "c1"}',
            "card-ledger",
        ),
    }
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    coords = {}
    try:
        for n in range(NORMAL):
            failure = event(unique, n, f"in_sp_{n:03d}")
            await producer.send_and_wait(
                events_topic,
                key=event_key(failure),
                value=codec.encode(failure, topic=events_topic),
            )
            if n % 6 == 0 and n // 6 < len(poison):
                name = list(poison)[n // 6]
                topic, value, _ = poison[name]
                meta = await producer.send_and_wait(
                    topic, key=f"{unique}/{name}".encode(), value=value
                )
                coords[name] = (topic, meta.partition, meta.offset)
    finally:
        await producer.stop()
    assert coords.keys() == poison.keys()

    log = tmp_path / "worker.log"
    with paywatch_process(settings, "run", "worker", log=log) as worker:

        async def letters() -> dict[str, DeadLetter] | None:
            assert worker.poll() is None, log_tail(log)
            found = await topic_records(kafka_bootstrap, settings.topic("payments.events.dlq"))
            by_name = {
                r.key.decode().split("/", 1)[1]: codec.decode(r.value, DeadLetter)
                for r in found
                if r.key and r.key.startswith(f"{unique}/".encode())
            }
            return by_name if len(by_name) >= len(poison) else None

        dead = await eventually(letters, timeout=120, what="a dead letter per poison record")
        async with TransitionsTail(settings, kafka_bootstrap) as decisions:

            async def decided() -> bool:
                return await decisions.poll() >= NORMAL

            await eventually(decided, timeout=120, what="every normal failure decided")
        assert worker.poll() is None, log_tail(log)
        assert log.read_text().count("[^Worker]: Starting") == 1

    assert decisions.invoices == {f"in_sp_{n:03d}" for n in range(NORMAL)}
    assert dead.keys() == poison.keys()
    for name, (topic, value, stage) in poison.items():
        letter = dead[name]
        assert (letter.stage, letter.source_topic) == (stage, topic), (name, letter)
        assert (letter.source_topic, letter.source_partition, letter.source_offset) == coords[name]
        assert letter.payload == value and letter.error, (name, letter)
