"""Embedded Kafka and Postgres, topic bootstrap and stack discovery, on real servers."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from paywatch.errors import ConfigError, InfraError, StackNotRunning
from paywatch.kafka.admin import ensure_topics
from paywatch.ops.infra import Endpoints, infra_status, resolve_endpoints
from paywatch.ops.kafka import EmbeddedKafka
from paywatch.ops.postgres import EmbeddedPostgres
from paywatch.schemas.topics import TABLES, TopicSpec, changelog_name, topic_specs
from paywatch.settings import Settings
from tests.conftest import InfraHandle

READ_MODEL_TABLES = {
    "invoices",
    "failures",
    "event_log",
    "projection_checkpoints",
    "tenants",
    "api_keys",
    "tenant_policies",
    "tenant_policy_changes",
}


def _own_settings(tmp_path: Path, free_port: Callable[[], int]) -> Settings:
    """Embedded-only settings in a private state dir on free ports."""
    return Settings(
        state_dir=tmp_path / "state",
        kafka_bootstrap=None,
        database_url=None,
        embedded_kafka_port=free_port(),
        embedded_kafka_controller_port=free_port(),
        embedded_pg_port=free_port(),
        kafka_heap="256m",
    )


def _produce_one(bootstrap: str, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
    """Write one record with acks=all; return its (partition, offset)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
        }
    )
    delivered: list[tuple[int, int]] = []

    def on_delivery(err: object, msg: object) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return delivered[0]


