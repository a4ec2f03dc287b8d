"""The fetch step of thin webhooks: GET one resource with the tenant's OAuth app (I/O).

``ThinApi.fetch(ref, secrets)`` tries the tenant's secret sets newest first (those with
``client_id``, ``client_secret`` and ``refresh_token``), gets an access token from the
``TokenCache`` and GETs the resource. Outcomes:

* 200 -> ``FetchResult`` with the exact body (refused with CardDataError when it holds a
  card number: fetched documents go to an immutable topic);
* 401 -> one forced token refresh and one retry; 401 again -> VerificationError;
* 403 or a redirect -> VerificationError (wrong credentials, scopes or ``api_base``);
* 429 -> ``RateLimited`` (a Retryable with ``retry_after``); 5xx, timeout, network ->
  Retryable;
* 404, the provider's own "gone" answer (``gone``) -> ``FetchResult`` with status 404, and
  any other status -> ``FetchResult`` with that status: recorded, never retried;
* a body over ``max_bytes`` -> PayloadError.

Rotation: whenever the OAuth server has issued a refresh token newer than the one in the
secret set used, ``FetchResult.rotated_secrets`` is ``{"refresh_token": newest}`` and the
optional ``on_rotated`` callback is awaited with it *before* the resource request (so a
failing request cannot lose it). Both repeat until the caller's secrets catch up: storing
must be idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import quote

import httpx

from paywatch.errors import CardDataError, PayloadError, Retryable, VerificationError
from paywatch.providers.base import Secrets
from paywatch.providers.pan import contains_pan, json_unescaped
from paywatch.providers.thin.oauth import OAuthApp, TokenCache
from paywatch.providers.thin.refs import NOT_FETCHED, FetchResult, RateLimited, ResourceRef


def _holds_pan(body: bytes) -> bool:
    """The raw-byte scan, and again with JSON escapes resolved (``\u0034...`` hides digits)."""
    return contains_pan(body) or (b"\\" in body and contains_pan(json_unescaped(body)))


MAX_DOCUMENT_BYTES = 1024 * 1024
"""Largest fetched document kept (an invoice with hundreds of lines is far below)."""
OAUTH_SECRETS = ("client_id", "client_secret", "refresh_token")

OnRotated = Callable[[dict[str, str]], Awaitable[None]]
Response = tuple[int, str, bytes, str | None]


class ThinApi:
    """Base of the Xero and QuickBooks API clients; subclasses name URLs and headers."""

    provider: str = ""
    default_api_base: str = ""
    default_token_url: str = ""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token_url: str | None = None,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.http = http
        self.token_url = token_url or self.default_token_url
        self.max_bytes = max_bytes
        self.tokens = TokenCache(http, what=self.provider, clock=clock)

    def resource_url(self, api_base: str, ref: ResourceRef) -> str:
        """The GET URL of ``ref`` under ``api_base`` (no trailing slash)."""
        raise NotImplementedError

    def resource_headers(self, ref: ResourceRef) -> dict[str, str]:
        """Extra request headers for ``ref`` (e.g. the Xero tenant)."""
        return {}

    def gone(self, status: int, body: bytes) -> bool:
        """True when a non-404 answer still means the resource no longer exists."""
        return False

    async def fetch(
        self, ref: ResourceRef, secrets: Secrets, *, on_rotated: OnRotated | None = None
    ) -> FetchResult:
        """Fetch ``ref`` with the first secret set that works (see the module docstring)."""
        if ref.provider != self.provider:
            raise ValueError(f"a {ref.provider} reference given to the {self.provider} API")
        if not ref.fetch:
            return FetchResult(b"", NOT_FETCHED, "")
        sets = [s for s in secrets if all(s.get(name) for name in OAUTH_SECRETS)]
        if not sets:
            raise VerificationError(
                f"no {self.provider} OAuth credentials (client_id, client_secret, "
                "refresh_token) configured for this tenant"
            )
        failures: list[VerificationError] = []
        for secret_set in sets:
            try:
                return await self._fetch_with(ref, secret_set, on_rotated)
            except VerificationError as exc:
                failures.append(exc)
        raise failures[0]

    async def _fetch_with(
        self, ref: ResourceRef, secret_set: Mapping[str, str], on_rotated: OnRotated | None
    ) -> FetchResult:
        app = OAuthApp(
            self.token_url,
            secret_set["client_id"],
            secret_set["client_secret"],
            secret_set["refresh_token"],
        )
        url = self.resource_url(_base(secret_set.get("api_base") or self.default_api_base), ref)
        token = await self.tokens.access_token(app)
        rotated = await self._rotation(app, on_rotated)
        status, content_type, body, retry_after = await self._get(url, token, ref)
        if status == 401:
            token = await self.tokens.access_token(app, stale=token)
            rotated = await self._rotation(app, on_rotated)
            status, content_type, body, retry_after = await self._get(url, token, ref)
            if status == 401:
                raise VerificationError(
                    f"{self.provider} API refused a freshly refreshed access token (HTTP 401)"
                )
        status = self._outcome(status, body, retry_after)
        if status == 200 and _holds_pan(body):
            raise CardDataError(f"fetched {self.provider} {ref.kind} contains a card number")
        return FetchResult(body, status, content_type, rotated)

    async def _rotation(self, app: OAuthApp, on_rotated: OnRotated | None) -> dict[str, str] | None:
        latest = self.tokens.latest_refresh_token(app)
        if latest == app.refresh_token:
            return None
        if on_rotated is not None:
            await on_rotated({"refresh_token": latest})
        return {"refresh_token": latest}

    async def _get(self, url: str, token: str, ref: ResourceRef) -> Response:
        headers = {
            "authorization": f"Bearer {token}",
            "accept": "application/json",
            **self.resource_headers(ref),
        }
        try:
            async with self.http.stream(
                "GET", url, headers=headers, follow_redirects=False
            ) as response:
                body = await self._read_capped(response)
                content_type = response.headers.get("content-type", "")
                return response.status_code, content_type, body, response.headers.get("retry-after")
        except httpx.TransportError as exc:
            raise Retryable(f"{self.provider} API unreachable: {type(exc).__name__}") from exc
        except httpx.DecodingError as exc:
            raise PayloadError(f"{self.provider} API sent an undecodable body") from exc

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise PayloadError(f"{self.provider} API answer is larger than {self.max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadError(
                    f"{self.provider} API answer is larger than {self.max_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _outcome(self, status: int, body: bytes, retry_after: str | None) -> int:
        if status == 429:
            raise RateLimited(f"{self.provider} API rate limit (HTTP 429)", _seconds(retry_after))
        if status >= 500:
            raise Retryable(f"{self.provider} API answered HTTP {status}")
        if status == 403:
            raise VerificationError(
                f"{self.provider} API refused access (HTTP 403): check the app's scopes and "
                "that the organisation is still connected"
            )
        if 300 <= status < 400:
            raise VerificationError(
                f"{self.provider} API redirected (HTTP {status}): check api_base"
            )
        if status != 200 and self.gone(status, body):
            return 404
        return status


def _base(api_base: str) -> str:
    base = api_base.strip().rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise VerificationError("api_base must be an http(s) URL")
    return base


def _seconds(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def segment(value: str) -> str:
    """One URL path segment, percent-encoded (ids come from signed but untrusted bodies)."""
    return quote(value, safe="")
