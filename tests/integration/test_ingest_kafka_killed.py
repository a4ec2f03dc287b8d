"""Kafka killed under ingest (engine issue, item 11): 503 while it is down, nothing acked lost.

The test starts a broker of its own (free ports, a temporary state directory) so it can
SIGKILL it without touching the session broker the other tests share. Ingest runs
in-process on that broker and the session Postgres. Webhooks are posted one at a time, so
the kill lands between requests: every 200 before it was acknowledged by the broker.

While the broker is down every delivery must be answered 503 (retry later: never 500,
never 200) and ``/health`` must say Kafka is unreachable. After the restart ingest must
accept again without being restarted itself, every delivery answered 200 must be in
``webhooks.raw`` exactly once, and the deliveries refused with 503, posted again as a
provider would, must be accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from paywatch.api.ingest.app import create_app
from paywatch.errors import Retryable
from paywatch.kafka.admin import ensure_topics
from paywatch.kafka.appender import STOP_GRACE_S, KafkaAppender
from paywatch.kafka.codec import make_codec
from paywatch.ops.kafka import EmbeddedKafka
from paywatch.schemas.models import RawWebhook
from paywatch.schemas.topics import WEBHOOKS_RAW, TopicSpec, topic_specs
from paywatch.settings import Settings
from tests.integration.test_ingest import SECRET, _tenant, failure_body, signed
from tests.kafka_helpers import eventually, topic_records

ACK_TIMEOUT_S = 1.5
BEFORE, DURING, AFTER = 6, 3, 6


@pytest.fixture
def own_kafka(
    tmp_path: Path, kafka_libs: Path, free_port: Callable[[], int]
) -> Iterator[EmbeddedKafka]:
    """A broker only this test uses (and kills), on free ports in a temporary directory."""
    settings = Settings(
        state_dir=tmp_path / "own-kafka",
        kafka_bootstrap=None,
        database_url=None,
        embedded_kafka_port=free_port(),
        embedded_kafka_controller_port=free_port(),
        kafka_heap="384m",
    )
    kafka = EmbeddedKafka(settings)
    kafka.ensure_jars(seed_from=kafka_libs)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
async def settings(
    own_kafka: EmbeddedKafka, test_settings: Settings, pg_dsn: str, unique: str
) -> Settings:
    """This test's topics on its own broker, a short ack timeout, and a tenant."""
    ours = test_settings.model_copy(
        update={"kafka_bootstrap": own_kafka.bootstrap, "ingest_ack_timeout_s": ACK_TIMEOUT_S}
    )
    ensure_topics(own_kafka.bootstrap, topic_specs(ours), timeout=60.0)
    await _tenant(pg_dsn, ours, unique, SECRET)
    return ours


@pytest.fixture
async def client(
    settings: Settings, own_kafka: EmbeddedKafka, pg_dsn: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, own_kafka.bootstrap, pg_dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ingest", timeout=30.0
        ) as http:
            yield http
        if not own_kafka.is_running():  # the test failed while it was down
            # The producer flushes on stop and would wait for the broker forever.
            await asyncio.to_thread(own_kafka.start)


async def _kill(kafka: EmbeddedKafka) -> None:
    pid = kafka.pid()
    assert pid is not None, "the test broker is not running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while kafka.is_running():  # a zombie or a vanished pid both count as dead
        assert time.monotonic() < deadline, "the killed broker is still alive"
        await asyncio.sleep(0.05)  # poll interval of a deadline-bound wait


class Deliveries:
    """Posts distinct signed Stripe failures; remembers what each answer was."""

    def __init__(self, http: httpx.AsyncClient, tenant: str) -> None:
        self.http = http
        self.tenant = tenant
        self.accepted: dict[str, str] = {}  # ingest_id -> Stripe event id
        self.refused: list[str] = []  # Stripe event ids answered 503
        self.bodies: dict[str, bytes] = {}
        self._count = 0

    def new(self) -> str:
        self._count += 1
        event_id = f"evt_killed_{self._count}"
        self.bodies[event_id] = failure_body(event_id=event_id, invoice=f"in_killed_{self._count}")
        return event_id

    async def post(self, event_id: str) -> httpx.Response:
        body = self.bodies[event_id]
        resp = await self.http.post(
            f"/webhooks/stripe/{self.tenant}", content=body, headers=signed(body)
        )
        if resp.status_code == 200:
            self.accepted[resp.json()["ingest_id"]] = event_id
        elif resp.status_code == 503:
            self.refused.append(event_id)
        return resp


