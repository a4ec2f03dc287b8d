"""Poison records mixed into a normal stream: each one dead-lettered alone, the worker goes on.

Real Kafka, the worker as a real process. Into ``webhooks.raw`` go normal Stripe failures
and, between them, records no stage can handle: bytes that are not Avro, an unknown
provider, an invoice id with a NUL (Postgres refuses it), ``attempt_count`` 20000 (the card
ledger's record would exceed Kafka's limit), an amount of 2^64 and a record so large that
its dead letter cannot carry it. Every normal record must be normalized, every poison one
must be in ``webhooks.raw.dlq`` with its coordinates and reason, and the worker must still
be the process that started (no crash, no restart).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import DeadLetter, RawWebhook
from paywatch.settings import Settings
from tests.builders import stripe as samples
from tests.fault_worker import EventsTail, append_failures
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process

NORMAL = 40


def stripe_raw(tenant: str, name: str, **invoice: object) -> RawWebhook:
    doc = samples.stripe_event(
        "invoice.payment_failed",
        samples.stripe_invoice(basil=True, **invoice),  # type: ignore[arg-type]
        event_id=f"evt_poison_{name}",
    )
    return RawWebhook(
        ingest_id=f"poison-{name}",
        tenant=tenant,
        provider="stripe",
        received_at=datetime.now(UTC),
        body=samples.stripe_body(doc),
    )


def poison(settings: Settings, tenant: str) -> dict[str, tuple[bytes, str]]:
    """name -> (raw value, what its dead letter's error must say)."""
    codec = make_codec(settings)
    topic = settings.topic("webhooks.raw")
    unknown = RawWebhook(
        ingest_id="poison-unknown",
        tenant=tenant,
        provider="nope",
        received_at=datetime.now(UTC),
        body=b"{}",
    )
    return {
        "garbage": (b"\x00garbage", "CodecError"),
        "unknown-provider": (codec.encode(unknown, topic=topic), "UnknownProvider"),
        "nul-invoice": (
            codec.encode(stripe_raw(tenant, "nul", invoice_id="in_\x00x"), topic=topic),
            "PayloadError",
        ),
        "attempts": (
            codec.encode(stripe_raw(tenant, "att", attempt_count=20000), topic=topic),
            "PayloadError",
        ),
        "amount": (
            codec.encode(stripe_raw(tenant, "amt", amount_due=2**64), topic=topic),
            "PayloadError",
        ),
        "too-large": (b"\x01" * 1_040_000, "payload omitted"),
    }


async def test_every_poison_record_is_dead_lettered_alone_and_the_worker_goes_on(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    records = poison(test_settings, unique)
    normal = await append_failures(test_settings, kafka_bootstrap, unique, NORMAL // 2)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    coords = {}
    try:
        for name, (value, _) in records.items():
            meta = await producer.send_and_wait(
                test_settings.topic("webhooks.raw"), value=value, key=f"{unique}/{name}".encode()
            )
            coords[name] = (meta.partition, meta.offset)
    finally:
        await producer.stop()
    normal |= await append_failures(
        test_settings, kafka_bootstrap, unique, NORMAL // 2, first=NORMAL // 2
    )
    assert len(normal) == NORMAL

    codec = make_codec(test_settings)
    log = tmp_path / "worker.log"
    with paywatch_process(test_settings, "run", "worker", log=log) as worker:

        async def letters() -> dict[str, DeadLetter] | None:
            assert worker.poll() is None, log_tail(log)
            found = await topic_records(kafka_bootstrap, test_settings.topic("webhooks.raw.dlq"))
            by_name = {
                r.key.decode().split("/", 1)[1]: codec.decode(r.value, DeadLetter) for r in found
            }
            return by_name if len(by_name) == len(records) else None

        dead = await eventually(letters, timeout=120, what="a dead letter per poison record")
        async with EventsTail(test_settings, kafka_bootstrap) as tail:

            async def covered() -> bool:
                return await tail.poll() >= NORMAL

            await eventually(covered, timeout=60, what="every normal record normalized")
        assert worker.poll() is None, log_tail(log)
        assert log.read_text().count("[^Worker]: Starting") == 1

    assert set(tail.by_raw) == normal
    for name, (value, reason) in records.items():
        letter = dead[name]
        assert reason in letter.error, (name, letter.error)
        assert (letter.stage, letter.source_topic) == (
            "normalize",
            test_settings.topic("webhooks.raw"),
        )
        assert (letter.source_partition, letter.source_offset) == coords[name]
        assert letter.payload == (b"" if name == "too-large" else value)
