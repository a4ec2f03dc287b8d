"""OAuth 2.0 refresh-token grant with an in-memory access-token cache and rotation tracking.

Xero and Intuit both issue access tokens from a long-lived refresh token
(``POST token_url``, HTTP Basic ``client_id:client_secret``, form
``grant_type=refresh_token&refresh_token=...``). Xero rotates the refresh token on every
refresh; Intuit sometimes does. The old one then stops working (Xero after a short grace
period [U]), so the newest must reach the tenant's secrets.

The cache follows each *chain* of refresh tokens: it is found under every refresh token it
has held, so a caller whose stored secret lags behind still gets the current access token
and learns the newest refresh token (``latest_refresh_token``) instead of replaying a
revoked one. One lock per chain: concurrent fetches refresh once.

Errors: network failure, timeout, 429, 5xx -> ``Retryable``; the OAuth server refusing the
grant or the client (400/401/403, e.g. ``invalid_grant``) -> ``VerificationError``. Messages
never carry a token or secret, only the OAuth error code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from paywatch.errors import Retryable, VerificationError

TOKEN_MARGIN_S = 60.0
"""Refresh this long before the access token's announced expiry."""
_MAX_TOKEN_RESPONSE = 64 * 1024
_MAX_CHAINS = 1024
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


@dataclass(frozen=True)
class OAuthApp:
    """One tenant's OAuth client and the refresh token it holds (repr hides secrets)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)

    def key(self, refresh_token: str | None = None) -> str:
        """Cache key: a digest, so raw secrets are not dictionary keys."""
        parts = (self.token_url, self.client_id, self.client_secret, refresh_token or "")
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass
class _Chain:
    refresh_token: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    expires_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class TokenCache:
    """Access tokens per refresh-token chain, refreshed through an injected httpx client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        what: str,
        clock: Callable[[], float] = time.monotonic,
        margin_s: float = TOKEN_MARGIN_S,
        max_chains: int = _MAX_CHAINS,
    ) -> None:
        self.http = http
        self.what = what
        self.clock = clock
        self.margin_s = margin_s
        self.max_chains = max_chains
        self._chains: OrderedDict[str, _Chain] = OrderedDict()

    async def access_token(self, app: OAuthApp, *, stale: str | None = None) -> str:
        """A valid access token; ``stale`` is one the API just refused (refresh unless replaced)."""
        chain = self._chain(app)
        async with chain.lock:
            token = chain.access_token
            if token is not None and token != stale and self.clock() < chain.expires_at:
                return token
            return await self._refresh(app, chain)

    def latest_refresh_token(self, app: OAuthApp) -> str:
        """The newest refresh token of ``app``'s chain (its own when never rotated)."""
        chain = self._chains.get(app.key(app.refresh_token))
        return chain.refresh_token if chain is not None else app.refresh_token

    def _chain(self, app: OAuthApp) -> _Chain:
        key = app.key(app.refresh_token)
        chain = self._chains.get(key)
        if chain is None:
            chain = _Chain(app.refresh_token)
            self._remember(key, chain)
        else:
            self._chains.move_to_end(key)
        return chain

    def _remember(self, key: str, chain: _Chain) -> None:
        self._chains[key] = chain
        self._chains.move_to_end(key)
        while len(self._chains) > self.max_chains:
            self._chains.popitem(last=False)

    async def _refresh(self, app: OAuthApp, chain: _Chain) -> str:
        status, answer = await self._post(app, chain.refresh_token)
        _check_token_status(status, answer, self.what)
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise VerificationError(f"{self.what} OAuth server answered without an access_token")
        lifetime = answer.get("expires_in")
        seconds = float(lifetime) if _positive_number(lifetime) else 0.0
        chain.access_token = token
        chain.expires_at = self.clock() + max(min(seconds, 86_400.0) - self.margin_s, 0.0)
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != chain.refresh_token:
            chain.refresh_token = rotated
            self._remember(app.key(rotated), chain)
        return token

    async def _post(self, app: OAuthApp, refresh_token: str) -> tuple[int, Any]:
        basic = base64.b64encode(f"{app.client_id}:{app.client_secret}".encode()).decode("ascii")
        headers = {"authorization": f"Basic {basic}", "accept": "application/json"}
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        try:
            async with self.http.stream(
                "POST", app.token_url, data=data, headers=headers, follow_redirects=False
            ) as response:
                raw = await _read_small(response, self.what)
                return response.status_code, _json_or_none(raw)
        except httpx.TransportError as exc:
            raise Retryable(f"{self.what} OAuth server unreachable: {type(exc).__name__}") from exc
        except httpx.DecodingError as exc:
            raise VerificationError(f"{self.what} OAuth server sent an undecodable body") from exc


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _check_token_status(status: int, answer: Any, what: str) -> None:
    if status == 429 or status >= 500:
        raise Retryable(f"{what} OAuth server answered HTTP {status}")
    if status == 200:
        return
    code = answer.get("error") if isinstance(answer, dict) else None
    named = f" ({code})" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
    if status in (400, 401, 403):
        raise VerificationError(
            f"{what} OAuth server refused the tenant's refresh_token or client credentials"
            f"{named}: reconnect the app and store new secrets"
        )
    raise VerificationError(f"{what} OAuth server answered HTTP {status}{named}")


async def _read_small(response: httpx.Response, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > _MAX_TOKEN_RESPONSE:
            raise VerificationError(f"{what} OAuth server sent an oversized answer")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None
