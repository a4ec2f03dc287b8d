"""Kafka client configurations, in one place (ARCHITECTURE §7, reference/stack.md).

Producers are ``acks=all`` with idempotence set explicitly (aiokafka defaults to acks=1
and no idempotence); committing consumers never auto-commit and start from the earliest
offset, so nothing is skipped on a first start or after a retention gap. Every client
gets the transport security of ``security`` (kafka/security.py); PLAINTEXT, the default,
is the embedded broker's only listener.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from paywatch.kafka.security import PLAINTEXT, KafkaSecurity, aiokafka_options


def reliable_producer(
    bootstrap: str,
    *,
    client_id: str,
    request_timeout_s: float | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> AIOKafkaProducer:
    """An idempotent acks=all producer that sends without lingering."""
    options: dict[str, object] = {}
    if request_timeout_s is not None:
        options["request_timeout_ms"] = int(request_timeout_s * 1000)
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        client_id=client_id,
        **aiokafka_options(security),
        **options,
    )


def group_consumer(
    bootstrap: str, *, group_id: str, client_id: str, security: KafkaSecurity = PLAINTEXT
) -> AIOKafkaConsumer:
    """A consumer-group member that commits by hand, reading committed records only."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **aiokafka_options(security),
    )


def log_reader(
    bootstrap: str, *, client_id: str, security: KafkaSecurity = PLAINTEXT, **options: Any
) -> AIOKafkaConsumer:
    """A consumer outside any group (partitions assigned by hand), reading from the start;
    ``options``: more aiokafka settings (e.g. ``isolation_level``, fetch sizes)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
        **aiokafka_options(security),
    )
