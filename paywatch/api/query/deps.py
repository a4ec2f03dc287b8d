"""Dependencies of the query API: the pool, the authenticated caller and role checks.

The tenant of every request comes from its API key, never from the URL or query.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from paywatch.api.query import permissions
from paywatch.api.query.schemas import ErrorBody
from paywatch.api.ratelimit import TokenBuckets, retry_after
from paywatch.db import TenantPool
from paywatch.tenants import api_keys
from paywatch.tenants.roles import Role


def _last_use(request: Request) -> api_keys.LastUse:
    """This app's last-use recorder of keys (made on first use: one per app, so per pool)."""
    recorder: api_keys.LastUse | None = getattr(request.app.state, "key_last_use", None)
    if recorder is None:
        recorder = request.app.state.key_last_use = api_keys.LastUse()
    return recorder


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `paywatch apikey create`, sent as `Authorization: Bearer <key>`.",
)


class ApiError(HTTPException):
    """An error answered as ErrorBody {error, detail} (app.py renders it)."""

    def __init__(
        self, status_code: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.error = error


M = TypeVar("M")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's tenant and role."""

    tenant: str
    role: Role

    def has_role(self, role: Role) -> bool:
        """True when this caller's role includes ``role`` (permissions.INCLUDES)."""
        return role in permissions.INCLUDES[self.role]

    @property
    def customer_blind(self) -> bool:
        """True when answers must not tell this caller which customer they are about."""
        return self.role in permissions.CUSTOMER_BLIND

    def redact(self, answer: M) -> M:
        """The answer as this caller may see it: customer identifiers nulled when blind."""
        return permissions.redact(answer) if self.customer_blind else answer


async def get_app_pool(request: Request) -> asyncpg.Pool:
    """The pool opened by the app's lifespan, bound to no tenant: logged in as paywatch_api
    it sees no tenant's rows (row-level security, migration 014). For /health and the key
    lookup (through the owner's ``paywatch_authenticate``)."""
    return request.app.state.pool


AppPool = Annotated[asyncpg.Pool, Depends(get_app_pool)]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(detail: str, *, invalid_token: bool) -> ApiError:
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


async def get_caller(request: Request, pool: AppPool, credentials: Credentials) -> Principal:
    """Authenticate the bearer API key by its SHA-256 hash; 401 when missing, unknown,
    revoked or expired (expiry has its own detail: it tells the holder nothing new).

    The key's last use is recorded in the background, at most once a minute per key
    (api_keys.LastUse), and its id kept in ``request.state.api_key_id`` for the routes
    that record who acted. Then the key's tenant pays one token of its rate limit (429
    with ``Retry-After`` when none is left): before the route's own queries, so a tenant's
    flood costs one key lookup per request and nothing more.
    """
    if credentials is None:
        raise _unauthorized(
            "missing or malformed Authorization header: expected 'Bearer <api key>'",
            invalid_token=False,
        )
    digest = api_keys.hash_api_key(credentials.credentials)
    key = await api_keys.authenticate(pool, digest)
    if key is None or key.state == "revoked":
        raise _unauthorized("unknown or revoked API key", invalid_token=True)
    if key.state == "expired":
        raise _unauthorized("expired API key", invalid_token=True)
    _last_use(request).touch(pool, key.key_id, digest)
    request.state.api_key_id = key.key_id
    limits: TokenBuckets | None = getattr(request.app.state, "rate_limits", None)
    if limits is not None:
        wait = limits.take(key.tenant)
        if wait:
            seconds = retry_after(wait)
            raise ApiError(
                429,
                "rate_limited",
                f"this tenant is over its API rate limit; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
    return Principal(tenant=key.tenant, role=key.role)


Authenticated = Annotated[Principal, Depends(get_caller)]


async def get_pool(pool: AppPool, caller: Authenticated) -> TenantPool:
    """The pool bound to the caller's tenant: under row-level security its queries see that
    tenant's rows only, with or without their own tenant filter. FastAPI resolves the caller
    once per request, so the key is looked up once for both."""
    return TenantPool(pool, caller.tenant)


Pool = Annotated[TenantPool, Depends(get_pool)]


def route_of(request: Request) -> str:
    """The matrix name of the route that matched, e.g. ``GET /v1/invoices/{invoice_ref}``."""
    return permissions.route_key(request.method, getattr(request.scope.get("route"), "path", ""))


def forbidden(detail: str) -> ApiError:
    """The 403 of a role that may not do what it asked."""
    return ApiError(403, "forbidden", detail)


def customer_refusal(request: Request, caller: Principal, why: str) -> ApiError:
    """403 for a customer-blind caller asking for something that names a customer."""
    route = route_of(request)
    seeing = permissions.allowed(route) - permissions.CUSTOMER_BLIND
    return forbidden(
        f"{route}: {why}, and the {caller.role} role is not shown customer identifiers;"
        f" needs one of the roles {permissions.listed(seeing)}"
    )


async def authorize(request: Request, caller: Authenticated) -> Principal:
    """The caller, when the permission matrix lets its role call the matched route; else 403.

    Every authenticated route takes its caller from here (``Caller``), so the matrix alone
    grants permissions and a route missing from it is refused to everyone. A customer-blind
    caller may not filter by a redacted field either: the answer would reveal the value.
    """
    route = route_of(request)
    if caller.role not in permissions.allowed(route):
        raise forbidden(permissions.refusal(route, caller.role))
    named = sorted(permissions.REDACTED_FIELDS & set(request.query_params))
    if caller.customer_blind and named:
        raise customer_refusal(request, caller, f"query.{named[0]} filters by a customer")
    return caller


Caller = Annotated[Principal, Depends(authorize)]
"""The authenticated caller, allowed on this route by the permission matrix."""

FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {
        "model": ErrorBody,
        "description": "`forbidden`: the key's role may not call this route (README"
        " permission matrix), or the viewer asked for something that names a customer.",
    }
}
"""The 403 every authenticated route documents (its router's ``responses``)."""


def refuse_customer_invoice(request: Request, caller: Principal, invoice_ref: str) -> None:
    """403 for a customer-blind caller naming an invoice filed under its customer's ref.

    Decided from the ref alone, before any lookup: the same answer whether it exists or not.
    """
    if caller.customer_blind and permissions.customer_invoice(invoice_ref):
        raise customer_refusal(request, caller, "this invoice ref is a customer's ref")


def require_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the caller, or 403 when its role does not include ``role``.

    On top of the matrix (``Caller``): ``require_role("admin")`` is admin only,
    ``require_role("operator")`` operator or admin (permissions.INCLUDES).
    """

    holders = frozenset(r for r, has in permissions.INCLUDES.items() if role in has)

    async def check(request: Request, caller: Caller) -> Principal:
        if not caller.has_role(role):
            raise forbidden(
                f"{route_of(request)} needs one of the roles {permissions.listed(holders)};"
                f" this key's role is {caller.role}"
            )
        return caller

    return check


V = TypeVar("V")
_MAX_SHOWN = 80
"""How much of a rejected parameter value an error repeats."""

NO_NUL = r"^[^\x00]*$"
"""Pattern of text parameters: Postgres text cannot hold NUL, so a value with one matches
nothing and is refused as malformed (400) instead of reaching the database (an error)."""

_MEANINGS: dict[str, str] = {NO_NUL: "must not contain a NUL character"}
"""What a parameter pattern asks for, in words: error details say this, not the regex."""


def pattern_meaning(pattern: str) -> str | None:
    """The words for a pattern of this module (None for another one)."""
    return _MEANINGS.get(pattern)


def any_case(choices: Iterable[str]) -> str:
    """Pattern matching exactly ``choices`` in any letter case, e.g. ``^(?:[Ll][Oo][Ww])$``.

    JSON Schema patterns have no case-insensitive flag, and the OpenAPI document must say
    precisely what a case-insensitive choice parameter accepts.
    """
    listed = list(choices)
    spelled = (
        "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in choice)
        for choice in listed
    )
    pattern = f"^(?:{'|'.join(spelled)})$"
    _MEANINGS[pattern] = f"must be one of {', '.join(listed)} (any case)"
    return pattern


def storable(ref: str) -> bool:
    """False for a path ref with a NUL: no row can have it (404), and Postgres would refuse
    the query (a 500), so the route answers without asking."""
    return "\x00" not in ref


def one_of(name: str, given: str | None, allowed: Mapping[str, V], shown: str) -> V | None:
    """What a query parameter names, looked up by its lowercase spelling in ``allowed``
    (None when it was not given); ApiError 400 naming the ``shown`` choices otherwise."""
    if given is None:
        return None
    value = allowed.get(given.lower())
    if value is None:
        got = given if len(given) <= _MAX_SHOWN else given[:_MAX_SHOWN] + "..."
        raise ApiError(
            400, "invalid_request", f"query.{name}: must be one of {shown} (got {got!r})"
        )
    return value
