"""GET /v1/invoices/{invoice_ref}/timeline: an invoice's events, transitions and commands.

One ordered list across `event_log` and `recovery_log`, each item with the rule behind it
(transitions, commands) and its Kafka coordinates. Order: time, then event before
transition before command (an event causes a decision, a decision issues commands), then
Kafka coordinates, so the order is total and keyset pagination never skips or repeats.
A viewer may not open the timeline of an invoice filed under its customer's ref.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field, TypeAdapter

from paywatch.api.query.deps import (
    FORBIDDEN,
    ApiError,
    Caller,
    Pool,
    refuse_customer_invoice,
    storable,
)
from paywatch.api.query.pagination import (
    DEFAULT_LIMIT,
    CursorCodec,
    Instant,
    Limit,
    Offset,
    Partition,
    Ref,
    Where,
    build_page,
)
from paywatch.api.query.schemas import (
    Decline,
    ErrorBody,
    KafkaCoordinates,
    Rule,
    Timeline,
    TimelineItem,
)
from paywatch.schemas.models import PaymentEvent, RecoveryCommand, SagaTransition
from paywatch.schemas.topics import PAYMENTS_EVENTS

router = APIRouter(prefix="/v1/invoices", tags=["invoices"], responses=FORBIDDEN)

Order = Literal["asc", "desc"]
# (order, at, rank, topic, partition, offset): the order travels in the cursor, so a cursor
# is never silently applied in the other direction.
Key = tuple[Order, datetime, int, str, int, int]
_RANK = {"event": 0, "transition": 1, "command": 2}
Rank = Annotated[int, Field(ge=min(_RANK.values()), le=max(_RANK.values()))]
CURSOR: CursorCodec[Key] = CursorCodec(tuple[Order, Instant, Rank, Ref, Partition, Offset])
_EXAMPLE: Key = ("asc", datetime(2024, 5, 1, 10, tzinfo=UTC), 0, PAYMENTS_EVENTS, 0, 42)
Cursor = Annotated[str | None, CURSOR.query(_EXAMPLE)]
_ITEM: TypeAdapter[TimelineItem] = TypeAdapter(TimelineItem)

# Both tables filtered by (tenant, invoice_ref) through the outer WHERE: Postgres pushes
# the quals into each UNION ALL branch (indexes event_log_invoice, recovery_log_invoice).
_UNION = (
    "SELECT tenant, invoice_ref, 'event' AS kind, occurred_at AS at, 0 AS rank, topic,"
    ' partition, "offset", payload FROM event_log'
    " UNION ALL SELECT tenant, invoice_ref, kind, at,"
    " CASE kind WHEN 'transition' THEN 1 ELSE 2 END, topic, partition, \"offset\", payload"
    " FROM recovery_log"
)
_SORT = ("at", "rank", "topic", "partition", '"offset"')
_AFTER = {
    "asc": f"({', '.join(_SORT)}) > ({{}}, {{}}, {{}}, {{}}, {{}})",
    "desc": f"({', '.join(_SORT)}) < ({{}}, {{}}, {{}}, {{}}, {{}})",
}
_ORDER_BY = {"asc": ", ".join(_SORT), "desc": ", ".join(f"{c} DESC" for c in _SORT)}
_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM invoices WHERE tenant = $1 AND invoice_ref = $2)"
    " OR EXISTS (SELECT 1 FROM recovery_workflows WHERE tenant = $1 AND invoice_ref = $2)"
)

OrderParam = Annotated[Order, Query(description="asc: oldest first (default); desc: newest first.")]


def _event(payload: Any) -> dict[str, Any]:
    e = PaymentEvent.model_validate(payload)
    d = e.decline
    return {
        "event_id": e.event_id, "type": e.type, "provider": e.provider,
        "source_type": e.source_type, "amount_minor": e.amount_minor, "currency": e.currency,
        "attempt": e.attempt, "paywatch_retry": e.paywatch_retry,
        "decline": Decline(code=d.code, category=d.category, message=d.message) if d else None,
    }  # fmt: skip


def _transition(payload: Any) -> dict[str, Any]:
    t = SagaTransition.model_validate(payload)
    return {
        "from_state": t.from_state, "to_state": t.to_state, "cause_event_id": t.cause_event_id,
        "reason": t.reason, "rule": Rule(**t.rule.model_dump()),
    }  # fmt: skip


def _command(payload: Any) -> dict[str, Any]:
    c = RecoveryCommand.model_validate(payload)
    return {
        "command_id": c.command_id, "type": c.type, "due_at": c.due_at, "attempt": c.attempt,
        "channel": c.channel, "template": c.template, "reason": c.reason,
        "rule": Rule(**c.rule.model_dump()), "cause_event_id": c.cause_event_id,
    }  # fmt: skip


_FIELDS = {"event": _event, "transition": _transition, "command": _command}


def _item(row: Any) -> TimelineItem:
    coords = KafkaCoordinates(topic=row["topic"], partition=row["partition"], offset=row["offset"])
    fields = _FIELDS[row["kind"]](row["payload"])
    return _ITEM.validate_python({"kind": row["kind"], "at": row["at"], "kafka": coords, **fields})


def _cursor_for(order: Order) -> Callable[[TimelineItem], str]:
    def cursor_of(item: TimelineItem) -> str:
        k = item.kafka
        return CURSOR.encode((order, item.at, _RANK[item.kind], k.topic, k.partition, k.offset))

    return cursor_of


def _after(cursor: str, order: Order) -> tuple[object, ...]:
    key = CURSOR.decode(cursor)
    if key[0] != order:
        raise ApiError(400, "invalid_cursor", f"cursor is for order={key[0]}, not order={order}")
    return key[1:]


@router.get(
    "/{invoice_ref}/timeline",
    responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody}},
    summary="An invoice's events, saga transitions and commands, in order",
)
async def get_timeline(
    request: Request,
    pool: Pool,
    caller: Caller,
    invoice_ref: str,
    order: OrderParam = "asc",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Timeline:
    """Events, transitions and commands of the caller's tenant's invoice, oldest first."""
    refuse_customer_invoice(request, caller, invoice_ref)
    if not storable(invoice_ref) or not await pool.fetchval(_EXISTS, caller.tenant, invoice_ref):
        raise ApiError(404, "not_found", f"no invoice {invoice_ref!r}")
    where = Where(caller.tenant)
    where.add("invoice_ref = {}", invoice_ref)
    if cursor is not None:
        where.add(_AFTER[order], *_after(cursor, order))
    fetch = where.param(limit + 1)
    # Only constant fragments are formatted in; every value is a $n parameter of `where`.
    query = (
        f"SELECT * FROM ({_UNION}) AS timeline WHERE {where.sql}"  # noqa: S608
        f" ORDER BY {_ORDER_BY[order]} LIMIT {fetch}"
    )
    rows = await pool.fetch(query, *where.args)
    page = build_page([_item(r) for r in rows], limit, _cursor_for(order))
    return caller.redact(Timeline(data=page.data, next_cursor=page.next_cursor))
