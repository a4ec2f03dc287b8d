"""GET /v1/alerts and /v1/alerts/{alert_id}: the tenant's incidents, open and resolved.

The `alerts` read model holds one row per incident, its latest Alert record. An alert id
is ``tenant/kind/subject/opened ms`` and so contains ``/``: the single-alert route takes
the rest of the path (``{alert_id:path}``), so a client may send the id as is or with its
``/`` percent-encoded (``%2F``); a subject with ``?``, ``#`` or ``%`` must be encoded.

A customer alert's id and message name its customer, so a viewer (permissions.py) is not
shown customer alerts: they are left out of its list, and asking for one by id or kind is
403, decided from the id or kind alone so that the answer never confirms one exists.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from paywatch.api.query import permissions
from paywatch.api.query.deps import (
    FORBIDDEN,
    NO_NUL,
    ApiError,
    Caller,
    Pool,
    any_case,
    customer_refusal,
    one_of,
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
)
from paywatch.api.query.schemas import AlertItem, ErrorBody, Page
from paywatch.risk.alerts import CODE_SPIKE, PROVIDER_SPIKE
from paywatch.risk.high_risk import KIND as HIGH_RISK
from paywatch.schemas.models import AlertStatus
from paywatch.schemas.topics import ALERTS

# The tag is the resource's name, which is also the topic's (spelled only in schemas.topics).
router = APIRouter(prefix="/v1/alerts", tags=[ALERTS], responses=FORBIDDEN)

# Sort key (updated_at DESC, alert_id DESC), served by alerts_status_page / alerts_page.
CURSOR: CursorCodec[tuple[datetime, str]] = CursorCodec(tuple[Instant, Ref])
_EXAMPLE_ID = "acme/PROVIDER_FAILURE_SPIKE/stripe/1714557600000"
Cursor = Annotated[str | None, CURSOR.query((datetime(2024, 5, 1, 10, tzinfo=UTC), _EXAMPLE_ID))]
# The example with '/' also tells OpenAPI tools that the id may hold them (percent-encoded).
AlertId = Annotated[
    str,
    Path(description="tenant/kind/subject/opened ms, as listed.", examples=[_EXAMPLE_ID]),
]
STATUSES: dict[str, str] = {status.value.lower(): status.value for status in AlertStatus}
"""The API's status names (lowercase) -> the status stored in the read model."""
KINDS: dict[str, str] = {kind.lower(): kind for kind in (PROVIDER_SPIKE, CODE_SPIKE, HIGH_RISK)}
"""The kinds the worker emits, by their lowercase spelling (the filter is case-insensitive)."""

_COLUMNS = (
    "alert_id, kind, severity, status, provider, decline_code, customer_ref, observed,"
    " baseline, window_start, window_end, message, opened_at, updated_at, resolved_at"
)
_ONE = f"SELECT {_COLUMNS} FROM alerts WHERE tenant = $1 AND alert_id = $2"  # noqa: S608

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
}
StatusParam = Annotated[
    str | None,
    Query(pattern=any_case(STATUSES), description="Only open or resolved ones (any case)."),
]
KindParam = Annotated[
    str | None,
    Query(
        pattern=any_case(KINDS.values()),
        description=f"Only this kind: {', '.join(KINDS.values())} (any case).",
    ),
]
ProviderParam = Annotated[str | None, Query(min_length=1, max_length=256, pattern=NO_NUL)]


def parse_status(given: str | None) -> str | None:
    """The stored status (OPEN, RESOLVED) a `status` parameter names, in any case."""
    return one_of("status", given, STATUSES, ", ".join(STATUSES))


def parse_kind(given: str | None) -> str | None:
    """The stored kind a `kind` parameter names, in any case."""
    return one_of("kind", given, KINDS, ", ".join(KINDS.values()) + " (any case)")


def _alert(row: Any) -> AlertItem:
    return AlertItem(
        alert_id=row["alert_id"],
        kind=row["kind"],
        severity=row["severity"].lower(),
        provider=row["provider"],
        decline_code=row["decline_code"],
        customer_ref=row["customer_ref"],
        status=row["status"].lower(),
        observed=row["observed"],
        baseline=row["baseline"],
        window_s=(row["window_end"] - row["window_start"]).total_seconds(),
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        resolved_at=row["resolved_at"],
        message=row["message"],
    )


LISTING = Listing(f"{_COLUMNS} FROM alerts", ("updated_at", "alert_id"), CURSOR)


@router.get("", responses=_ERRORS, summary="List alerts, most recently updated first")
async def list_alerts(
    request: Request,
    pool: Pool,
    caller: Caller,
    status: StatusParam = None,
    kind: KindParam = None,
    provider: ProviderParam = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AlertItem]:
    """Incidents of the caller's tenant, filtered, by (updated_at, alert_id) descending."""
    wanted = parse_kind(kind)
    where = Where(caller.tenant)
    where.add_if("status = {}", parse_status(status))
    where.add_if("kind = {}", wanted)
    where.add_if("provider = {}", provider)
    if caller.customer_blind:
        if wanted in permissions.CUSTOMER_ALERT_KINDS:
            raise customer_refusal(request, caller, f"{wanted} alerts are about a customer")
        where.add("kind <> ALL({}::text[])", sorted(permissions.CUSTOMER_ALERT_KINDS))
    return caller.redact(await LISTING.page(pool, where, cursor, limit, _alert))


@router.get(
    "/{alert_id:path}",
    responses={**_ERRORS, 404: {"model": ErrorBody}},
    summary="One alert (its id contains '/': send it as is or percent-encoded)",
)
async def get_alert(request: Request, pool: Pool, caller: Caller, alert_id: AlertId) -> AlertItem:
    """The caller's tenant's incident; 404 when it has none by that id (even if another does)."""
    if caller.customer_blind and permissions.customer_alert(alert_id):
        raise customer_refusal(request, caller, "this alert id names a customer")
    row = await pool.fetchrow(_ONE, caller.tenant, alert_id) if storable(alert_id) else None
    if row is None:
        raise ApiError(404, "not_found", f"no alert {alert_id!r}")
    return caller.redact(_alert(row))
