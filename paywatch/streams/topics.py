"""The Kafka topics of ARCHITECTURE §7 and an idempotent way to create them.

Partition counts matter: every topic keyed by ``tenant/invoice_ref`` is
co-partitioned with the others (Faust tables and the saga rely on it), so an
existing topic with a different count is an error, never silently accepted.

DLQs get at most ``DLQ_MAX_PARTITIONS`` partitions: dead letters are rare,
read by humans and replay tools, and never joined with anything, so a handful
of partitions is plenty and keeps the broker's file count down. The same holds
for ``recovery.policies`` (a few changes per tenant, read whole by every worker),
kept forever like the other logs: it is the audit trail of policy changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from paywatch.errors import InfraError
from paywatch.settings import Settings

log = logging.getLogger(__name__)

WEBHOOKS_RAW = "webhooks.raw"
WEBHOOKS_FETCHED = "webhooks.fetched"
PAYMENTS_EVENTS = "payments.events"
RECOVERY_COMMANDS = "recovery.commands"
RECOVERY_TRANSITIONS = "recovery.transitions"
RECOVERY_TIMERS = "recovery.timers"
"""Internal: ticks that make the saga agent fire a due timer (co-partitioned with
payments.events; the timers themselves live in the saga table)."""
RISK_SCORES = "risk.scores"
ALERTS = "alerts"
RECOVERY_POLICIES = "recovery.policies"
DLQ_SOURCES = (WEBHOOKS_RAW, WEBHOOKS_FETCHED, PAYMENTS_EVENTS, RECOVERY_COMMANDS)
DLQ_MAX_PARTITIONS = 3

FOREVER = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
COMPACTED = {"cleanup.policy": "compact"}
SEVEN_DAYS = {"retention.ms": str(7 * 24 * 3600 * 1000), "cleanup.policy": "delete"}
NINETY_DAYS = {"retention.ms": str(90 * 24 * 3600 * 1000), "cleanup.policy": "delete"}
_LOGS_FOREVER = (
    WEBHOOKS_RAW,
    WEBHOOKS_FETCHED,
    PAYMENTS_EVENTS,
    RECOVERY_COMMANDS,
    RECOVERY_TRANSITIONS,
)


@dataclass(frozen=True)
class TopicSpec:
    """One topic as paywatch expects it on the broker."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    replication: int = 1


def dlq_name(source: str) -> str:
    """Logical name of the dead-letter topic for a logical source topic."""
    return f"{source}.dlq"


TABLES = ("normalize-seen", "recovery-sagas", "recovery-cards")
"""The worker's Faust tables (names without the topic prefix)."""


def table_name(settings: Settings, table: str) -> str:
    """A table's Faust name: the topic prefix keeps test runs and stagings apart."""
    return f"{settings.topic_prefix}{table}"


def changelog_name(settings: Settings, table: str) -> str:
    """The changelog topic Faust keeps for a table: ``{app_id}-{table}-changelog``."""
    return f"{settings.app_id}-{table_name(settings, table)}-changelog"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of ARCHITECTURE §7, with the settings' prefix, partitions and replication."""
    parts, repl = settings.topic_partitions, settings.topic_replication
    few_parts = min(DLQ_MAX_PARTITIONS, parts)
    specs = [TopicSpec(settings.topic(name), parts, dict(FOREVER), repl) for name in _LOGS_FOREVER]
    specs.append(TopicSpec(settings.topic(RISK_SCORES), parts, dict(COMPACTED), repl))
    specs.append(TopicSpec(settings.topic(ALERTS), parts, dict(NINETY_DAYS), repl))
    specs.append(TopicSpec(settings.topic(RECOVERY_TIMERS), parts, dict(SEVEN_DAYS), repl))
    specs.append(TopicSpec(settings.topic(RECOVERY_POLICIES), few_parts, dict(FOREVER), repl))
    specs.extend(
        TopicSpec(settings.topic(dlq_name(src)), few_parts, dict(FOREVER), repl)
        for src in DLQ_SOURCES
    )
    # Table changelogs exist before the first worker starts: Faust creates them itself only
    # moments before its consumer joins, and a changelog missing from the consumer's
    # metadata made every write to that table fail until the next metadata refresh.
    specs.extend(
        TopicSpec(changelog_name(settings, table), parts, dict(COMPACTED), repl)
        for table in TABLES
    )
    return specs


def admin_client(bootstrap: str) -> AdminClient:
    """An AdminClient whose librdkafka logs go to Python logging instead of stderr."""
    return AdminClient({"bootstrap.servers": bootstrap}, logger=log)


def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the missing topics, check the existing ones; return the names created."""
    admin = admin_client(bootstrap)
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
