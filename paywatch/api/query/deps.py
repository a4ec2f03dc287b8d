"""Dependencies of the query API: the pool, the authenticated caller and role checks.

The tenant of every request comes from its API key, never from the URL or query.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar

import asyncpg
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from paywatch.api.ratelimit import TokenBuckets, retry_after
from paywatch.tenants.api_keys import hash_api_key

Role = Literal["analyst", "operator", "admin"]
# admin ⊇ operator ⊇ analyst.
_RANK: dict[str, int] = {"analyst": 0, "operator": 1, "admin": 2}

_KEY_LOOKUP = "SELECT tenant, role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"

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


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's tenant and role."""

    tenant: str
    role: Role

    def has_role(self, role: Role) -> bool:
        """True when this caller's role includes ``role``."""
        return _RANK[self.role] >= _RANK[role]


def get_pool(request: Request) -> asyncpg.Pool:
    """The asyncpg pool opened by the app's lifespan."""
    return request.app.state.pool


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(detail: str, *, invalid_token: bool) -> ApiError:
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


async def get_caller(request: Request, pool: Pool, credentials: Credentials) -> Principal:
    """Authenticate the bearer API key by its SHA-256 hash; 401 when missing, unknown or revoked.

    Then the key's tenant pays one token of its rate limit (429 with ``Retry-After`` when
    none is left): before the route's own queries, so a tenant's flood costs one key lookup
    per request and nothing more.
    """
    if credentials is None:
        raise _unauthorized(
            "missing or malformed Authorization header: expected 'Bearer <api key>'",
            invalid_token=False,
        )
    row = await pool.fetchrow(_KEY_LOOKUP, hash_api_key(credentials.credentials))
    if row is None:
        raise _unauthorized("unknown or revoked API key", invalid_token=True)
    limits: TokenBuckets | None = getattr(request.app.state, "rate_limits", None)
    if limits is not None:
        wait = limits.take(row["tenant"])
        if wait:
            seconds = retry_after(wait)
            raise ApiError(
                429,
                "rate_limited",
                f"this tenant is over its API rate limit; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
    return Principal(tenant=row["tenant"], role=row["role"])


Caller = Annotated[Principal, Depends(get_caller)]


def require_role(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency factory: the caller, or 403 when its role does not include ``role``."""

    async def check(caller: Caller) -> Principal:
        if not caller.has_role(role):
            raise ApiError(403, "forbidden", f"this endpoint needs the {role} role")
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
