"""GET /webhooks/{provider}/{tenant}: provider verification handshakes.

The webhooks themselves (``POST``) are received by :mod:`paywatch.api.ingest.webhooks`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from paywatch.api.ingest.context import IngestContext
from paywatch.api.ingest.webhooks import RETRY_AFTER_S, tenant_secrets
from paywatch.errors import Retryable, UnknownProvider, VerificationError
from paywatch.providers.registry import get_provider

router = APIRouter()


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


@router.get("/webhooks/{provider}/{tenant}", response_model=None)
async def handshake(provider: str, tenant: str, request: Request) -> Response:
    """Provider verification handshakes (Braintree `?bt_challenge=`); 405 for the others."""
    ctx: IngestContext = request.app.state.ingest
    try:
        module = get_provider(provider, ctx.providers)
    except UnknownProvider as exc:
        return _error(404, "unknown_provider", str(exc))
    if not module.answers_challenge:
        return _error(405, "method_not_allowed", f"{provider} webhooks are POSTed")
    challenge = request.query_params.get("bt_challenge")
    if not challenge:
        return _error(400, "malformed", "missing bt_challenge query parameter")
    try:
        secrets = await tenant_secrets(ctx, tenant, module.name)
    except Retryable:
        reply = _error(503, "unavailable", "the tenant could not be looked up right now; retry")
        reply.headers["Retry-After"] = str(RETRY_AFTER_S)
        return reply
    if secrets is None:
        return _error(404, "unknown_tenant", f"no tenant {tenant!r}")
    try:
        return PlainTextResponse(module.challenge_response(challenge, secrets))
    except VerificationError as exc:
        return _error(401 if not secrets else 400, "bad_challenge", str(exc))
