"""GET/PUT /v1/policy, GET /v1/policy/history: the caller's tenant's recovery policy.

Who may read it and who may change it is in the permission matrix (permissions.py:
changing it takes operator or admin); a role that may not gets 403, not 404, because the
resource is its own tenant's, so nothing leaks. PUT takes the whole TenantPolicy (fields
left out take their defaults, as in a fresh policy) and answers only after Kafka
acknowledged the PolicyChanged record: 503 when it did not (nothing changed), 422 with
every field error when the policy does not validate. The change is the only write of this
API besides the ops routes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from paywatch.api.query.deps import FORBIDDEN, ApiError, Caller, Pool
from paywatch.api.query.pagination import (
    DEFAULT_LIMIT,
    CursorCodec,
    Instant,
    Limit,
    Offset,
    Partition,
    Ref,
    build_page,
)
from paywatch.api.query.schemas import (
    ErrorBody,
    FieldError,
    InvalidPolicyBody,
    KafkaCoordinates,
    Page,
    PolicyChangeItem,
    PolicyInForce,
    PolicyUpdated,
)
from paywatch.errors import InvalidPolicy, Retryable
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.topics import RECOVERY_POLICIES
from paywatch.tenants import policy_input, policy_store
from paywatch.tenants.ops_audit import audited_policy_change
from paywatch.tenants.policy_log import PolicyLog
from paywatch.tenants.policy_store import HistoryKey, PolicyHistoryRow

router = APIRouter(prefix="/v1/policy", tags=["policy"], responses=FORBIDDEN)

CURSOR: CursorCodec[HistoryKey] = CursorCodec(tuple[Instant, Ref, Partition, Offset])
_EXAMPLE: HistoryKey = (datetime(2024, 5, 1, 10, tzinfo=UTC), RECOVERY_POLICIES, 0, 7)
Cursor = Annotated[str | None, CURSOR.query(_EXAMPLE)]
MAX_BODY_BYTES = 64 * 1024
Reason = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00]*$",
        description="Why the policy changes; recorded with the change.",
    ),
]
_BODY = {
    "required": True,
    "description": "The whole TenantPolicy; fields left out take their defaults.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TenantPolicy"}}},
}


def _in_force(current: policy_store.CurrentPolicy) -> PolicyInForce:
    return PolicyInForce(
        policy=current.policy,
        revision=current.revision,
        source=current.source,
        previous_revision=current.previous_revision,
        changed_at=current.changed_at,
        changed_by=current.changed_by,
        reason=current.reason,
    )


@router.get("", responses={401: {"model": ErrorBody}}, summary="The tenant's recovery policy")
async def get_policy(pool: Pool, caller: Caller) -> PolicyInForce:
    """The stored policy, or the defaults with source "default"."""
    async with pool.acquire() as conn:
        try:
            current = await policy_store.policy_in_force(conn, caller.tenant)
        except InvalidPolicy as exc:  # only if a release stopped accepting a stored policy
            raise ApiError(500, "invalid_stored_policy", f"stored {exc}; PUT a new one") from exc
    return _in_force(current)


def _invalid(exc: InvalidPolicy) -> JSONResponse:
    body = InvalidPolicyBody(
        error="invalid_policy",
        detail=policy_input.describe(exc.errors),
        errors=[FieldError(field=f, reason=r) for f, r in exc.errors],
    )
    return JSONResponse(body.model_dump(), status_code=422)


async def _json_body(request: Request) -> bytes:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"a policy is at most {MAX_BODY_BYTES} bytes")
    try:
        json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, an int of 4300+ digits
        raise ApiError(400, "invalid_request", f"body: not JSON: {exc}") from exc
    except RecursionError as exc:  # arrays or objects nested about a thousand deep
        raise ApiError(400, "invalid_request", "body: JSON nested too deeply") from exc
    return raw


def _policy(raw: bytes) -> TenantPolicy:
    """The body as a policy in canonical form; InvalidPolicy lists every field error.

    Strict: each value must have the JSON type the schema gives it (no "30" or 30.5 for an
    integer, no 0 for false, no seconds for a time), so what the API takes is what its
    OpenAPI document says, and a typo is an error rather than a guess.
    """
    try:
        typed = TenantPolicy.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        unread = next((e for e in errors if e["type"] == "json_invalid"), None)
        if unread is not None:  # JSON that Python reads, pydantic not: e.g. nested 200+ deep
            raise ApiError(400, "invalid_request", f"body: {unread['msg']}") from exc
        raise InvalidPolicy([policy_input.field_error(e) for e in errors]) from exc
    return policy_input.parse_policy(typed.model_dump(mode="json"))


@router.put(
    "",
    response_model=PolicyUpdated,
    responses={
        400: {"model": ErrorBody},
        401: {"model": ErrorBody},
        413: {"model": ErrorBody},
        422: {"model": InvalidPolicyBody},
        503: {"model": ErrorBody},
    },
    openapi_extra={"requestBody": _BODY},
    summary="Change the tenant's recovery policy (operator)",
)
async def put_policy(
    request: Request, pool: Pool, caller: Caller, reason: Reason = None
) -> PolicyUpdated | JSONResponse:
    """Store a new policy: it applies to decisions made from now on."""
    try:
        policy = _policy(await _json_body(request))
    except InvalidPolicy as exc:
        return _invalid(exc)
    log: PolicyLog | None = request.app.state.policy_log
    if log is None:
        raise ApiError(503, "kafka_unavailable", "this API process was started without Kafka")
    try:
        async with pool.acquire() as conn:  # its ops.audit record first, then the change
            change = await audited_policy_change(
                conn, log, request.app.state.ops_log, caller.tenant, policy,
                changed_by=f"api:{request.state.api_key_id}", reason=reason, now=datetime.now(UTC),
            )  # fmt: skip
    except Retryable as exc:
        detail = f"{exc}: the policy was not changed, retry later"
        raise ApiError(503, "kafka_unavailable", detail, {"Retry-After": "5"}) from exc
    at = change.at
    return PolicyUpdated(
        policy=change.policy,
        revision=change.revision,
        previous_revision=change.previous_revision,
        changed=change.changed,
        kafka=KafkaCoordinates(topic=at.topic, partition=at.partition, offset=at.offset)
        if at
        else None,
    )


def _item(row: PolicyHistoryRow) -> PolicyChangeItem:
    at = row.at
    return PolicyChangeItem(
        revision=row.revision,
        previous_revision=row.previous_revision,
        changed_at=row.changed_at,
        changed_by=row.changed_by,
        reason=row.reason,
        policy=row.policy,
        kafka=KafkaCoordinates(topic=at.topic, partition=at.partition, offset=at.offset),
    )


def _cursor_of(item: PolicyChangeItem) -> str:
    k = item.kafka
    return CURSOR.encode((item.changed_at, k.topic, k.partition, k.offset))


@router.get(
    "/history",
    responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}},
    summary="Every change of the tenant's recovery policy, newest first",
)
async def get_policy_history(
    pool: Pool, caller: Caller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[PolicyChangeItem]:
    """The PolicyChanged records of the tenant, newest first, with their Kafka coordinates."""
    before = CURSOR.decode(cursor) if cursor is not None else None
    async with pool.acquire() as conn:
        found = await policy_store.policy_history(conn, caller.tenant, limit + 1, before)
    return build_page([_item(r) for r in found], limit, _cursor_of)
