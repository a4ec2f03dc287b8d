"""`paywatch risk train` and `paywatch demo generate --via raw` on the real broker."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from paywatch.kafka.codec import make_codec
from paywatch.providers.generic import generic
from paywatch.risk.model import parse_model
from paywatch.risk.population import generate
from paywatch.schemas.models import PaymentEvent, RawWebhook
from paywatch.settings import Settings
from paywatch.streams.normalize import event_key
from tests.integration.test_cli import paywatch
from tests.kafka_helpers import topic_records

START = datetime(2025, 1, 1, tzinfo=UTC)
METRICS = re.compile(
    r"^(trained|prior) (\S+): auc=([0-9.]+) log_loss=([0-9.]+) ece=([0-9.]+) "
    r"\(n=(\d+), lost=(\d+)\)$",
    re.M,
)


async def publish(settings: Settings, events: tuple[PaymentEvent, ...]) -> None:
    """All events to payments.events, acknowledged (sent together, awaited once)."""
    codec, topic = make_codec(settings), settings.topic("payments.events")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        sent = [
            await producer.send(topic, codec.encode(e, topic=topic), key=event_key(e))
            for e in events
        ]
        for future in sent:
            await future
    finally:
        await producer.stop()


async def test_train_reads_the_tenants_history_and_writes_a_loadable_model(
    test_settings: Settings, unique: str, tmp_path: Path
) -> None:
    people = generate(1500, 12, 1, START, tenant=unique)
    other = generate(60, 12, 2, START, tenant=f"{unique}x")  # another tenant: ignored
    await publish(test_settings, people.events + other.events)
    out = tmp_path / "model.json"
    run = paywatch(test_settings, "risk", "train", "--tenant", unique, "--out", str(out),
                   "--version", "acme-test")  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"tenant {unique}: {len(people.events)} events (0 undecodable skipped)" in run.stdout
    found = {m[0]: m for m in METRICS.findall(run.stdout)}
    assert set(found) == {"trained", "prior"}, run.stdout
    assert found["trained"][1] == "acme-test" and found["prior"][1] == "risk-v1"
    assert found["trained"][5:] == found["prior"][5:]  # the same held-out examples
    for _, _, auc, log_loss, ece, n, lost in found.values():
        assert 0 < float(auc) < 1 and float(log_loss) > 0 and 0 <= float(ece) < 1
        assert 0 < int(lost) < int(n)
    model = parse_model(out.read_bytes())
    assert model.version == "acme-test" and f"wrote {out}" in run.stdout

    early = paywatch(test_settings, "risk", "train", "--tenant", unique, "--to", "2025-03-01")
    assert early.returncode == 2 and "too few examples" in early.stderr, early.stderr
    nobody = paywatch(test_settings, "risk", "train", "--tenant", f"{unique}-none")
    assert nobody.returncode == 2 and "too few examples" in nobody.stderr


async def test_demo_generate_raw_lands_generic_webhooks_in_webhooks_raw(
    test_settings: Settings, unique: str
) -> None:
    args = ("--customers", "30", "--months", "4", "--seed", "5", "--start", "2025-01-01")
    run = paywatch(test_settings, "demo", "generate", "--tenant", unique, *args, "--via", "raw")
    assert run.returncode == 0, run.stdout + run.stderr
    people = generate(30, 4, 5, START, tenant=unique)
    assert f"wrote {len(people.events)} generic webhooks for tenant {unique}" in run.stdout
    codec, topic = make_codec(test_settings), test_settings.topic("webhooks.raw")
    records = await topic_records(str(test_settings.kafka_bootstrap), topic)
    raws = [codec.decode(r.value, RawWebhook, topic=topic) for r in records]
    assert len(raws) == len(people.events)
    assert {(r.tenant, r.provider) for r in raws} == {(unique, "generic")}
    normalized = {}
    for record, raw in zip(records, raws, strict=True):
        assert record.key == f"{unique}/generic/{raw.subject}".encode()
        [event] = generic.normalize(raw, topic, record.partition, record.offset)
        normalized[event.event_id] = event.model_copy(update={"raw": None})
    assert normalized == {e.event_id: e for e in people.events}
