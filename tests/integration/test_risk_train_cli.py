"""`paywatch risk train` and `paywatch demo generate` (--via raw and --via ingest) for real.

Real broker and Postgres; ``--via ingest`` posts to a real `paywatch run ingest` process.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from paywatch.kafka.codec import make_codec
from paywatch.providers.generic import generic
from paywatch.risk.model import parse_model
from paywatch.risk.population import generate
from paywatch.schemas.models import PaymentEvent, RawWebhook
from paywatch.settings import Settings
from paywatch.streams.normalize import event_key
from tests.integration.test_cli import paywatch
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process

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
        assert raw.subject == generic.subject(generic.parse(raw.body))  # as ingest keys it
        [event] = generic.normalize(raw, topic, record.partition, record.offset)
        normalized[event.event_id] = event.model_copy(update={"raw": None})
    assert normalized == {e.event_id: e for e in people.events}


DEMO = ("--customers", "20", "--months", "2", "--seed", "5", "--start", "2025-01-01")
WROTE = re.compile(r"^wrote (\d+) generic webhooks for tenant (\S+) via (raw|ingest):", re.M)
Sent = tuple[bytes, str, bytes]  # key subject, webhook-id header, body
Failed = tuple[int, str]  # exit code, stderr


def _secret(label: str) -> str:
    """A Standard Webhooks secret (``whsec_<base64>``) of its own for each label."""
    return "whsec_" + base64.b64encode(hashlib.sha256(label.encode()).digest()).decode()


def _tenant(settings: Settings, name: str, *secrets: tuple[str, str]) -> None:
    """Create a tenant and store (provider, signing_secret) pairs with the CLI, as a user does."""
    run = paywatch(settings, "tenant", "create", name)
    assert run.returncode == 0, run.stdout + run.stderr
    for provider, secret in secrets:
        line = f"signing_secret={secret}\n"
        run = paywatch(settings, "tenant", "secret", name, provider, "-", input=line)
        assert run.returncode == 0, run.stdout + run.stderr


def _written(run: subprocess.CompletedProcess[str], tenant: str, via: str) -> int:
    """The count the CLI says it wrote (it must have succeeded and said it)."""
    assert run.returncode == 0, run.stdout + run.stderr
    found = WROTE.search(run.stdout)
    assert found is not None and found.group(2, 3) == (tenant, via), run.stdout
    return int(found[1])


async def _raw_webhooks(settings: Settings) -> list[tuple[bytes, RawWebhook, int, int]]:
    """Every webhooks.raw record of this test: (key, decoded value, partition, offset)."""
    codec, topic = make_codec(settings), settings.topic("webhooks.raw")
    records = await topic_records(str(settings.kafka_bootstrap), topic)
    return [
        (r.key, codec.decode(r.value, RawWebhook, topic=topic), r.partition, r.offset)
        for r in records
    ]


def _as_sent(rows: list[tuple[bytes, RawWebhook, int, int]], tenant: str) -> list[Sent]:
    """What a tenant's webhooks carry that ingest must keep: key subject, webhook id, body."""
    prefix = f"{tenant}/generic/".encode()
    found = [
        (key.removeprefix(prefix), raw.headers["webhook-id"], raw.body)
        for key, raw, _, _ in rows
        if raw.tenant == tenant
    ]
    return sorted(found)


@pytest.fixture
async def ingest(
    test_settings: Settings, free_port: Callable[[], int], tmp_path: Path
) -> AsyncIterator[str]:
    """A real `paywatch run ingest` on a free port, answering /health; its base URL."""
    settings = test_settings.model_copy(update={"ingest_port": free_port()})
    url, log = f"http://127.0.0.1:{settings.ingest_port}", tmp_path / "ingest.log"
    with paywatch_process(settings, "run", "ingest", log=log) as proc:
        async with httpx.AsyncClient(timeout=5) as client:

            async def healthy() -> bool:
                assert proc.poll() is None, f"ingest exited {proc.returncode}:\n{log_tail(log)}"
                try:
                    return (await client.get(f"{url}/health")).status_code == 200
                except httpx.TransportError:
                    return False  # not listening yet

            await eventually(healthy, timeout=120, what=f"ingest /health on {url}")
        yield url
        assert proc.poll() is None, f"ingest died during the test:\n{log_tail(log)}"


async def test_demo_generate_via_ingest_lands_what_via_raw_writes(
    test_settings: Settings, unique: str, ingest: str
) -> None:
    _tenant(test_settings, unique, ("generic", _secret(unique)))
    run = paywatch(test_settings, "demo", "generate", "--tenant", unique, *DEMO,
                   "--via", "ingest", "--url", ingest)  # fmt: skip
    people = generate(20, 2, 5, START, tenant=unique)
    written = _written(run, unique, "ingest")
    assert written == len(people.events) > 0
    rows = await _raw_webhooks(test_settings)
    assert len(rows) == written
    assert {(raw.tenant, raw.provider) for _, raw, _, _ in rows} == {(unique, "generic")}
    topic = test_settings.topic("webhooks.raw")
    normalized = {}
    for key, raw, partition, offset in rows:  # what ingest verified and kept normalizes back
        assert key == f"{unique}/generic/{raw.subject}".encode()
        assert raw.headers["webhook-signature"].startswith("v1,")
        [event] = generic.normalize(raw, topic, partition, offset)
        normalized[event.event_id] = event.model_copy(update={"raw": None})
    assert normalized == {e.event_id: e for e in people.events}

    other = f"{unique}r"  # the same population via raw, for another tenant
    raw_run = paywatch(test_settings, "demo", "generate", "--tenant", other, *DEMO, "--via", "raw")
    assert _written(raw_run, other, "raw") == written
    rows = await _raw_webhooks(test_settings)
    assert len(rows) == 2 * written
    assert len(set(_as_sent(rows, unique))) == written
    assert _as_sent(rows, unique) == _as_sent(rows, other)


async def test_demo_generate_via_ingest_fails_fast_and_clearly_when_refused(
    test_settings: Settings, unique: str, ingest: str, scratch_db: str, free_port: Callable[[], int]
) -> None:
    def demo(tenant: str, url: str, settings: Settings = test_settings) -> Failed:
        run = paywatch(settings, "demo", "generate", "--tenant", tenant, *DEMO,
                       "--via", "ingest", "--url", url)  # fmt: skip
        assert run.returncode != 0 and "Traceback" not in run.stderr, run.stdout + run.stderr
        assert "wrote" not in run.stdout, run.stdout
        return run.returncode, run.stderr

    bare = f"{unique}n"  # a tenant with a Stripe secret but no generic one
    _tenant(test_settings, bare, ("stripe", "whsec_stripe_only"))
    code, err = demo(bare, ingest)
    assert code == 2 and f"tenant {bare} has no generic signing_secret" in err, err
    code, err = demo(f"{unique}u", ingest)
    assert code == 2 and f"unknown tenant {unique}u" in err, err

    wrong = f"{unique}w"  # the CLI's stack holds another secret than the ingest's stack
    _tenant(test_settings, wrong, ("generic", _secret(wrong)))
    theirs = test_settings.model_copy(update={"database_url": SecretStr(scratch_db)})
    _tenant(theirs, wrong, ("generic", _secret(f"{wrong}-elsewhere")))
    code, err = demo(wrong, ingest, theirs)
    assert code == 2 and "answered 401" in err and "bad_signature" in err, err
    assert "no webhook was accepted" in err, err  # every one was refused

    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, err = demo(wrong, nobody, theirs)
    assert code == 1 and f"no answer from the ingest at {nobody}" in err, err
    assert await _raw_webhooks(test_settings) == []
