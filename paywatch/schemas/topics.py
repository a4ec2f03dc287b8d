"""The Kafka topics of ARCHITECTURE §7 (a contract): names, keys' partitioning, retention.

Every topic keyed by ``tenant/invoice_ref`` is co-partitioned with the others (same
partition count; Faust tables and the saga rely on it). :mod:`paywatch.kafka.admin`
creates them on the broker.

DLQs get at most ``DLQ_MAX_PARTITIONS`` partitions: dead letters are rare,
read by humans and replay tools, and never joined with anything, so a handful
of partitions is plenty and keeps the broker's file count down. The same holds
for ``recovery.policies`` (a few changes per tenant, read whole by every worker),
kept forever like the other logs: it is the audit trail of policy changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paywatch.schemas.models import (
    Alert,
    FetchedDocument,
    Frozen,
    OpsAudit,
    PaymentEvent,
    PolicyChanged,
    RawWebhook,
    RecoveryCommand,
    RiskScore,
    SagaTransition,
)
from paywatch.settings import Settings

WEBHOOKS_RAW = "webhooks.raw"
WEBHOOKS_FETCHED = "webhooks.fetched"
PAYMENTS_EVENTS = "payments.events"
RECOVERY_COMMANDS = "recovery.commands"
RECOVERY_TRANSITIONS = "recovery.transitions"
RECOVERY_TIMERS = "recovery.timers"
"""Internal: ticks that make the saga agent fire a due timer (co-partitioned with
payments.events; the timers themselves live in the saga table)."""
RECOVERY_CARDS = "recovery.cards"
"""Internal: attempts and retry permit requests for the card-ledger agent (key: card key);
one partition owns each card, so its network counters have one writer across all
invoices, partitions and workers."""
RISK_CUSTOMERS = "risk.customers"
"""Internal: payments.events repartitioned by customer (key ``tenant/customer_ref``, the same
PaymentEvent bytes), so one partition owns each customer's risk features across all its
invoices and workers."""
RISK_TENANTS = "risk.tenants"
"""Internal: one small signal per failure or success (``risk.alerts.Signal``, msgpack), key
``tenant``: the alerts agent counts a tenant's providers and decline codes on one partition."""
RISK_SCORES = "risk.scores"
ALERTS = "alerts"
RECOVERY_POLICIES = "recovery.policies"
OPS_AUDIT = "ops.audit"
"""Operator and admin actions (OpsAudit, key tenant), kept forever: the audit trail of who
changed keys, secrets, endpoints, policies, charging and email, and who started replays."""
OUTBOUND = "outbound"
"""Not a topic: the source name of the outbound producer's dead letters (``outbound.dlq``),
whichever topic they came from, so they never mix with the executor's or projector's."""
TOPIC_MODELS: dict[str, type[Frozen]] = {
    WEBHOOKS_RAW: RawWebhook,
    WEBHOOKS_FETCHED: FetchedDocument,
    PAYMENTS_EVENTS: PaymentEvent,
    RECOVERY_COMMANDS: RecoveryCommand,
    RECOVERY_TRANSITIONS: SagaTransition,
    RISK_SCORES: RiskScore,
    ALERTS: Alert,
    RECOVERY_POLICIES: PolicyChanged,
    OPS_AUDIT: OpsAudit,
}
"""Logical topic name -> value model (``*.dlq`` topics carry DeadLetter)."""
DLQ_SOURCES = (WEBHOOKS_RAW, WEBHOOKS_FETCHED, PAYMENTS_EVENTS, RECOVERY_COMMANDS, OUTBOUND)
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


TABLES = (
    "normalize-seen",
    "recovery-sagas",
    "recovery-card-ledger",
    "risk-customers",
    "risk-renewals",
    "alerts-tenants",
)
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
    specs.append(TopicSpec(settings.topic(RECOVERY_CARDS), parts, dict(SEVEN_DAYS), repl))
    specs.append(TopicSpec(settings.topic(RISK_CUSTOMERS), parts, dict(SEVEN_DAYS), repl))
    specs.append(TopicSpec(settings.topic(RISK_TENANTS), parts, dict(SEVEN_DAYS), repl))
    specs.append(TopicSpec(settings.topic(RECOVERY_POLICIES), few_parts, dict(FOREVER), repl))
    specs.append(TopicSpec(settings.topic(OPS_AUDIT), few_parts, dict(FOREVER), repl))
    specs.extend(
        TopicSpec(settings.topic(dlq_name(src)), few_parts, dict(FOREVER), repl)
        for src in DLQ_SOURCES
    )
    # Table changelogs exist before the first worker starts: Faust creates them itself only
    # moments before its consumer joins, and a changelog missing from the consumer's
    # metadata made every write to that table fail until the next metadata refresh.
    specs.extend(
        TopicSpec(changelog_name(settings, table), parts, dict(COMPACTED), repl) for table in TABLES
    )
    return specs


def invoice_key(tenant: str, invoice_ref: str) -> str:
    """Key of payments.events, recovery.commands/transitions/timers and the saga table."""
    return f"{tenant}/{invoice_ref}"


def customer_key(tenant: str, customer_ref: str) -> str:
    """Key of risk.customers, risk.scores and the risk table: tenant/customer_ref."""
    return f"{tenant}/{customer_ref}"


def raw_key(tenant: str, provider: str, subject: str | None) -> str:
    """Key of webhooks.raw: tenant/provider/subject, or tenant/provider without a subject."""
    return f"{tenant}/{provider}/{subject}" if subject else f"{tenant}/{provider}"


def fetched_key(tenant: str, provider: str, resource_id: str) -> str:
    """Key of webhooks.fetched: tenant/provider/resource_id."""
    return f"{tenant}/{provider}/{resource_id}"


def tenant_key(tenant: str) -> str:
    """Key of recovery.policies, alerts and ops.audit: the tenant."""
    return tenant
