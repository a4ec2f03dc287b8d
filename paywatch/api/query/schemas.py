"""Response models of the query API (ARCHITECTURE §9): explicit fields, never row passthrough."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import CommandType, DeclineCategory, EventType, SagaState

T = TypeVar("T")


class Public(BaseModel):
    """Base: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Decline(Public):
    """The last decline of an invoice: provider code and paywatch category."""

    code: str | None = None
    category: DeclineCategory = DeclineCategory.UNKNOWN
    message: str | None = None


class FailureDecline(Decline):
    """A failed attempt's decline with its card-network details."""

    network: str | None = None
    network_code: str | None = None
    advice_code: str | None = None


class Card(Public):
    """Card facts safe to show: brand and last four digits only."""

    brand: str | None = None
    last4: str | None = None


class KafkaCoordinates(Public):
    """Where the event behind a row sits in Kafka (audit trail)."""

    topic: str
    partition: int
    offset: int


class Invoice(Public):
    """One invoice's read model: saga status, amounts, attempts and last decline."""

    invoice_ref: str
    status: SagaState
    provider: str
    customer_ref: str | None
    subscription_ref: str | None
    amount_minor: int | None
    currency: str | None
    attempts: int
    last_decline: Decline | None
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    recovered_at: datetime | None
    canceled_at: datetime | None
    last_event_at: datetime
    updated_at: datetime


class Rule(Public):
    """The rule that made a recovery decision, with its source and edition."""

    id: str
    edition: str
    source: str


class Recovery(Public):
    """An invoice's recovery workflow: the saga's latest decision."""

    state: SagaState
    next_action: CommandType | None = Field(description="The next command the saga scheduled.")
    next_action_at: datetime | None
    attempts_used: int | None
    attempts_allowed: int | None
    rule: Rule = Field(description="The rule of the latest decision.")
    reason: str | None
    started_at: datetime
    closed_at: datetime | None = Field(description="When it became recovered/exhausted/canceled.")
    last_transition_at: datetime


class InvoiceDetail(Invoice):
    """One invoice with its recovery workflow (null when no saga has started)."""

    recovery: Recovery | None = None


class TimelineEvent(Public):
    """A canonical payment event of the invoice (from payments.events)."""

    kind: Literal["event"]
    at: datetime = Field(description="When the provider says it happened (occurred_at).")
    event_id: UUID
    type: EventType
    provider: str
    source_type: str
    amount_minor: int | None
    currency: str | None
    attempt: int | None
    decline: Decline | None
    paywatch_retry: bool = Field(description="True for the outcome of a retry paywatch made.")
    kafka: KafkaCoordinates


class TimelineTransition(Public):
    """A recovery saga state change (from recovery.transitions)."""

    kind: Literal["transition"]
    at: datetime
    from_state: SagaState | None = Field(description="null when the transition opens a saga.")
    to_state: SagaState
    cause_event_id: str
    reason: str | None
    rule: Rule
    kafka: KafkaCoordinates


class TimelineCommand(Public):
    """A recovery command the saga issued (from recovery.commands)."""

    kind: Literal["command"]
    at: datetime = Field(description="When it was issued (its due_at when not recorded).")
    command_id: str
    type: CommandType
    due_at: datetime
    attempt: int
    channel: str | None
    template: str | None
    reason: str
    rule: Rule
    cause_event_id: str | None
    kafka: KafkaCoordinates


TimelineItem = Annotated[
    TimelineEvent | TimelineTransition | TimelineCommand, Field(discriminator="kind")
]


class Failure(Public):
    """One failed payment attempt."""

    event_id: UUID
    invoice_ref: str
    provider: str
    customer_ref: str | None
    payment_ref: str | None
    occurred_at: datetime
    amount_minor: int | None
    currency: str | None
    attempt: int | None
    decline: FailureDecline
    card: Card | None
    kafka: KafkaCoordinates


class Page(Public, Generic[T]):
    """One page of a list; next_cursor is null on the last page."""

    data: list[T]
    next_cursor: str | None = Field(
        description="Opaque: pass it back unchanged as ?cursor= for the next page (null: last)."
    )


class Timeline(Page[TimelineItem]):
    """One page of an invoice's timeline: events, transitions and commands, in order."""


class ErrorBody(Public):
    """Every error answer: a stable machine code and a human explanation."""

    error: str
    detail: str


class LastError(Public):
    """The newest error a process reported (scrubbed text) and when."""

    error: str
    at: datetime | None


