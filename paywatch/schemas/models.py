"""Frozen pydantic models of every topic value (ARCHITECTURE §7).

Each model has a twin ``<Name>.avsc`` in this folder; tests/contract keeps them in
step. Events are past tense (``PaymentEvent.type``), commands imperative
(``RecoveryCommand.type``). Timestamps are timezone-aware UTC datetimes
(Avro ``timestamp-millis``); money is integer minor units.

Every field is bounded so that whatever validates can also be stored: Postgres ``text``
rejects NUL, Kafka rejects records over 1 MB, Avro ``long`` and Postgres ``bigint`` stop at
2^63, and the saga clock overflows ``datetime`` near year 9999. A provider document that
breaks a bound is refused at normalization with the reason (the record is dead-lettered),
never later by a stage that would then stop for every tenant. The limits:

* ids, refs, codes, names: at most ``MAX_REF`` (255) characters, no NUL;
* free text (messages, reasons, errors): at most ``MAX_TEXT`` (2,000) characters, no NUL;
* amounts: at most ``MAX_MINOR`` (10^15) minor units either way, ten trillion dollars;
* attempts: 0 to ``MAX_ATTEMPT`` (100): Visa allows 15-20 reattempts in 30 days and
  Mastercard 35, so a larger count is a malformed document, and it bounds a card's ledger;
* times: years ``MIN_YEAR`` to ``MAX_YEAR`` (1970-2199);
* Kafka coordinates: partitions and offsets 0 to 2^63 - 1;
* bodies and documents: at most ``MAX_BODY`` (900 KiB), headers ``MAX_HEADERS`` (100) of at
  most ``MAX_HEADER`` (8 KiB) each, so a record always fits under Kafka's 1 MB.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

MAX_REF = 255
MAX_TEXT = 2000
MAX_MINOR = 10**15
MAX_ATTEMPT = 100
MIN_YEAR, MAX_YEAR = 1970, 2199
MAX_BODY = 900 * 1024
MAX_HEADERS = 100
MAX_HEADER = 8 * 1024
_NO_NUL = r"^[^\x00]*$"
_LONG = 2**63 - 1


def _in_years(value: datetime) -> datetime:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"year {value.year} is outside {MIN_YEAR}-{MAX_YEAR}")
    return value


Ref = Annotated[str, StringConstraints(max_length=MAX_REF, pattern=_NO_NUL)]
"""An id, ref, code or name: short, no NUL."""
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=_NO_NUL)]
"""Free text: bounded, no NUL."""
Minor = Annotated[int, Field(ge=-MAX_MINOR, le=MAX_MINOR)]
"""Money in integer minor units."""
Attempt = Annotated[int, Field(ge=0, le=MAX_ATTEMPT)]
"""An attempt number or count."""
Coordinate = Annotated[int, Field(ge=0, le=_LONG)]
"""A Kafka partition or offset."""
Instant = Annotated[datetime, AfterValidator(_in_years)]
"""A point in time within MIN_YEAR-MAX_YEAR."""
Body = Annotated[bytes, Field(max_length=MAX_BODY)]
"""Exact bytes of a delivery or document."""
Headers = Annotated[
    dict[Ref, Annotated[str, StringConstraints(max_length=MAX_HEADER)]],
    Field(max_length=MAX_HEADERS),
]
"""Verified request headers."""


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


class AlertStatus(StrEnum):
    """Whether an alert's incident is still going on."""

    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


class Severity(StrEnum):
    """Alert severity."""

    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class RawWebhook(Frozen):
    """One verified provider delivery, exact bytes (topic ``webhooks.raw``)."""

    ingest_id: Ref
    tenant: Ref
    provider: Ref
    received_at: Instant
    headers: Headers = Field(default_factory=dict)
    body: Body
    subject: Ref | None = None


class Decline(Frozen):
    """Why a payment failed, classified."""

    code: Ref | None = None
    category: DeclineCategory = DeclineCategory.UNKNOWN
    network: Ref | None = None
    network_code: Ref | None = None
    advice_code: Ref | None = None
    message: Text | None = None


class PaymentMethod(Frozen):
    """Card facts safe to keep: never a PAN or CVV."""

    brand: Ref | None = None
    last4: Ref | None = None
    exp_month: Annotated[int, Field(ge=0, le=99)] | None = None
    exp_year: Annotated[int, Field(ge=0, le=9999)] | None = None
    fingerprint: Ref | None = None


class RawRef(Frozen):
    """Where the raw webhook behind a canonical event sits in Kafka."""

    topic: Ref
    partition: Coordinate
    offset: Coordinate
    provider_event_id: Ref


class PaymentEvent(Frozen):
    """One canonical payment event (topic ``payments.events``, key tenant/invoice_ref)."""

    event_id: Ref
    type: EventType
    tenant: Ref
    provider: Ref
    source_type: Ref
    occurred_at: Instant
    customer_ref: Ref | None = None
    subscription_ref: Ref | None = None
    invoice_ref: Ref
    payment_ref: Ref | None = None
    amount_minor: Minor | None = None
    currency: Ref | None = None
    decline: Decline | None = None
    attempt: Attempt | None = None
    payment_method: PaymentMethod | None = None
    provider_retry_at: Instant | None = None
    paywatch_retry: bool = False
    raw: RawRef | None = None
    renews_at: Instant | None = None
    """CARD_EXPIRING: the subscription's renewal that the card will not reach."""


class RuleRef(Frozen):
    """The rule that made a decision, with its source and edition."""

    id: Ref
    edition: Ref
    source: Text


