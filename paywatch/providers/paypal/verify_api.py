"""Online verification: PayPal's ``POST /v1/notifications/verify-webhook-signature``.

Used for tenants that stored ``client_id`` and ``client_secret`` (reference/webhooks.md
§2.2). A client-credentials token from ``{api_base}/v1/oauth2/token`` is cached per
(api_base, client_id, secret digest) until shortly before it expires. The request embeds the
**raw body bytes** as ``webhook_event`` instead of re-serialising the parsed JSON: PayPal
recomputes the CRC over the event it receives, and a re-serialised event (floats, key order,
whitespace) can verify as FAILURE [S].

Errors: network failure, timeout, 429 or 5xx -> ``Retryable`` (ingest answers 503, PayPal
redelivers); FAILURE, rejected credentials or another 4xx -> VerificationError.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from paywatch.errors import Retryable, VerificationError
from paywatch.providers.paypal.certs import read_capped
from paywatch.providers.paypal.signature import Transmission

DEFAULT_API_BASE = "https://api-m.paypal.com"
TOKEN_PATH = "/v1/oauth2/token"  # noqa: S105 (a URL path, not a password)
VERIFY_PATH = "/v1/notifications/verify-webhook-signature"
_MAX_RESPONSE = 64 * 1024
_TOKEN_MARGIN = timedelta(seconds=60)
_MAX_TOKENS = 256


@dataclass(frozen=True)
class ApiCredentials:
    """What one tenant secret set needs for the verify API."""

    api_base: str
    client_id: str
    client_secret: str

    def cache_key(self) -> tuple[str, str, str]:
        """Tokens are per app; a new client_secret must not reuse the old one's token."""
        digest = hashlib.sha256(self.client_secret.encode()).hexdigest()
        return (self.api_base, self.client_id, digest)


class VerifyApi:
    """Calls PayPal's verify-webhook-signature API through an injected httpx client."""

    def __init__(self, client: httpx.AsyncClient, *, max_tokens: int = _MAX_TOKENS) -> None:
        self.client = client
        self.max_tokens = max_tokens
        self._tokens: OrderedDict[tuple[str, str, str], tuple[str, datetime]] = OrderedDict()

    async def verify(
        self,
        credentials: ApiCredentials,
        transmission: Transmission,
        webhook_id: str,
        body: bytes,
        now: datetime,
    ) -> None:
        """Raise VerificationError unless PayPal answers ``verification_status: SUCCESS``."""
        content = request_body(transmission, webhook_id, body)
        url = _endpoint(credentials.api_base, VERIFY_PATH)
        for fresh in (False, True):
            token = await self._token(credentials, now, fresh=fresh)
            status, answer = await self._post(url, content, token)
            if status != 401:
                break
            # A revoked or early-expired token: drop it and ask once more with a new one.
        _check_answer(status, answer)

    async def _post(self, url: str, content: bytes, token: str) -> tuple[int, Any]:
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        return await self._call("POST", url, content=content, headers=headers)

    async def _token(self, credentials: ApiCredentials, now: datetime, *, fresh: bool) -> str:
        key = credentials.cache_key()
        hit = self._tokens.get(key)
        if hit is not None and not fresh and now < hit[1]:
            self._tokens.move_to_end(key)
            return hit[0]
        token, lifetime = await self._request_token(credentials)
        self._tokens[key] = (token, now + max(lifetime - _TOKEN_MARGIN, timedelta(0)))
        self._tokens.move_to_end(key)
        while len(self._tokens) > self.max_tokens:
            self._tokens.popitem(last=False)
        return token

    async def _request_token(self, credentials: ApiCredentials) -> tuple[str, timedelta]:
        status, answer = await self._call(
            "POST",
            _endpoint(credentials.api_base, TOKEN_PATH),
            data={"grant_type": "client_credentials"},
            headers={"accept": "application/json", "authorization": _basic(credentials)},
        )
        if status in (400, 401, 403):
            raise VerificationError("PayPal rejected the tenant's client_id/client_secret")
        _raise_for_transient(status, "PayPal OAuth token endpoint")
        token = answer.get("access_token") if isinstance(answer, dict) else None
        expires = answer.get("expires_in") if isinstance(answer, dict) else None
        if status != 200 or not isinstance(token, str) or not token:
            raise VerificationError(f"PayPal OAuth token endpoint answered HTTP {status}")
        lifetime = expires if isinstance(expires, int) and expires > 0 else 0
        return token, timedelta(seconds=min(lifetime, 86_400))

    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """Status and decoded JSON (None when not JSON) of one capped, non-redirected call."""
        try:
            async with self.client.stream(method, url, follow_redirects=False, **kwargs) as resp:
                raw = await read_capped(resp, _MAX_RESPONSE, "PayPal API")
                return resp.status_code, _json(raw)
        except httpx.TransportError as exc:
            raise Retryable(f"PayPal API unreachable: {type(exc).__name__}") from exc
        except httpx.DecodingError as exc:
            raise VerificationError("PayPal API sent an undecodable body") from exc


def request_body(transmission: Transmission, webhook_id: str, body: bytes) -> bytes:
    """The verify request as JSON bytes, with the raw body spliced in as ``webhook_event``."""
    try:
        event = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise VerificationError("body is not JSON: the PayPal API cannot verify it") from exc
    if not isinstance(event, dict):
        raise VerificationError("body is not a JSON object: the PayPal API cannot verify it")
    fields = {
        "auth_algo": transmission.auth_algo,
        "cert_url": transmission.cert_url,
        "transmission_id": transmission.transmission_id,
        "transmission_sig": transmission.signature,
        "transmission_time": transmission.transmission_time,
        "webhook_id": webhook_id,
    }
    head = json.dumps(fields, separators=(",", ":"))[:-1].encode()
    return head + b',"webhook_event":' + body + b"}"


def _endpoint(api_base: str, path: str) -> str:
    base = api_base.strip().rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise VerificationError("PayPal api_base must be an http(s) URL")
    return base + path


def _basic(credentials: ApiCredentials) -> str:
    pair = f"{credentials.client_id}:{credentials.client_secret}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _raise_for_transient(status: int, what: str) -> None:
    if status >= 500 or status == 429:
        raise Retryable(f"{what} answered HTTP {status}")


def _check_answer(status: int, answer: Any) -> None:
    _raise_for_transient(status, "PayPal verify-webhook-signature")
    if status != 200:
        raise VerificationError(f"PayPal verify-webhook-signature answered HTTP {status}")
    verdict = answer.get("verification_status") if isinstance(answer, dict) else None
    if verdict != "SUCCESS":
        raise VerificationError("PayPal verify-webhook-signature answered FAILURE")
