"""Frozen pydantic models of every topic value (ARCHITECTURE §7).

Each model has a twin ``<Name>.avsc`` in this folder; tests/contract keeps them in
step. Events are past tense (``PaymentEvent.type``), commands imperative
(``RecoveryCommand.type``). Timestamps are timezone-aware UTC datetimes
(Avro ``timestamp-millis``); money is integer minor units.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Frozen(BaseModel):
    """Base: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EventType(StrEnum):
    """What happened to a payment (past tense). OTHER is the Avro enum default."""

    PAYMENT_FAILED = "PAYMENT_FAILED"
    PAYMENT_SUCCEEDED = "PAYMENT_SUCCEEDED"
    PAYMENT_METHOD_UPDATED = "PAYMENT_METHOD_UPDATED"
    SUBSCRIPTION_PAST_DUE = "SUBSCRIPTION_PAST_DUE"
    SUBSCRIPTION_REACTIVATED = "SUBSCRIPTION_REACTIVATED"
    SUBSCRIPTION_CANCELED = "SUBSCRIPTION_CANCELED"
    INVOICE_VOIDED = "INVOICE_VOIDED"
    INVOICE_OVERDUE = "INVOICE_OVERDUE"
    INVOICE_UNCOLLECTIBLE = "INVOICE_UNCOLLECTIBLE"
    CARD_EXPIRING = "CARD_EXPIRING"
    OTHER = "OTHER"


class DeclineCategory(StrEnum):
    """How a decline should be treated (reference/webhooks.md §5)."""

    SOFT = "SOFT"
    HARD = "HARD"
    ACTION = "ACTION"
    FRAUD = "FRAUD"
    UNKNOWN = "UNKNOWN"


class SagaState(StrEnum):
    """Recovery saga states (ARCHITECTURE §8; also invoices.status)."""

    failed = "failed"
    retrying = "retrying"
    awaiting_customer = "awaiting_customer"
    recovered = "recovered"
    exhausted = "exhausted"
    canceled = "canceled"


class CommandType(StrEnum):
    """What a recovery saga asks an executor to do (imperative)."""

    RETRY_PAYMENT = "RETRY_PAYMENT"
    NOTIFY_CUSTOMER = "NOTIFY_CUSTOMER"
    REQUEST_PAYMENT_METHOD_UPDATE = "REQUEST_PAYMENT_METHOD_UPDATE"
    ESCALATE = "ESCALATE"
    CANCEL = "CANCEL"
    WRITE_OFF = "WRITE_OFF"


class RiskBand(StrEnum):
    """Coarse risk band of a RiskScore."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class Severity(StrEnum):
    """Alert severity."""

    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class RawWebhook(Frozen):
    """One verified provider delivery, exact bytes (topic ``webhooks.raw``)."""

    ingest_id: str
    tenant: str
    provider: str
    received_at: datetime
    headers: dict[str, str] = Field(default_factory=dict)
    body: bytes
    subject: str | None = None


class Decline(Frozen):
    """Why a payment failed, classified."""

    code: str | None = None
    category: DeclineCategory = DeclineCategory.UNKNOWN
    network: str | None = None
    network_code: str | None = None
    advice_code: str | None = None
    message: str | None = None


class PaymentMethod(Frozen):
    """Card facts safe to keep: never a PAN or CVV."""

    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    fingerprint: str | None = None


class RawRef(Frozen):
    """Where the raw webhook behind a canonical event sits in Kafka."""

    topic: str
    partition: int
    offset: int
    provider_event_id: str


class PaymentEvent(Frozen):
    """One canonical payment event (topic ``payments.events``, key tenant/invoice_ref)."""

    event_id: str
    type: EventType
    tenant: str
    provider: str
    source_type: str
    occurred_at: datetime
    customer_ref: str | None = None
    subscription_ref: str | None = None
    invoice_ref: str
    payment_ref: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    decline: Decline | None = None
    attempt: int | None = None
    payment_method: PaymentMethod | None = None
    provider_retry_at: datetime | None = None
    paywatch_retry: bool = False
    raw: RawRef | None = None


class RuleRef(Frozen):
    """The rule that made a decision, with its source and edition."""

    id: str
    edition: str
    source: str


class RecoveryCommand(Frozen):
    """A saga's request to an executor (topic ``recovery.commands``)."""

    command_id: str
    type: CommandType
    tenant: str
    invoice_ref: str
    due_at: datetime
    attempt: int = 0
    channel: str | None = None
    template: str | None = None
    reason: str
    rule: RuleRef
    cause_event_id: str | None = None
    provider: str | None = None
    customer_ref: str | None = None
    subscription_ref: str | None = None
    payment_ref: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    decline_category: DeclineCategory | None = None
    issued_at: datetime | None = None
    first_failed_at: datetime | None = None


class SagaTransition(Frozen):
    """One saga state change (topic ``recovery.transitions``)."""

    tenant: str
    invoice_ref: str
    from_state: SagaState | None = None
    to_state: SagaState
    cause_event_id: str
    at: datetime
    rule: RuleRef
    reason: str | None = None
    attempts_used: int | None = None
    attempts_allowed: int | None = None
    next_action: CommandType | None = None
    next_action_at: datetime | None = None


class RiskScore(Frozen):
    """Latest risk of a customer (topic ``risk.scores``, compacted)."""

    tenant: str
    customer_ref: str
    score: float = Field(ge=0.0, le=1.0)
    band: RiskBand
    reasons: list[str] = Field(default_factory=list)
    model_version: str
    as_of: datetime


class AlertWindow(Frozen):
    """The time window an alert was computed over."""

    start: datetime
    end: datetime


class Alert(Frozen):
    """An anomaly for a tenant (topic ``alerts``)."""

    tenant: str
    kind: str
    severity: Severity
    window: AlertWindow
    observed: float
    baseline: float
    message: str | None = None


class DeadLetter(Frozen):
    """A record that could not be processed (topics ``*.dlq``)."""

    source_topic: str
    source_partition: int
    source_offset: int
    stage: str
    error: str
    key: bytes | None = None
    payload: bytes
    failed_at: datetime


class FetchedRef(Frozen):
    """The provider resource a thin webhook named (``ResourceRef`` in the log)."""

    tenant_ref: str
    kind: str
    resource_id: str
    event_type: str
    event_time: datetime
    index: int
    fetch: bool = True


class FetchedDocument(Frozen):
    """A provider document fetched for a thin webhook (topic ``webhooks.fetched``).

    Logged before it is normalized, so replay and re-normalization never call the
    provider again. Key ``tenant/provider/resource_id``.
    """

    fetch_id: str
    tenant: str
    provider: str
    ref: FetchedRef
    status: int
    content_type: str = ""
    document: bytes
    fetched_at: datetime
    source: RawRef
    parent_resource_id: str | None = None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


class PolicyChanged(Frozen):
    """A tenant's recovery policy was changed (topic ``recovery.policies``, key tenant).

    ``policy_json`` is the whole new ``TenantPolicy`` as canonical JSON; the change applies
    to decisions made after it. Checked to be a JSON object Postgres ``jsonb`` can hold, so
    a malformed record is dead-lettered instead of stalling a projection.
    """

    tenant: str
    revision: str
    policy_json: str
    previous_revision: str | None = None
    changed_at: datetime
    changed_by: str
    reason: str | None = None

    @field_validator("policy_json")
    @classmethod
    def _json_object(cls, text: str) -> str:
        if "\x00" in text or "\\u0000" in text:
            raise ValueError("policy_json contains NUL, which jsonb cannot store")
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ValueError(f"policy_json is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValueError("policy_json must be a JSON object")
        return text
