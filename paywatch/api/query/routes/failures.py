"""GET /v1/failures: one row per failed payment attempt, per tenant.

A viewer gets no customer ref or card, and no failure of an invoice filed under its
customer's ref (permissions.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BeforeValidator

from paywatch.api.query import permissions
from paywatch.api.query.deps import FORBIDDEN, NO_NUL, ApiError, Caller, Pool
from paywatch.api.query.pagination import (
    DEFAULT_LIMIT,
    CursorCodec,
    Instant,
    Limit,
    Listing,
    Where,
    instant_bound,
)
from paywatch.api.query.schemas import (
    Card,
    ErrorBody,
    Failure,
    FailureDecline,
    KafkaCoordinates,
    Page,
)
from paywatch.schemas.models import DeclineCategory

router = APIRouter(prefix="/v1/failures", tags=["failures"], responses=FORBIDDEN)

# Sort key (occurred_at DESC, event_id DESC), served by index failures_page.
CURSOR: CursorCodec[tuple[datetime, UUID]] = CursorCodec(tuple[Instant, UUID])
_EXAMPLE = (datetime(2024, 5, 1, 10, tzinfo=UTC), UUID("0f8fad5b-d9cb-469f-a165-70867728950e"))
Cursor = Annotated[str | None, CURSOR.query(_EXAMPLE)]

_COLUMNS = (
    "event_id, invoice_ref, provider, customer_ref, payment_ref, occurred_at, amount_minor,"
    " currency, attempt, decline_code, decline_category, decline_network, network_code,"
    ' advice_code, decline_message, card_brand, card_last4, topic, partition, "offset"'
)

Filter = Annotated[str | None, Query(min_length=1, max_length=256, pattern=NO_NUL)]
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_EXAMPLE_AT = "2024-05-01T00:00:00Z"


def _rfc3339(value: object) -> object:
    # The OpenAPI `date-time` format: pydantic alone would also read "0.5" as a Unix time.
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError(f"must be RFC 3339 with a timezone offset, e.g. {_EXAMPLE_AT}")
    return value


InstantParam = Annotated[
    AwareDatetime | None,
    BeforeValidator(_rfc3339),
    Query(description=f"RFC 3339 with a UTC offset, e.g. {_EXAMPLE_AT}"),
]


def _failure(row: Any) -> Failure:
    card = None
    if row["card_brand"] is not None or row["card_last4"] is not None:
        card = Card(brand=row["card_brand"], last4=row["card_last4"])
    return Failure(
        event_id=row["event_id"],
        invoice_ref=row["invoice_ref"],
        provider=row["provider"],
        customer_ref=row["customer_ref"],
        payment_ref=row["payment_ref"],
        occurred_at=row["occurred_at"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        attempt=row["attempt"],
        decline=FailureDecline(
            code=row["decline_code"],
            category=DeclineCategory(row["decline_category"]),
            network=row["decline_network"],
            network_code=row["network_code"],
            advice_code=row["advice_code"],
            message=row["decline_message"],
        ),
        card=card,
        kafka=KafkaCoordinates(
            topic=row["topic"], partition=row["partition"], offset=row["offset"]
        ),
    )


LISTING = Listing(f"{_COLUMNS} FROM failures", ("occurred_at", "event_id"), CURSOR)


@router.get(
    "",
    responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}},
    summary="List failed payment attempts, newest first",
)
async def list_failures(
    pool: Pool,
    caller: Caller,
    invoice_ref: Filter = None,
    customer_ref: Filter = None,
    category: DeclineCategory | None = None,
    provider: Filter = None,
    since: InstantParam = None,
    until: InstantParam = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[Failure]:
    """The tenant's failures with since <= occurred_at < until, newest first."""
    if since is not None and until is not None and until <= since:
        raise ApiError(400, "invalid_request", "query.until: must be later than since")
    where = Where(caller.tenant)
    where.add_if("invoice_ref = {}", invoice_ref)
    where.add_if("customer_ref = {}", customer_ref)
    where.add_if("decline_category = {}", category.value if category else None)
    where.add_if("provider = {}", provider)
    where.add_if("occurred_at >= {}", instant_bound(since))
    where.add_if("occurred_at < {}", instant_bound(until))
    if caller.customer_blind:
        where.add("NOT starts_with(invoice_ref, {})", permissions.CUSTOMER_INVOICE_PREFIX)
    return caller.redact(await LISTING.page(pool, where, cursor, limit, _failure))
