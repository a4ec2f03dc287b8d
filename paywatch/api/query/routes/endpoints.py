"""/v1/endpoints: the caller's tenant's outbound webhook endpoints, for its admins.

List, add, disable and rotate the signing secret (paywatch/outbound/endpoints.py). The
``whsec_`` secret is in the answer of ``POST /v1/endpoints`` and of ``rotate-secret`` and
nowhere else; a Slack endpoint's URL is its secret, so it is listed as its origin only.
Another tenant's endpoint id is a 404, like any object of another tenant. In prod a target
must be https and must not resolve to a private address (400 ``invalid_target``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
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
from paywatch.api.query.routes.ops_audit import audit
from paywatch.api.query.schemas import ErrorBody, Page, Public
from paywatch.errors import ConfigError, UnknownTenant
from paywatch.outbound import endpoints
from paywatch.outbound.endpoints import (
    ENDPOINT_ID_PATTERN,
    MAX_URL,
    URL_PATTERN,
    Endpoint,
    EndpointNotRotatable,
    TargetPolicy,
    UnknownEndpoint,
)
from paywatch.outbound.events import EVENT_TYPES, EventType
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.ops_audit import OpsEntry

router = APIRouter(prefix="/v1/endpoints", tags=["endpoints"], responses=FORBIDDEN)

CURSOR: CursorCodec[tuple[datetime, str]] = CursorCodec(tuple[Instant, Ref])
_EXAMPLE_ID = "ep_7fq2xk3mzdab4c"
Cursor = Annotated[str | None, CURSOR.query((datetime(2024, 5, 1, 10, tzinfo=UTC), _EXAMPLE_ID))]
EndpointId = Annotated[
    str,
    Path(pattern=ENDPOINT_ID_PATTERN, description="As listed: ep_ + 14 base32 characters.",
         examples=[_EXAMPLE_ID]),
]  # fmt: skip
LISTING = Listing(endpoints.LIST_SELECT, ("created_at", "endpoint_id"), CURSOR)

_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}}
_ONE = {**_ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}}


class EndpointItem(Public):
    """One endpoint as the tenant's admins see it: never its secret."""

    endpoint_id: str = Field(description="Public id, ep_ + 14 base32 characters.")
    url: str = Field(description="The target; a Slack endpoint's is shown as its origin only.")
    kind: Literal["webhook", "slack"]
    events: list[EventType] = Field(description="The event types it is sent.")
    status: Literal["active", "disabled"]
    created_at: datetime
    created_by: str | None = Field(description="cli:<os user> or api:<key id>.")
    secret_rotated_at: datetime | None
    rotated_by: str | None
    disabled_at: datetime | None
    disabled_by: str | None
    previous_valid_until: datetime | None = Field(
        description="During a rotation's grace period: until when the previous secret also "
        "signs (both signatures are sent); null otherwise."
    )


class EndpointWithSecret(EndpointItem):
    """An endpoint just added or rotated: ``secret`` is in this answer only."""

    secret: str | None = Field(
        description="The whsec_ signing secret (Standard Webhooks); shown once. Null for Slack."
    )


class EndpointDisabled(EndpointItem):
    """The disabled endpoint; ``changed`` false when it already was."""

    changed: bool


class NewEndpointRequest(Public):
    """What POST /v1/endpoints adds."""

    url: Annotated[
        str,
        Field(pattern=URL_PATTERN, max_length=MAX_URL,
              description="http(s)://host[:port][/path]; https in prod. For kind slack, the "
              "incoming-webhook URL.", examples=["https://example.com/hooks/paywatch"]),
    ]  # fmt: skip
    events: Annotated[
        list[EventType],
        Field(min_length=1, max_length=4 * len(EVENT_TYPES),
              description="The event types to send it (repeats are ignored)."),
    ]  # fmt: skip
    kind: Literal["webhook", "slack"] = "webhook"


def _item(e: Endpoint) -> dict[str, Any]:
    return {name: getattr(e, name) for name in EndpointItem.model_fields} | {
        "events": list(e.events)
    }


def _actor(request: Request) -> str:
    """Who the change is recorded as: api:<the calling key's id> (deps.get_caller sets it)."""
    key_id = getattr(request.state, "api_key_id", None)
    return f"api:{key_id}" if key_id else "api"


