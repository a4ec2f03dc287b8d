"""What every provider client shares: the HTTP client, transport errors, outcome log, JSON.

``HttpClient`` owns one ``httpx.AsyncClient`` per tenant client, sends through ``_send``
(a timeout or connection error is ``Unavailable``: nothing is known to have been charged,
so the executor tries again with the same key), scrubs the tenant's credentials out of
provider text (``_clean``) and closes the pool (``aclose``). What an HTTP status means
stays in each provider module: the providers disagree on it.

``log_outcome`` writes the one log line per charge under the provider module's logger;
``json_body``, ``obj`` and ``text`` read a JSON answer without trusting its shape.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from paywatch.charging.base import ChargeRequest, ChargeResult, Unavailable

_PACKAGE = "paywatch.charging"


class HttpClient:
    """The base of every provider client: one connection pool and its error mapping."""

    provider: str

    def __init__(
        self,
        *,
        base_url: str,
        transport: httpx.AsyncBaseTransport | None,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        auth: httpx.Auth | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._secrets = secrets
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, auth=auth, transport=transport, timeout=timeout_s
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The provider's answer, whatever its status; ``Unavailable`` when none came."""
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise Unavailable(f"{self.provider} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"{self.provider} unreachable: {type(exc).__name__}") from exc

    def _clean(self, message: object) -> str | None:
        """A provider's text without any credential in it, cut to 200 characters."""
        if not isinstance(message, str) or not message:
            return None
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message[:200]


def log_outcome(
    provider: str,
    request: ChargeRequest,
    resumed: bool,
    result: ChargeResult,
    *,
    found: bool | None = None,
) -> None:
    """Log a charge's outcome: ids and outcome only, never a credential; ``found`` for the
    providers that look an earlier try up instead of replaying an idempotency key."""
    # The provider's own logger and a fixed template per provider, so log filters and
    # grouping by message stay as they were when each client logged for itself.
    template = provider + " charge %s (%s/%s, resumed=%s"
    args: list[object] = [request.command_id, request.tenant, request.invoice_ref, resumed]
    if found is not None:
        template += ", found=%s"
        args.append(found)
    args.append("paid" if result.succeeded else f"declined {result.decline_code}")
    logging.getLogger(f"{_PACKAGE}.{provider}").info(template + "): %s", *args, stacklevel=2)


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; ``{}`` for anything else (an error page, an empty body)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def obj(mapping: Any, key: str) -> dict[str, Any]:
    """A nested JSON object, ``{}`` when absent or of another type."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, dict) else {}


def text(mapping: dict[str, Any], key: str) -> str | None:
    """A non-empty string field, else None."""
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None
