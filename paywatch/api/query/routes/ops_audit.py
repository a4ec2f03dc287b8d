"""GET /v1/ops/audit: the caller's tenant's operator and admin actions, for its admins.

Read from the ``ops_audit`` read model (projected from ``ops.audit``, the record), newest
first, each with its Kafka coordinates. :func:`audit` is how the admin routes of this API
record their actions (paywatch/tenants/ops_audit.py): inside the route's transaction, after
the change; Kafka down is a 503 and the change is rolled back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field

from paywatch.api.query.deps import FORBIDDEN, ApiError, Caller, Pool
from paywatch.api.query.pagination import (
    DEFAULT_LIMIT,
    CursorCodec,
    Instant,
    Limit,
    Listing,
    Ref,
    Where,
)
from paywatch.api.query.schemas import ErrorBody, KafkaCoordinates, Page, Public
from paywatch.errors import Retryable
from paywatch.tenants.ops_audit import OpsEntry, record_ops

router = APIRouter(prefix="/v1/ops/audit", tags=["ops"], responses=FORBIDDEN)

CURSOR: CursorCodec[tuple[datetime, str]] = CursorCodec(tuple[Instant, Ref])
_EXAMPLE_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
Cursor = Annotated[str | None, CURSOR.query((datetime(2024, 5, 1, 10, tzinfo=UTC), _EXAMPLE_ID))]
ActionParam = Annotated[
    str | None,
    Query(
        min_length=1, max_length=100, pattern=r"^[a-z_]+(\.[a-z_]+)*$",
        description="Only this action, e.g. apikey.create, policy.change, secret.set.",
    ),
]  # fmt: skip
LISTING = Listing(
    'audit_id, actor, action, subject, at, details, topic, partition, "offset" FROM ops_audit',
    ("at", "audit_id"),
    CURSOR,
)
_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}}


class OpsAuditItem(Public):
    """One operator or admin action on the tenant."""

    audit_id: str
    actor: str = Field(description="cli:<os user> or api:<key id>.")
    action: str = Field(description="e.g. apikey.create, policy.change, secret.set.")
    subject: str | None = Field(description="A key id, endpoint id, provider or revision.")
    at: datetime
    details: dict[str, str] = Field(description="Names and short values; never a secret.")
    kafka: KafkaCoordinates


def _item(row: Any) -> OpsAuditItem:
    return OpsAuditItem(
        audit_id=row["audit_id"], actor=row["actor"], action=row["action"],
        subject=row["subject"], at=row["at"], details=row["details"],
        kafka=KafkaCoordinates(topic=row["topic"], partition=row["partition"],
                               offset=row["offset"]),
    )  # fmt: skip


async def audit(request: Request, entry: OpsEntry) -> None:
    """Record an admin action as the calling key (``api:<key id>``); call it inside the
    route's transaction, after the change: 503 when Kafka did not take the record, and the
    change is rolled back with the transaction."""
    key_id = getattr(request.state, "api_key_id", None)
    try:
        await record_ops(
            request.app.state.ops_log, entry, actor=f"api:{key_id}" if key_id else "api"
        )
    except Retryable as exc:
        detail = f"{exc}: the action was not recorded on ops.audit, so nothing changed; retry"
        raise ApiError(503, "kafka_unavailable", detail, {"Retry-After": "5"}) from exc


@router.get("", responses=_ERRORS, summary="Operator and admin actions, newest first (admin)")
async def list_ops_audit(
    pool: Pool,
    caller: Caller,
    action: ActionParam = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[OpsAuditItem]:
    """The caller's tenant's actions from ``ops.audit``: who, what, when, details."""
    where = Where(caller.tenant)
    where.add_if("action = {}", action)
    return await LISTING.page(pool, where, cursor, limit, _item)