async def test_kafka_killed_is_503_and_nothing_acked_is_lost(
    client: httpx.AsyncClient, settings: Settings, own_kafka: EmbeddedKafka, unique: str
) -> None:
    posts = Deliveries(client, unique)
    for _ in range(BEFORE):
        resp = await posts.post(posts.new())
        assert resp.status_code == 200, resp.text
    assert (await client.get("/health")).status_code == 200

    await _kill(own_kafka)
    for _ in range(DURING):
        resp = await posts.post(posts.new())
        assert resp.status_code == 503, resp.text  # not 500, not 200: the provider retries
        assert resp.json()["error"] == "unavailable"
    health = await client.get("/health")
    assert (health.status_code, health.json()["kafka"]) == (503, "unreachable")
    assert len(posts.accepted) == BEFORE

    await asyncio.to_thread(own_kafka.start)  # ingest keeps running meanwhile

    async def accepts_again() -> bool:
        # A delivery refused while the broker reconnects is retried, as a provider would.
        return (await posts.post(posts.new())).status_code == 200

    await eventually(accepts_again, timeout=90, every=0.5, what="ingest accepting again")
    assert (await client.get("/health")).status_code == 200
    for _ in range(AFTER):
        resp = await posts.post(posts.new())
        assert resp.status_code == 200, resp.text
    for event_id in sorted(set(posts.refused) - set(posts.accepted.values())):
        resp = await posts.post(event_id)  # the provider's redelivery of a 503
        assert resp.status_code == 200, resp.text

    await _assert_log_holds_every_accepted_delivery(settings, posts)


async def _assert_log_holds_every_accepted_delivery(settings: Settings, posts: Deliveries) -> None:
    codec = make_codec(settings)
    records = await topic_records(settings.kafka_bootstrap or "", settings.topic(WEBHOOKS_RAW))
    raws = [codec.decode(record.value, RawWebhook) for record in records]
    logged = [raw.ingest_id for raw in raws]
    # Every 200 is in the log, exactly once (idempotent producer: no duplicate from retries).
    assert sorted(i for i in logged if i in posts.accepted) == sorted(posts.accepted)
    for raw in raws:
        event_id = json.loads(raw.body)["id"]
        if raw.ingest_id in posts.accepted:
            assert posts.accepted[raw.ingest_id] == event_id
            assert raw.body == posts.bodies[event_id]  # exact bytes
        else:
            # Only a delivery answered 503 may also sit in the log: queued in the producer
            # when the broker died, sent after it came back. The provider redelivered it and
            # the normalize agent drops the duplicate by event id.
            assert event_id in posts.refused, f"{raw.ingest_id} was never answered 200 or 503"
    # Every delivery, including those refused while the broker was down, is accepted now.
    assert set(posts.accepted.values()) == set(posts.bodies)
    assert len(posts.accepted) >= BEFORE + DURING + AFTER


async def test_the_appender_stops_while_kafka_is_dead(own_kafka: EmbeddedKafka) -> None:
    """A producer holding records for a dead broker must not hang the process's shutdown."""
    ensure_topics(own_kafka.bootstrap, [TopicSpec("stop-test", 1)], timeout=60.0)
    appender = KafkaAppender(own_kafka.bootstrap, ACK_TIMEOUT_S, client_id="stop-test")
    await appender.start()
    await appender.append("stop-test", b"k", b"before")
    pid = own_kafka.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Retryable):
        await appender.append("stop-test", b"k", b"during")  # queued, never acked
    await asyncio.wait_for(appender.stop(), ACK_TIMEOUT_S + STOP_GRACE_S + 10)

