"""/v1/deliveries: the delivery log of the caller's tenant's outbound webhooks, and redelivery.

One item per (endpoint, event): the envelope sent, how many attempts, the last one's HTTP
status and error, and when the next is due (paywatch/outbound/deliveries.py). A redelivery
starts a new round of attempts now, with the same ``webhook-id`` so receivers can tell a
repeat; it is refused (409) while an attempt is in flight or when the endpoint is disabled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from paywatch.api.query.deps import FORBIDDEN, ApiError, Caller, Pool, any_case, one_of
from paywatch.api.query.pagination import (
    DEFAULT_LIMIT,
    CursorCodec,
    Instant,
    Limit,
    Listing,
    Ref,
    Where,
)
from paywatch.api.query.schemas import ErrorBody, Page, Public
from paywatch.outbound import deliveries
from paywatch.outbound.deliveries import (
    DELIVERY_ID_PATTERN,
    STATUSES,
    Delivery,
    NotRedeliverable,
    UnknownDelivery,
)
from paywatch.outbound.endpoints import ENDPOINT_ID_PATTERN

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"], responses=FORBIDDEN)

CURSOR: CursorCodec[tuple[datetime, str]] = CursorCodec(tuple[Instant, Ref])
_EXAMPLE_ID = "dlv_2m7qk4zd3xab5c"
Cursor = Annotated[str | None, CURSOR.query((datetime(2024, 5, 1, 10, tzinfo=UTC), _EXAMPLE_ID))]
DeliveryId = Annotated[
    str,
    Path(pattern=DELIVERY_ID_PATTERN, description="As listed: dlv_ + 14 base32 characters.",
         examples=[_EXAMPLE_ID]),
]  # fmt: skip
EndpointParam = Annotated[
    str | None,
    Query(pattern=ENDPOINT_ID_PATTERN, description="Only this endpoint's deliveries (ep_...)."),
]
StatusParam = Annotated[
    str | None,
    Query(pattern=any_case(STATUSES), description="Only pending, succeeded or failed ones."),
]
_STATUSES: dict[str, str] = {status: status for status in STATUSES}
LISTING = Listing(deliveries.LIST_SELECT, ("created_at", "delivery_id"), CURSOR)

_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}}
_ONE = {**_ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}}


class DeliveryItem(Public):
    """One delivery of one event to one endpoint."""

    delivery_id: str
    endpoint_id: str
    event_id: str
    """The ``webhook-id`` header of every attempt."""
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    body: dict[str, Any]
    """The envelope sent: {id, type, created_at, tenant, data}."""


def _item(d: Delivery) -> DeliveryItem:
    return DeliveryItem(**{name: getattr(d, name) for name in DeliveryItem.model_fields})


@router.get("", responses=_ERRORS, summary="The delivery log, newest first (operator)")
async def list_deliveries(
    pool: Pool,
    caller: Caller,
    endpoint: EndpointParam = None,
    status: StatusParam = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[DeliveryItem]:
    """The caller's tenant's deliveries, of one endpoint and of one status when asked."""
    where = Where(caller.tenant)
    where.add_if("endpoint_id = {}", endpoint)
    where.add_if("status = {}", one_of("status", status, _STATUSES, ", ".join(STATUSES)))
    return await LISTING.page(pool, where, cursor, limit, lambda row: _item(deliveries.record(row)))


@router.post(
    "/{delivery_id}/redeliver",
    responses=_ONE,
    summary="Deliver again now, same webhook-id (operator)",
)
async def redeliver(pool: Pool, caller: Caller, delivery_id: DeliveryId) -> DeliveryItem:
    """A new round of attempts, the first one now: for a succeeded or failed delivery, or a
    pending one waiting for its next retry."""
    async with pool.acquire() as conn:
        try:
            return _item(await deliveries.redeliver(conn, caller.tenant, delivery_id))
        except UnknownDelivery as exc:
            raise ApiError(404, "not_found", f"no delivery {delivery_id!r}") from exc
        except NotRedeliverable as exc:
            raise ApiError(409, "not_redeliverable", str(exc)) from exc
