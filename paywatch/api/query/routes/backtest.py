"""POST /v1/ops/backtest: a candidate recovery policy beside the running one, on history.

The same comparison as ``paywatch backtest`` (paywatch/ops/backtest_cli.py): the caller's
tenant's ``payments.events`` read from Kafka, replayed in isolation under the policy in
force and under the candidate (paywatch/recovery/backtest.py); no command leaves, nothing
is written. Operator or admin (permission matrix). The work is bounded: at most
``MAX_EVENTS`` events of failed invoices (else 422 ``history_too_large``: narrow from/to),
one backtest at a time per API process (else 429 ``backtest_running``), the replay on a
worker thread so the process keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from paywatch.api.query.deps import FORBIDDEN, ApiError, Caller, Pool
from paywatch.api.query.schemas import ErrorBody, FieldError, InvalidPolicyBody, Public
from paywatch.errors import InvalidPolicy, Retryable
from paywatch.kafka.history import SKEW, HistoryTooLarge, read_history
from paywatch.recovery.backtest import MAX_EVENTS, compare, comparison_json
from paywatch.recovery.simulator import SimulatorConfig
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.tenants import policy_input, policy_store

router = APIRouter(prefix="/v1/ops", tags=["ops"], responses=FORBIDDEN)


UNBOUNDED_BEFORE = datetime(1970, 1, 1, tzinfo=UTC) + SKEW
"""A ``from`` earlier than this is read as no ``from``: the whole history.