def _entry(tenant: str, action: str, e: Endpoint) -> OpsEntry:
    """The ops.audit record of an endpoint action (never a secret; a URL longer than an
    audit detail holds is clipped: endpoints.audit_details)."""
    return OpsEntry(tenant, action, e.endpoint_id, endpoints.audit_details(e))


def _box(request: Request) -> SecretBox:
    """The app's secret box, made on first use."""
    box: SecretBox | None = getattr(request.app.state, "secret_box", None)
    if box is None:
        box = request.app.state.secret_box = SecretBox.from_settings(request.app.state.settings)
    return box


def _unknown(endpoint_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no endpoint {endpoint_id!r}")


@router.get("", responses=_ERRORS, summary="List the tenant's endpoints, newest first (admin)")
async def list_endpoints(
    pool: Pool, caller: Caller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[EndpointItem]:
    """Every endpoint of the caller's tenant, disabled ones too; never a secret."""
    return await LISTING.page(
        pool, Where(caller.tenant), cursor, limit,
        lambda row: EndpointItem(**_item(endpoints.record(row))),
    )  # fmt: skip


@router.post(
    "", status_code=201, responses=_ERRORS, summary="Add an endpoint; its secret shown once (admin)"
)
async def add_endpoint(
    request: Request, pool: Pool, caller: Caller, body: NewEndpointRequest
) -> EndpointWithSecret:
    """A new endpoint of the caller's tenant, sent the event types it names from now on."""
    settings: Settings = request.app.state.settings
    async with pool.acquire() as conn:
        try:
            made = await endpoints.add_endpoint(
                conn, _box(request), caller.tenant, body.url, body.events, kind=body.kind,
                policy=TargetPolicy.from_settings(settings), created_by=_actor(request),
            )  # fmt: skip
        except UnknownTenant as exc:  # the key outlived its tenant
            raise ApiError(404, "not_found", str(exc)) from exc
        except ConfigError as exc:
            raise ApiError(400, "invalid_target", f"body.url: {exc}") from exc
        await audit(request, _entry(caller.tenant, "endpoint.add", made.endpoint))
    return EndpointWithSecret(secret=made.secret, **_item(made.endpoint))


@router.post(
    "/{endpoint_id}/disable",
    responses=_ONE,
    summary="Send an endpoint nothing more; idempotent (admin)",
)
async def disable_endpoint(
    request: Request, pool: Pool, caller: Caller, endpoint_id: EndpointId
) -> EndpointDisabled:
    """Disable the endpoint: no new deliveries, and its pending ones end as failed."""
    async with pool.acquire() as conn:
        try:
            done, changed = await endpoints.disable_endpoint(
                conn, caller.tenant, endpoint_id, by=_actor(request)
            )
        except (UnknownEndpoint, UnknownTenant) as exc:
            raise _unknown(endpoint_id) from exc
        if changed:
            await audit(request, _entry(caller.tenant, "endpoint.disable", done))
    return EndpointDisabled(changed=changed, **_item(done))


@router.post(
    "/{endpoint_id}/rotate-secret",
    responses=_ONE,
    summary="A new signing secret, shown once; the old one signs too for a grace period (admin)",
)
async def rotate_secret(
    request: Request, pool: Pool, caller: Caller, endpoint_id: EndpointId
) -> EndpointWithSecret:
    """Both secrets sign every delivery until ``previous_valid_until``
    (PAYWATCH_SECRET_GRACE_HOURS, 24 h by default); 409 for a Slack or disabled endpoint."""
    settings: Settings = request.app.state.settings
    grace = timedelta(hours=settings.secret_grace_hours)
    async with pool.acquire() as conn:
        try:
            done = await endpoints.rotate_secret(
                conn, _box(request), caller.tenant, endpoint_id, by=_actor(request), grace=grace
            )
        except (UnknownEndpoint, UnknownTenant) as exc:
            raise _unknown(endpoint_id) from exc
        except EndpointNotRotatable as exc:
            raise ApiError(409, "not_rotatable", str(exc)) from exc
        await audit(request, _entry(caller.tenant, "endpoint.rotate_secret", done.endpoint))
    return EndpointWithSecret(secret=done.secret, **_item(done.endpoint))
