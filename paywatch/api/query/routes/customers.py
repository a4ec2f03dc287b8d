"""GET /v1/customers and /v1/customers/{customer_ref}: risk and money owed, per tenant.

The risk is the `customers` read model (the latest risk.scores record of the customer);
what it owes is read from `invoices` and `failures` at request time, so it is as fresh as
the payment read models, whether or not the customer has been scored yet. Both routes are
about a customer, so the viewer role may call neither (permissions.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import FiniteFloat

from paywatch.api.query.deps import (
    FORBIDDEN,
    ApiError,
    Caller,
    Pool,
    any_case,
    one_of,
    storable,
)
from paywatch.api.query.pagination import (
    DEFAULT_LIMIT,
    CursorCodec,
    Limit,
    Listing,
    Ref,
    Where,
)
from paywatch.api.query.schemas import (
    Customer,
    CustomerRisk,
    ErrorBody,
    Page,
    Risk,
    RiskReason,
)
from paywatch.schemas.models import RiskBand, SagaState

router = APIRouter(prefix="/v1/customers", tags=["customers"], responses=FORBIDDEN)

# Sort key (score DESC, customer_ref DESC), served by customers_band_page / customers_page.
# A finite float: the cursor carries the score exactly (JSON floats round-trip).
CURSOR: CursorCodec[tuple[float, str]] = CursorCodec(tuple[FiniteFloat, Ref])
Cursor = Annotated[str | None, CURSOR.query((0.82, "cus_123"))]
BANDS: dict[str, RiskBand] = {band.value.lower(): band for band in RiskBand}
"""The API's band names (lowercase) -> the band stored in the read model."""
CLOSED = [s.value for s in (SagaState.recovered, SagaState.exhausted, SagaState.canceled)]
"""Invoice statuses that owe nothing any more: every other status is open."""

_RISK = "customer_ref, score, band, reasons, model_version, as_of"
_ONE = f"SELECT {_RISK} FROM customers WHERE tenant = $1 AND customer_ref = $2"  # noqa: S608
# Its invoices (index invoices_customer) and newest failure (index failures_customer). The
# sum is in one currency, the one of its most recently active open invoice, because amounts
# in different currencies do not add up.
_OWED = (
    "WITH mine AS (SELECT status, amount_minor, currency, last_event_at, invoice_ref"
    " FROM invoices WHERE tenant = $1 AND customer_ref = $2),"
    " unpaid AS (SELECT * FROM mine WHERE status <> ALL($3::text[])),"
    " recent AS (SELECT currency FROM unpaid WHERE currency IS NOT NULL"
    " ORDER BY last_event_at DESC, invoice_ref DESC LIMIT 1)"
    " SELECT EXISTS (SELECT 1 FROM mine) AS invoiced,"
    " (SELECT count(*) FROM unpaid) AS invoices_open,"
    " (SELECT currency FROM recent) AS currency,"
    " (SELECT coalesce(sum(amount_minor), 0) FROM unpaid"
    "  WHERE currency = (SELECT currency FROM recent))::bigint AS amount_at_risk_minor,"
    " (SELECT max(occurred_at) FROM failures WHERE tenant = $1 AND customer_ref = $2)"
    " AS last_failure_at"
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
}
BandParam = Annotated[
    str | None,
    Query(
        pattern=any_case(BANDS),
        description="Only this band: low, medium, high or critical (any case).",
    ),
]


def parse_band(given: str | None) -> RiskBand | None:
    """The band a `band` query parameter names (any case); 400 naming the allowed ones."""
    return one_of("band", given, BANDS, ", ".join(BANDS))


def _risk(row: Any) -> dict[str, Any]:
    return {
        "score": row["score"],
        "band": row["band"].lower(),
        "reasons": [RiskReason(**reason) for reason in row["reasons"]],
        "model_version": row["model_version"],
        "as_of": row["as_of"],
    }


LISTING = Listing(f"{_RISK} FROM customers", ("score", "customer_ref"), CURSOR)


@router.get("", responses=_ERRORS, summary="The risk worklist: customers, highest score first")
async def list_customers(
    pool: Pool,
    caller: Caller,
    band: BandParam = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[CustomerRisk]:
    """Scored customers of the caller's tenant, by (score, customer_ref) descending."""
    wanted = parse_band(band)
    where = Where(caller.tenant)
    where.add_if("band = {}", wanted.value if wanted else None)
    return await LISTING.page(pool, where, cursor, limit, _customer_risk)


def _customer_risk(row: Any) -> CustomerRisk:
    return CustomerRisk(customer_ref=row["customer_ref"], **_risk(row))


@router.get(
    "/{customer_ref}",
    responses={**_ERRORS, 404: {"model": ErrorBody}},
    summary="One customer: risk, open invoices, amount at risk, last failure",
)
async def get_customer(pool: Pool, caller: Caller, customer_ref: str) -> Customer:
    """The caller's tenant's customer; 404 when it has neither a score nor an invoice."""
    if not storable(customer_ref):
        raise ApiError(404, "not_found", f"no customer {customer_ref!r}")
    async with pool.acquire() as conn:
        scored = await conn.fetchrow(_ONE, caller.tenant, customer_ref)
        owed = await conn.fetchrow(_OWED, caller.tenant, customer_ref, CLOSED)
    if scored is None and not owed["invoiced"]:
        raise ApiError(404, "not_found", f"no customer {customer_ref!r}")
    return Customer(
        customer_ref=customer_ref,
        risk=Risk(**_risk(scored)) if scored is not None else None,
        invoices_open=owed["invoices_open"],
        amount_at_risk_minor=owed["amount_at_risk_minor"],
        currency=owed["currency"],
        last_failure_at=owed["last_failure_at"],
    )