class Health(Public):
    """Liveness of the API and its database, and the verdict on the stack's processes.

    ``degraded`` (still 200): a worker, projector or executor restarted uncleanly or
    dead-lettered within PAYWATCH_HEALTH_WINDOW_S, lags more than PAYWATCH_HEALTH_MAX_LAG
    records on a partition, or went silent; ``reasons`` says which.
    """

    status: Literal["ok", "degraded", "unavailable"]
    detail: str | None = None
    reasons: list[str] = Field(default_factory=list)
    last_error: LastError | None = None
    processes: dict[str, dict[str, Any]] = Field(default_factory=dict)


class PolicyInForce(Public):
    """The caller's tenant's recovery policy: the stored one, or the defaults."""

    policy: TenantPolicy
    revision: str = Field(description="Content hash of the policy.")
    source: Literal["stored", "default"] = Field(
        description="default: the tenant never stored a policy and runs the safe defaults."
    )
    previous_revision: str | None = Field(description="The revision the stored one replaced.")
    changed_at: datetime | None
    changed_by: str | None = Field(description="cli, or api:<role of the API key>.")
    reason: str | None


class PolicyUpdated(Public):
    """The answer to a policy change; `changed` is false when the policy was already in force."""

    policy: TenantPolicy
    revision: str
    previous_revision: str | None
    changed: bool = Field(description="false: same revision as in force, no event written.")
    kafka: KafkaCoordinates | None = Field(description="The PolicyChanged record (if changed).")


class PolicyChangeItem(Public):
    """One change of the tenant's policy (a PolicyChanged record of recovery.policies)."""

    revision: str
    previous_revision: str | None
    changed_at: datetime
    changed_by: str
    reason: str | None
    policy: dict[str, Any] = Field(description="The policy as it was written.")
    kafka: KafkaCoordinates


class FieldError(Public):
    """Why one field of a submitted policy is invalid."""

    field: str = Field(description="Path in the body, e.g. retry.days or dunning[0].day.")
    reason: str


class InvalidPolicyBody(ErrorBody):
    """A policy that does not validate: every field error, each with its path."""

    errors: list[FieldError]


Band = Literal["low", "medium", "high", "critical"]
"""A risk band as the API spells it: lowercase, like invoice statuses."""


class RiskReason(Public):
    """One feature's share of a risk score, in log-odds (largest first in a list)."""

    feature: str
    contribution: float = Field(description="Log-odds it adds to the score (negative lowers it).")
    value: float = Field(description="The feature's value as of the score.")


class Risk(Public):
    """A customer's latest risk score (the last risk.scores record of its key)."""

    score: float = Field(ge=0.0, le=1.0)
    band: Band
    reasons: list[RiskReason] = Field(description="The features that raise it most.")
    model_version: str
    as_of: datetime = Field(description="Time of the latest event the score includes.")


class CustomerRisk(Risk):
    """One customer of the risk worklist."""

    customer_ref: str


class Customer(Public):
    """A customer: its risk (null before it is scored) and what it owes now."""

    customer_ref: str
    risk: Risk | None
    invoices_open: int = Field(description="Invoices not recovered, exhausted or canceled.")
    amount_at_risk_minor: int = Field(
        description="Sum of the open invoices' amounts in `currency` (minor units)."
    )
    currency: str | None = Field(
        description="Currency of the customer's most recently active open invoice; null when "
        "none is open. Open invoices in other currencies are not in the sum."
    )
    last_failure_at: datetime | None = Field(description="Its newest failed attempt.")


AlertState = Literal["open", "resolved"]
"""An incident's status as the API spells it: lowercase, like invoice statuses."""
AlertSeverity = Literal["info", "warning", "critical"]
"""An alert's severity as the API spells it (info: a resolved customer alert)."""


class AlertItem(Public):
    """One incident: its latest Alert record (one alert_id from OPEN to RESOLVED)."""

    alert_id: str = Field(description="tenant/kind/subject/opened ms: contains '/'.")
    kind: str = Field(
        description="PROVIDER_FAILURE_SPIKE, DECLINE_CODE_SPIKE or HIGH_RISK_CUSTOMER."
    )
    severity: AlertSeverity
    provider: str | None = Field(description="The provider of a provider spike.")
    decline_code: str | None = Field(description="The code of a decline-code spike.")
    customer_ref: str | None = Field(description="The customer of a high-risk alert.")
    status: AlertState
    observed: float = Field(description="Failures in the window (a spike), or the risk score.")
    baseline: float = Field(description="Failures expected (a spike), or the HIGH cut-off.")
    window_s: float = Field(description="Length in seconds of the latest record's window.")
    opened_at: datetime
    updated_at: datetime = Field(description="End of the latest record's window.")
    resolved_at: datetime | None
    message: str | None