The reader seeks to ``from`` less SKEW by Kafka record time, and aiokafka refuses a time
before the Unix epoch (that was a 500). Only an event dated in the first day of 1970 before
``from`` (a provider's zero timestamp, not a payment) is replayed that ``from`` would skip."""


def _text(value: object) -> object:
    # The schema says a date-time string: pydantic alone would also read 0 as a Unix time.
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date or time string, e.g. 2026-03-01T00:00:00Z")
    return value


def _utc(at: datetime) -> datetime:
    """``at`` in UTC (naive: taken as UTC). Year 1 or 9999 with an offset can be past what a
    datetime holds in UTC (later arithmetic overflowed: a 500): then the nearest instant it
    holds, the same window since no event is that far (years 1970 to 2199)."""
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:
        return (datetime.max if at.year > 1 else datetime.min).replace(tzinfo=UTC)


When = Annotated[datetime, BeforeValidator(_text), AfterValidator(_utc)]


MAX_SEED = 2**53 - 1
"""The largest integer every JSON reader holds exactly (a double's 53 bits). Past it a
validator comparing as doubles (schemathesis, JavaScript) takes 2**63 + 191 as 2**63 - 1,
valid by the schema, while the API refused it."""


class BacktestRequest(Public):
    """The candidate policy and the window of history to replay it on."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    policy: dict[str, Any] = Field(
        description="The whole candidate TenantPolicy (as PUT /v1/policy takes it)."
    )
    since: When | None = Field(
        None, alias="from", description="First event time replayed (ISO 8601; UTC if naive)."
    )
    to: When | None = Field(None, description="Replay events before this time; also the end.")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, strict=True,
        description="Simulator seed (default: PAYWATCH_SIMULATOR_SEED).",
    )  # fmt: skip

    @field_validator("seed", mode="before")
    @classmethod
    def _whole(cls, value: object) -> object:
        """5.0 as 5: JSON Schema's integer includes it, and the strict int refuses a float.
        (A field validator here, not an Annotated one: that would unpublish ge/le.)"""
        return int(value) if isinstance(value, float) and value.is_integer() else value


class Violation(Public):
    """A retry that broke a card-network rule when it was sent."""

    invoice_ref: str
    at: datetime
    rules: str


class Outcomes(Public):
    """How the episodes ended (open: still open at the end of the window)."""

    recovered: int
    exhausted: int
    canceled: int
    open: int


class Figures(Public):
    """One policy's result on the history."""

    revision: str
    sagas: int
    retries_spent: int
    recoveries: int
    recovered_by_paywatch_retry: int
    recovery_rate: float | None
    revenue_recovered_minor: dict[str, int] = Field(description="Per currency, never summed.")
    median_days_to_recover: float | None
    network_rule_violations: int = Field(description="Must be 0.")
    violations: list[Violation]
    customer_notifications: int
    escalations: int
    outcomes: Outcomes
    history_failures_skipped: int = Field(
        description="Failures of invoices a backtest retry had already recovered."
    )


class RunningFigures(Figures):
    """The running policy's result: ``source`` stored, or default (never changed)."""

    source: Literal["stored", "default"]


class HistoryRead(Public):
    """What was replayed."""

    tenant_events: int
    events_replayed: int
    retry_outcomes_not_reused: int
    first_event_at: datetime | None
    last_event_at: datetime | None
    horizon: datetime | None


class BacktestAnswer(Public):
    """The running and the candidate policy on the same history."""

    tenant: str
    seed: int
    history: HistoryRead
    running: RunningFigures
    candidate: Figures


def _candidate(data: dict[str, Any]) -> TenantPolicy:
    """The candidate, as strictly as PUT /v1/policy takes a policy; InvalidPolicy if not."""
    try:
        typed = TenantPolicy.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise InvalidPolicy([policy_input.field_error(e) for e in errors]) from exc
    return policy_input.parse_policy(typed.model_dump(mode="json"))


def _invalid(exc: InvalidPolicy) -> JSONResponse:
    errors = [(f"policy.{f}" if f != "(policy)" else "policy", r) for f, r in exc.errors]
    body = InvalidPolicyBody(
        error="invalid_policy",
        detail=policy_input.describe(errors),
        errors=[FieldError(field=f, reason=r) for f, r in errors],
    )
    return JSONResponse(body.model_dump(), status_code=422)


def _lock(request: Request) -> asyncio.Lock:
    """This app's one-backtest-at-a-time lock (made on first use: one per app)."""
    lock: asyncio.Lock | None = getattr(request.app.state, "backtest_lock", None)
    if lock is None:
        lock = request.app.state.backtest_lock = asyncio.Lock()
    return lock


@router.post(
    "/backtest",
    response_model=BacktestAnswer,
    responses={
        400: {"model": ErrorBody},
        401: {"model": ErrorBody},
        422: {"model": InvalidPolicyBody},
        429: {"model": ErrorBody},
        503: {"model": ErrorBody},
    },
    summary="Backtest a candidate recovery policy on the tenant's history (operator)",
)
async def post_backtest(
    request: Request, body: BacktestRequest, pool: Pool, caller: Caller
) -> BacktestAnswer | JSONResponse:
    """Replay the tenant's history under the running and the candidate policy."""
    try:
        candidate = _candidate(body.policy)
    except InvalidPolicy as exc:
        return _invalid(exc)
    if body.since is not None and body.to is not None and body.since >= body.to:
        raise ApiError(400, "invalid_request", "from must be before to")
    bootstrap: str | None = getattr(request.app.state, "bootstrap", None)
    if bootstrap is None:
        raise ApiError(503, "kafka_unavailable", "this API process was started without Kafka")
    lock = _lock(request)
    if lock.locked():
        detail = "a backtest is running in this API process; retry when it is done"
        raise ApiError(429, "backtest_running", detail, {"Retry-After": "10"})
    async with lock:
        return await _backtest(request, bootstrap, body, candidate, pool, caller.tenant)


async def _backtest(
    request: Request,
    bootstrap: str,
    body: BacktestRequest,
    candidate: TenantPolicy,
    pool: Pool,
    tenant: str,
) -> BacktestAnswer:
    settings = request.app.state.settings
    async with pool.acquire() as conn:
        current = await policy_store.policy_in_force(conn, tenant)
    since = body.since if body.since is None or body.since >= UNBOUNDED_BEFORE else None
    try:
        history = await read_history(
            settings, bootstrap, tenant, since=since, until=body.to, max_events=MAX_EVENTS
        )
    except Retryable as exc:
        detail = f"{exc}: nothing was replayed, retry later"
        raise ApiError(503, "kafka_unavailable", detail, {"Retry-After": "5"}) from exc
    except HistoryTooLarge as exc:
        raise ApiError(422, "history_too_large", str(exc)) from exc
    seed = settings.simulator_seed if body.seed is None else body.seed
    simulator = SimulatorConfig.parse(seed, settings.simulator_success)
    found = await asyncio.to_thread(
        compare, history.events, current.policy, candidate, simulator, body.to
    )
    answer = comparison_json(
        found, tenant=tenant, tenant_events=history.tenant_events, running_source=current.source
    )
    return BacktestAnswer.model_validate(answer)
