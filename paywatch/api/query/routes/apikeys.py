"""/v1/apikeys: the caller's tenant's API keys, for its admins (list, create, revoke, rotate).

Keys are named by their public id (``key_...``); another tenant's id is a 404, like any
other object of another tenant. A key cannot revoke or rotate itself here (409
``own_key``): the request would cut off the very client that sent it, mid-session — another
admin key or `paywatch apikey` does it. That is also what keeps an API fuzzer, which finds
key ids in the listing, from locking itself out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from paywatch.api.query.deps import ApiError, Pool, Principal, require_role
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
from paywatch.api.query.schemas import ErrorBody, Page
from paywatch.api.query.schemas_apikeys import (
    ApiKeyCreated,
    ApiKeyItem,
    ApiKeyRevoked,
    ApiKeyRotated,
    NewApiKeyRequest,
    RotateRequest,
)
from paywatch.errors import ConfigError, UnknownTenant
from paywatch.tenants import api_keys
from paywatch.tenants.api_keys import KEY_ID_PATTERN, ApiKeyRecord, KeyNotRotatable, UnknownApiKey
from paywatch.tenants.ops_audit import OpsEntry

router = APIRouter(prefix="/v1/apikeys", tags=["apikeys"])

Admin = Annotated[Principal, Depends(require_role("admin"))]
CURSOR: CursorCodec[tuple[datetime, str]] = CursorCodec(tuple[Instant, Ref])
_EXAMPLE_ID = "key_7fq2xk3mzd"
Cursor = Annotated[str | None, CURSOR.query((datetime(2024, 5, 1, 10, tzinfo=UTC), _EXAMPLE_ID))]
KeyId = Annotated[
    str,
    Path(pattern=KEY_ID_PATTERN, description="As listed: key_ + 10 base32 characters.",
         examples=[_EXAMPLE_ID]),
]  # fmt: skip
LISTING = Listing(api_keys.LIST_SELECT, ("created_at", "key_id"), CURSOR)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
}
_ONE_KEY = {**_ERRORS, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}}


def _item(r: ApiKeyRecord) -> dict[str, Any]:
    fields = ApiKeyItem.model_fields
    return {name: getattr(r, name) for name in fields}


def _actor(request: Request) -> str:
    """Who the change is recorded as: api:<the calling key's id> (deps.get_caller sets it)."""
    key_id = getattr(request.state, "api_key_id", None)
    return f"api:{key_id}" if key_id else "api"


def _not_self(request: Request, key_id: str, doing: str) -> None:
    if key_id == getattr(request.state, "api_key_id", None):
        raise ApiError(
            409, "own_key", f"this request is authenticated with {key_id}: it cannot {doing} "
            "itself; use another admin key or `paywatch apikey`",
        )  # fmt: skip


def _duration(text: str | None, field: str) -> Any:
    try:
        return api_keys.parse_duration(text) if text is not None else None
    except ConfigError as exc:  # the body's pattern already says so; kept for the message
        raise ApiError(400, "invalid_request", f"body.{field}: {exc}") from exc


def _unknown(key_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no API key {key_id!r}")


@router.get("", responses=_ERRORS, summary="List the tenant's API keys, newest first (admin)")
async def list_keys(
    pool: Pool, caller: Admin, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[ApiKeyItem]:
    """Every key of the caller's tenant (active, expired and revoked), never a secret."""
    return await LISTING.page(
        pool, Where(caller.tenant), cursor, limit,
        lambda row: ApiKeyItem(**_item(api_keys.record(row))),
    )  # fmt: skip


@router.post(
    "", status_code=201, responses=_ERRORS, summary="Create an API key, shown once (admin)"
)
async def create_key(
    request: Request, pool: Pool, caller: Admin, body: NewApiKeyRequest
) -> ApiKeyCreated:
    """A new key of the caller's tenant: the secret is in this answer and nowhere else."""
    expires_in = _duration(body.expires_in, "expires_in")
    async with pool.acquire() as conn:
        try:
            made = await api_keys.new_api_key(
                conn, caller.tenant, body.role,
                expires_in=expires_in, label=body.label, created_by=_actor(request),
            )  # fmt: skip
        except UnknownTenant as exc:  # the key outlived its tenant
            raise ApiError(404, "not_found", str(exc)) from exc
        record = made.record
        await audit(request, OpsEntry(caller.tenant, "apikey.create", record.key_id,
                                      {"role": record.role}))  # fmt: skip
    return ApiKeyCreated(key=made.key, **_item(made.record))


@router.post(
    "/{key_id}/revoke",
    responses=_ONE_KEY,
    summary="Revoke an API key now; idempotent (admin)",
)
async def revoke_key(request: Request, pool: Pool, caller: Admin, key_id: KeyId) -> ApiKeyRevoked:
    """Refuse the key from now on (also one in a rotation's grace period)."""
    _not_self(request, key_id, "revoke")
    async with pool.acquire() as conn:
        try:
            done = await api_keys.revoke_api_key(conn, caller.tenant, key_id, by=_actor(request))
        except (UnknownApiKey, UnknownTenant) as exc:
            raise _unknown(key_id) from exc
        if done.changed:
            await audit(request, OpsEntry(caller.tenant, "apikey.revoke", key_id))
    return ApiKeyRevoked(changed=done.changed, **_item(done.record))


@router.post(
    "/{key_id}/rotate",
    status_code=201,
    responses=_ONE_KEY,
    summary="Replace an API key with a new one, shown once (admin)",
)
async def rotate_key(
    request: Request, pool: Pool, caller: Admin, key_id: KeyId, body: RotateRequest | None = None
) -> ApiKeyRotated:
    """A new key with the old one's role, label and expiry length; the old one is revoked
    now, or when the ``grace`` period ends. 409 for a revoked or already rotated key."""
    _not_self(request, key_id, "rotate")
    grace = _duration(body.grace if body else None, "grace")
    async with pool.acquire() as conn:
        try:
            done = await api_keys.rotate_api_key(
                conn, caller.tenant, key_id, by=_actor(request), grace=grace
            )
        except (UnknownApiKey, UnknownTenant) as exc:
            raise _unknown(key_id) from exc
        except KeyNotRotatable as exc:
            raise ApiError(409, "not_rotatable", str(exc)) from exc
        details = {"new_key_id": done.new.record.key_id, "grace": body.grace if body else None}
        await audit(request, OpsEntry(caller.tenant, "apikey.rotate", key_id,
                                      {k: v or "none" for k, v in details.items()}))  # fmt: skip
    previous = ApiKeyItem(**_item(done.previous))
    return ApiKeyRotated(key=done.new.key, previous=previous, **_item(done.new.record))
