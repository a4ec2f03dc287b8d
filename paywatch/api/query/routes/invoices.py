"""GET /v1/invoices and /v1/invoices/{invoice_ref}: the invoices read model, per tenant.

The single invoice also carries its recovery workflow (`recovery_workflows`), if any. Who
may call which route: permissions.py; a viewer's answers have no customer identifier, and
invoices filed under their customer's ref are neither listed nor shown to it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from paywatch.api.query import permissions
from paywatch.api.query.deps import (
    FORBIDDEN,
    NO_NUL,
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
    Listing,
    Ref,
    Where,
    instant_bound,
)
from paywatch.api.query.routes.failures import InstantParam
from paywatch.api.query.schemas import (
    Decline,
    ErrorBody,
    Invoice,
    InvoiceDetail,
    Page,
    Recovery,
    Rule,
)
from paywatch.schemas.models import MAX_MINOR, CommandType, DeclineCategory, SagaState

router = APIRouter(prefix="/v1/invoices", tags=["invoices"], responses=FORBIDDEN)

# Sort key (last_event_at DESC, invoice_ref DESC), served by index invoices_page.
CURSOR: CursorCodec[tuple[datetime, str]] = CursorCodec(tuple[Instant, Ref])
Cursor = Annotated[str | None, CURSOR.query((datetime(2024, 5, 1, 10, tzinfo=UTC), "in_123"))]

_COLUMNS = (
    "invoice_ref, status, provider, customer_ref, subscription_ref, amount_minor, currency,"
    " attempts, last_decline_code, last_decline_category, last_decline_message,"
    " first_failed_at, last_failed_at, recovered_at, canceled_at, last_event_at, updated_at"
)
_ONE = f"SELECT {_COLUMNS} FROM invoices WHERE tenant = $1 AND invoice_ref = $2"  # noqa: S608
_WORKFLOW = (
    "SELECT state, next_action, next_action_at, attempts_used, attempts_allowed, last_rule_id,"
    " last_rule_edition, last_rule_source, last_reason, started_at, closed_at,"
    " last_transition_at FROM recovery_workflows WHERE tenant = $1 AND invoice_ref = $2"
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
}

Filter = Annotated[str | None, Query(min_length=1, max_length=256, pattern=NO_NUL)]
Amount = Annotated[
    int | None,
    Query(ge=-MAX_MINOR, le=MAX_MINOR, description="Minor units, e.g. 4900 for 49.00."),
]
_FROM = "Failed first at or after this instant (RFC 3339 with a UTC offset)."
_TO = "Failed first before this instant (RFC 3339 with a UTC offset)."


def _check_ranges(
    amount_min: int | None,
    amount_max: int | None,
    since: datetime | None,
    until: datetime | None,
) -> None:
    """400 for a range that can match nothing: it is a mistake, not an empty answer."""
    if amount_min is not None and amount_max is not None and amount_max < amount_min:
        raise ApiError(400, "invalid_request", "query.amount_max: must not be below amount_min")
    if since is not None and until is not None and until <= since:
        raise ApiError(400, "invalid_request", "query.to: must be later than from")


def _decline(row: Any) -> Decline | None:
    code, category = row["last_decline_code"], row["last_decline_category"]
    if code is None and category is None:
        return None
    return Decline(
        code=code,
        category=DeclineCategory(category) if category else DeclineCategory.UNKNOWN,
        message=row["last_decline_message"],
    )


def _invoice(row: Any) -> Invoice:
    fields = {k: row[k] for k in Invoice.model_fields if k != "last_decline"}
    return Invoice(**fields, last_decline=_decline(row))


def _recovery(row: Any) -> Recovery:
    action = row["next_action"]
    return Recovery(
        state=SagaState(row["state"]),
        next_action=CommandType(action) if action is not None else None,
        next_action_at=row["next_action_at"],
        attempts_used=row["attempts_used"],
        attempts_allowed=row["attempts_allowed"],
        rule=Rule(
            id=row["last_rule_id"],
            edition=row["last_rule_edition"],
            source=row["last_rule_source"],
        ),
        reason=row["last_reason"],
        started_at=row["started_at"],
        closed_at=row["closed_at"],
        last_transition_at=row["last_transition_at"],
    )


LISTING = Listing(f"{_COLUMNS} FROM invoices", ("last_event_at", "invoice_ref"), CURSOR)


@router.get("", responses=_ERRORS, summary="List invoices, newest activity first")
async def list_invoices(
    pool: Pool,
    caller: Caller,
    status: SagaState | None = None,
    provider: Filter = None,
    customer_ref: Filter = None,
    decline_category: DeclineCategory | None = None,
    amount_min: Amount = None,
    amount_max: Amount = None,
    since: Annotated[InstantParam, Query(alias="from", description=_FROM)] = None,
    until: Annotated[InstantParam, Query(alias="to", description=_TO)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[Invoice]:
    """Invoices of the caller's tenant, filtered, by (last_event_at, invoice_ref) descending.

    ``decline_category`` is the last decline's, ``amount_min``/``amount_max`` bound
    ``amount_minor`` (both included) and ``from``/``to`` the first failure
    (from <= first_failed_at < to), as the metrics count failures.
    """
    _check_ranges(amount_min, amount_max, since, until)
    where = Where(caller.tenant)
    where.add_if("status = {}", status.value if status else None)
    where.add_if("provider = {}", provider)
    where.add_if("customer_ref = {}", customer_ref)
    where.add_if("last_decline_category = {}", decline_category.value if decline_category else None)
    where.add_if("amount_minor >= {}", amount_min)
    where.add_if("amount_minor <= {}", amount_max)
    where.add_if("first_failed_at >= {}", instant_bound(since))
    where.add_if("first_failed_at < {}", instant_bound(until))
    if caller.customer_blind:
        where.add("NOT starts_with(invoice_ref, {})", permissions.CUSTOMER_INVOICE_PREFIX)
    return caller.redact(await LISTING.page(pool, where, cursor, limit, _invoice))


@router.get(
    "/{invoice_ref}",
    responses={**_ERRORS, 404: {"model": ErrorBody}},
    summary="One invoice",
)
async def get_invoice(
    request: Request, pool: Pool, caller: Caller, invoice_ref: str
) -> InvoiceDetail:
    """The caller's tenant's invoice; 404 when it has none by that ref (even if another does)."""
    refuse_customer_invoice(request, caller, invoice_ref)
    row = await pool.fetchrow(_ONE, caller.tenant, invoice_ref) if storable(invoice_ref) else None
    if row is None:
        raise ApiError(404, "not_found", f"no invoice {invoice_ref!r}")
    workflow = await pool.fetchrow(_WORKFLOW, caller.tenant, invoice_ref)
    recovery = _recovery(workflow) if workflow is not None else None
    return caller.redact(InvoiceDetail(**_invoice(row).model_dump(), recovery=recovery))