def _consume_at(bootstrap: str, topic: str, partition: int, offset: int) -> bytes:
    """Read the record at topic[partition]@offset, waiting up to 30 s."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                value = msg.value()
                assert isinstance(value, bytes)
                return value
    finally:
        consumer.close()
    raise AssertionError(f"no record at {topic}[{partition}]@{offset} within 30 s")


def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource("topic", topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {name: entry.value for name, entry in entries.items()}


# -- the session stack ---------------------------------------------------------


def test_topics_have_partitions_and_config(test_settings: Settings) -> None:
    bootstrap = str(test_settings.kafka_bootstrap)
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics
    for spec in topic_specs(test_settings):
        assert len(topics[spec.name].partitions) == spec.partitions, spec.name
    assert len(topics[test_settings.topic("payments.events")].partitions) == 3
    assert len(topics[test_settings.topic("payments.events.dlq")].partitions) <= 3
    assert len(topics[test_settings.topic("recovery.policies")].partitions) <= 3
    for name in (
        "webhooks.raw",
        "webhooks.fetched",
        "payments.events",
        "recovery.commands",
        "recovery.transitions",
        "recovery.policies",
        "webhooks.raw.dlq",
    ):
        config = _topic_config(bootstrap, test_settings.topic(name))
        assert (config["retention.ms"], config["cleanup.policy"]) == ("-1", "delete"), name
    assert _topic_config(bootstrap, test_settings.topic("risk.scores"))["cleanup.policy"] == (
        "compact"
    )
    # The worker's table changelogs exist before any worker starts (compacted, co-partitioned).
    for table in TABLES:
        name = changelog_name(test_settings, table)
        assert name == f"{test_settings.app_id}-{test_settings.topic_prefix}{table}-changelog"
        assert len(topics[name].partitions) == 3, name
        assert _topic_config(bootstrap, name)["cleanup.policy"] == "compact", name
    assert _topic_config(bootstrap, test_settings.topic("alerts"))["retention.ms"] == "7776000000"


def test_ensure_topics_is_idempotent(test_settings: Settings) -> None:
    # test_settings created them already: a second and third run create nothing.
    bootstrap = str(test_settings.kafka_bootstrap)
    assert ensure_topics(bootstrap, topic_specs(test_settings)) == []
    assert ensure_topics(bootstrap, topic_specs(test_settings)) == []


def test_partition_mismatch_is_an_error(kafka_bootstrap: str, unique: str) -> None:
    name = f"{unique}.payments.events"
    assert ensure_topics(kafka_bootstrap, [TopicSpec(name, 1)]) == [name]
    with pytest.raises(InfraError, match=r"has 1 partitions, expected 3"):
        ensure_topics(kafka_bootstrap, [TopicSpec(name, 3)])


def test_produce_and_consume_one_record(test_settings: Settings) -> None:
    bootstrap, topic = str(test_settings.kafka_bootstrap), test_settings.topic("webhooks.raw")
    partition, offset = _produce_one(bootstrap, topic, b"acme/stripe", b"hello")
    assert _consume_at(bootstrap, topic, partition, offset) == b"hello"


async def test_postgres_is_migrated(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert READ_MODEL_TABLES <= {r["table_name"] for r in rows}


def test_stack_is_discoverable(infra: InfraHandle) -> None:
    assert resolve_endpoints(infra.settings) == Endpoints(infra.bootstrap, infra.dsn)
    status = infra_status(infra.settings)
    assert status["kafka"]["running"] and status["postgres"]["running"]
    assert "@" not in status["postgres"]["address"]  # never a user or password


# -- private servers -----------------------------------------------------------


@pytest.fixture
def own_pg(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(_own_settings(tmp_path, free_port))
    yield pg
    pg.stop()


@pytest.fixture
def own_kafka(
    tmp_path: Path, free_port: Callable[[], int], kafka_libs: Path
) -> Iterator[EmbeddedKafka]:
    kafka = EmbeddedKafka(_own_settings(tmp_path, free_port))
    kafka.ensure_jars(seed_from=kafka_libs)
    yield kafka
    kafka.stop()


async def test_embedded_postgres_keeps_data_across_restarts(own_pg: EmbeddedPostgres) -> None:
    await asyncio.to_thread(own_pg.start)
    conn = await asyncpg.connect(own_pg.dsn)
    await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
    await conn.close()
    pid_file = own_pg.data_dir / "postmaster.pid"
    leftover = pid_file.read_text().splitlines()

    assert await asyncio.to_thread(own_pg.stop)
    assert not own_pg.is_running()
    # A killed server leaves postmaster.pid behind, and its pid may be reused by then.
    pid_file.write_text("\n".join([str(os.getpid()), *leftover[1:]]) + "\n")
    await asyncio.to_thread(own_pg.start)

    conn = await asyncpg.connect(own_pg.dsn)
    try:
        assert await conn.fetchval("SELECT v FROM kept") == "still here"
    finally:
        await conn.close()


def test_embedded_kafka_keeps_data_across_restarts(own_kafka: EmbeddedKafka) -> None:
    own_kafka.start()
    pid = own_kafka.pid()
    started = time.monotonic()
    own_kafka.start()  # already running: a no-op
    assert own_kafka.pid() == pid and time.monotonic() - started < 1
    ensure_topics(own_kafka.bootstrap, [TopicSpec("kept", 1)])
    partition, offset = _produce_one(own_kafka.bootstrap, "kept", b"k", b"still here")

    assert own_kafka.stop()
    assert not own_kafka.is_running()
    own_kafka.pid_file.write_text(f"{os.getpid()}\n")  # stale pid file, pid now someone else's
    assert not own_kafka.is_running()
    own_kafka.start()

    assert own_kafka.pid() not in (None, pid)
    assert _consume_at(own_kafka.bootstrap, "kept", partition, offset) == b"still here"


def test_port_in_use_is_reported(own_pg: EmbeddedPostgres, own_kafka: EmbeddedKafka) -> None:
    with socket.socket() as pg_squatter, socket.socket() as kafka_squatter:
        pg_squatter.bind(("127.0.0.1", own_pg.port))
        pg_squatter.listen()
        kafka_squatter.bind(("127.0.0.1", own_kafka.settings.embedded_kafka_port))
        kafka_squatter.listen()
        with pytest.raises(InfraError, match=rf"port {own_pg.port} .* already in use"):
            own_pg.start()
        with pytest.raises(InfraError, match="already in use"):
            own_kafka.start()
    assert not own_kafka.is_running() and not own_pg.is_running()


def test_broker_that_dies_while_starting_reports_its_log(
    tmp_path: Path, free_port: Callable[[], int], kafka_libs: Path
) -> None:
    settings = _own_settings(tmp_path, free_port).model_copy(update={"kafka_heap": "nonsense"})
    kafka = EmbeddedKafka(settings)
    kafka.ensure_jars(seed_from=kafka_libs)
    with pytest.raises(InfraError, match=r"(?s)Kafka exited .* while starting.*heap size"):
        kafka.start()
    assert not kafka.is_running() and not kafka.pid_file.exists()


# -- no servers needed ---------------------------------------------------------


def test_missing_java_is_a_config_error(
    tmp_path: Path, free_port: Callable[[], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    kafka = EmbeddedKafka(_own_settings(tmp_path, free_port))
    with pytest.raises(ConfigError) as raised:
        kafka.start()
    message = str(raised.value)
    assert "java" in message and "mvn" in message
    assert "apt-get install openjdk-17-jre-headless maven" in message
    assert "PAYWATCH_KAFKA_BOOTSTRAP" in message


def test_resolve_endpoints_on_an_empty_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYWATCH_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("PAYWATCH_DATABASE_URL", raising=False)
    settings = Settings(state_dir=tmp_path)
    with pytest.raises(StackNotRunning) as raised:
        resolve_endpoints(settings)
    assert str(raised.value) == (
        f"paywatch is not running here (state dir {tmp_path.resolve()}): start it with "
        "`make run` or `paywatch up -d`, or set PAYWATCH_KAFKA_BOOTSTRAP and PAYWATCH_DATABASE_URL"
    )