class RecoveryCommand(Frozen):
    """A saga's request to an executor (topic ``recovery.commands``)."""

    command_id: Ref
    type: CommandType
    tenant: Ref
    invoice_ref: Ref
    due_at: Instant
    attempt: Attempt = 0
    channel: Ref | None = None
    template: Ref | None = None
    reason: Text
    rule: RuleRef
    cause_event_id: Ref | None = None
    provider: Ref | None = None
    customer_ref: Ref | None = None
    subscription_ref: Ref | None = None
    payment_ref: Ref | None = None
    amount_minor: Minor | None = None
    currency: Ref | None = None
    decline_category: DeclineCategory | None = None
    issued_at: Instant | None = None
    first_failed_at: Instant | None = None
    schedule_only: bool = False
    """The tenant charges this retry itself (TenantPolicy ``charging: schedule_only``):
    executors must not charge; the tenant reports the result back."""
    attempts_used: Attempt | None = None
    """RETRY_PAYMENT: reattempts of the invoice by anyone so far, this one included."""
    attempts_allowed: Attempt | None = None
    """RETRY_PAYMENT: the tenant's budget of reattempts of the invoice (``max_retries``)."""
    card_retries_left: Attempt | None = None
    """RETRY_PAYMENT: more attempts the card's network counters allow after this one, over
    every invoice of the card (set by the card's ledger when it grants the retry)."""
    card_limit: Ref | None = None
    """The network counter that bounds ``card_retries_left`` (e.g. ``visa.reattempts``)."""


class SagaTransition(Frozen):
    """One saga state change (topic ``recovery.transitions``)."""

    tenant: Ref
    invoice_ref: Ref
    from_state: SagaState | None = None
    to_state: SagaState
    cause_event_id: Ref
    at: Instant
    rule: RuleRef
    reason: Text | None = None
    attempts_used: Attempt | None = None
    attempts_allowed: Attempt | None = None
    next_action: CommandType | None = None
    next_action_at: Instant | None = None
    experiment: Ref | None = None
    """The tenant's policy experiment the episode was opened under (None: none)."""
    arm: Ref | None = None
    """The policy experiment arm of the saga (``control``/``challenger``); None: no experiment."""


class RiskContribution(Frozen):
    """One feature's share of a score, in log-odds (the model is a logistic regression)."""

    feature: str
    contribution: float
    value: float


class RiskScore(Frozen):
    """Latest risk of a customer (topic ``risk.scores``, compacted)."""

    tenant: str
    customer_ref: str
    score: float = Field(ge=0.0, le=1.0)
    band: RiskBand
    reasons: list[str] = Field(default_factory=list)
    model_version: str
    as_of: datetime
    contributions: list[RiskContribution] = Field(default_factory=list)


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
    alert_id: str = ""
    status: AlertStatus = AlertStatus.OPEN
    provider: str | None = None
    decline_code: str | None = None
    customer_ref: str | None = None
    opened_at: datetime | None = None
    resolved_at: datetime | None = None


class DeadLetter(Frozen):
    """A record that could not be processed (topics ``*.dlq``)."""

    source_topic: Ref
    source_partition: Coordinate
    source_offset: Coordinate
    stage: Ref
    error: Text
    key: bytes | None = None
    payload: bytes
    failed_at: Instant


def dead_letter_reason(error: BaseException | str) -> str:
    """``Type: message`` of an error (or a reason as given) as a DeadLetter can hold it:
    NUL and lone surrogates escaped, at most MAX_TEXT characters."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text[:MAX_TEXT]


class FetchedRef(Frozen):
    """The provider resource a thin webhook named (``ResourceRef`` in the log)."""

    tenant_ref: Ref
    kind: Ref
    resource_id: Ref
    event_type: Ref
    event_time: Instant
    index: Coordinate
    fetch: bool = True


class FetchedDocument(Frozen):
    """A provider document fetched for a thin webhook (topic ``webhooks.fetched``).

    Logged before it is normalized, so replay and re-normalization never call the
    provider again. Key ``tenant/provider/resource_id``.
    """

    fetch_id: Ref
    tenant: Ref
    provider: Ref
    ref: FetchedRef
    status: int
    content_type: Ref = ""
    document: Body
    fetched_at: Instant
    source: RawRef
    parent_resource_id: Ref | None = None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


class PolicyChanged(Frozen):
    """A tenant's recovery policy was changed (topic ``recovery.policies``, key tenant).

    ``policy_json`` is the whole new ``TenantPolicy`` as canonical JSON; the change applies
    to decisions made after it. Checked to be a JSON object Postgres ``jsonb`` can hold, so
    a malformed record is dead-lettered instead of stalling a projection.
    """

    tenant: Ref
    revision: Ref
    policy_json: str
    previous_revision: Ref | None = None
    changed_at: Instant
    changed_by: Ref
    reason: Text | None = None

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


OpsDetails = Annotated[dict[Ref, Text], Field(max_length=MAX_HEADERS)]
"""What an operator action changed, as names and short values: never a secret's value."""


class OpsAudit(Frozen):
    """An operator's or admin's action on a tenant (topic ``ops.audit``, key tenant).

    Appended before the action counts (see paywatch/tenants/ops_audit.py), kept forever:
    who did what to which tenant, when. ``details`` carries names (key ids, secret names,
    revisions, providers), never a secret value.
    """

    audit_id: Ref
    tenant: Ref
    actor: Ref
    action: Ref
    subject: Ref | None = None
    at: Instant
    details: OpsDetails = Field(default_factory=dict)
