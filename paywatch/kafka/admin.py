"""Creating the topics of :mod:`paywatch.schemas.topics` on the broker, idempotently.

Partition counts matter: every topic keyed by ``tenant/invoice_ref`` is co-partitioned with
the others (Faust tables and the saga rely on it), so an existing topic with a different
count is an error, never silently accepted. The admin client gets the transport security
of ``security`` (kafka/security.py); PLAINTEXT is the embedded broker's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from paywatch.errors import InfraError
from paywatch.kafka.security import PLAINTEXT, KafkaSecurity, librdkafka_config
from paywatch.schemas.topics import TopicSpec

log = logging.getLogger(__name__)


def admin_client(bootstrap: str, *, security: KafkaSecurity = PLAINTEXT) -> AdminClient:
    """An AdminClient whose librdkafka logs go to Python logging instead of stderr."""
    return AdminClient({"bootstrap.servers": bootstrap, **librdkafka_config(security)}, logger=log)


def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    timeout: float = 30.0,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> list[str]:
    """Create the missing topics, check the existing ones; return the names created."""
    admin = admin_client(bootstrap, security=security)
    existing = _partition_counts(admin, bootstrap, timeout)
    _check_partitions(specs, existing)
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return []
    created = _create(admin, missing, timeout)
    # A concurrent creator may have won the race with another partition count.
    _check_partitions(specs, _partition_counts(admin, bootstrap, timeout))
    _wait_visible(admin, bootstrap, [spec.name for spec in missing], timeout)
    log.info("created topics %s", ", ".join(created))
    return created


def _partition_counts(admin: AdminClient, bootstrap: str, timeout: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise InfraError(f"Kafka at {bootstrap} did not answer in {timeout:.0f} s: {exc}") from exc
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def _check_partitions(specs: Iterable[TopicSpec], existing: dict[str, int]) -> None:
    wrong = [
        f"{spec.name} has {existing[spec.name]} partitions, expected {spec.partitions}"
        for spec in specs
        if spec.name in existing and existing[spec.name] != spec.partitions
    ]
    if wrong:
        raise InfraError(
            "topics exist with the wrong partition count (co-partitioned topics must agree): "
            + "; ".join(wrong)
            + ". Set PAYWATCH_TOPIC_PARTITIONS to match, or recreate the topics."
        )


def _create(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float) -> list[str]:
    new = [
        NewTopic(
            s.name, num_partitions=s.partitions, replication_factor=s.replication, config=s.config
        )
        for s in specs
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    return [name for name, fut in futures.items() if _created(name, fut, timeout)]


def _created(name: str, fut: Future[Any], timeout: float) -> bool:
    """True if this call created the topic, False if it already existed."""
    try:
        fut.result(timeout=timeout)
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise InfraError(f"could not create topic {name}: {error.str()}") from exc
    except TimeoutError as exc:
        raise InfraError(f"creating topic {name} took longer than {timeout:.0f} s") from exc
    return True


def _wait_visible(admin: AdminClient, bootstrap: str, names: list[str], timeout: float) -> None:
    """Wait until the broker's metadata lists the topics with a leader for every partition."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        pending = [n for n in names if not _has_leaders(metadata.topics.get(n))]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise InfraError(f"topics {pending} created on {bootstrap} but not ready in time")
        time.sleep(0.1)  # polling the metadata: a condition with a deadline, not a guess


def _has_leaders(topic: Any) -> bool:
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(p.leader >= 0 for p in topic.partitions.values())
