"""The links in customers' emails: unsubscribe and update the payment method.

These routes take no API key: the signed token in the URL is the authority (links.py),
and the tenant is the one it names (the pool is bound to it, row-level security as for any
request). ``GET /v1/email/unsubscribe`` shows a small confirmation page with a button;
``POST`` records the unsubscribe (RFC 8058 one-click: mail clients POST
``List-Unsubscribe=One-Click`` to the List-Unsubscribe URL). ``GET /v1/email/update``
makes a Stripe billing-portal session for the token's customer and answers 303 to it;
without a Stripe API key it sends the customer to the tenant's ``update_url`` with a token
the tenant verifies. A bad token is a page saying why, never which tenant or customer it
named: 400 for a string that is not of a token's shape at all (a mangled link; the shape is
published as the parameter's pattern), 403 for a well-formed token this service refuses
(altered or forged, expired, or the other link's).

The pattern is only published, not enforced by FastAPI: a mangled link still gets the
customer-facing page, not the JSON error of a bad API parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import escape

from paywatch.api.query.deps import AppPool
from paywatch.api.query.schemas import ErrorBody
from paywatch.db import TenantPool
from paywatch.email import store
from paywatch.email.links import (
    MAX_TOKEN,
    TOKEN_PATTERN,
    InvalidLink,
    LinkClaims,
    LinkSigner,
    MalformedLink,
    Purpose,
    with_token,
)
from paywatch.email.links import sign as sign_with
from paywatch.email.portal import PortalError, portal_session
from paywatch.errors import ConfigError
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox

router = APIRouter(prefix="/v1/email", tags=["email links"])

Token = Annotated[
    str,
    Query(min_length=1, max_length=MAX_TOKEN, json_schema_extra={"pattern": TOKEN_PATTERN},
          description="The signed token of the email's link: v1.<payload>.<mac>."),
]  # fmt: skip
_PAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "A small HTML page."},
    400: {
        "model": ErrorBody,
        "content": {"text/html": {}},
        "description": "A missing or too long token (JSON), or one not of a token's shape "
        "(HTML page).",
    },
    403: {
        "content": {"text/html": {}},
        "description": "A token this service did not sign (altered or forged), expired or "
        "for the other link (HTML page).",
    },
}
_STYLE = "font-family:sans-serif;max-width:32em;margin:3em auto"


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"</head><body style='{_STYLE}'><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _claims(request: Request, token: str, purpose: Purpose) -> LinkClaims | HTMLResponse:
    settings: Settings = request.app.state.settings
    try:
        return LinkSigner.from_settings(settings).verify(token, purpose, datetime.now(UTC))
    except InvalidLink as exc:
        status = 400 if isinstance(exc, MalformedLink) else 403
        return _page("This link does not work", f"<p>{escape(str(exc))}.</p>", status)


def _box(request: Request) -> SecretBox:
    box: SecretBox | None = getattr(request.app.state, "secret_box", None)
    if box is None:
        box = request.app.state.secret_box = SecretBox.from_settings(request.app.state.settings)
    return box


@router.get("/unsubscribe", responses=_PAGE,
            summary="Confirm an unsubscribe (from an email's link; no API key)")  # fmt: skip
async def unsubscribe_page(request: Request, token: Token) -> Response:
    """A page with one button that POSTs the unsubscribe (a GET changes nothing: mail
    scanners follow links)."""
    claims = _claims(request, token, "unsubscribe")
    if isinstance(claims, HTMLResponse):
        return claims
    form = (
        "<p>Stop the payment reminder emails about your account?</p>"
        f"<form method='post' action='?token={escape(token)}'>"
        "<input type='hidden' name='List-Unsubscribe' value='One-Click'>"
        "<button type='submit'>Unsubscribe</button></form>"
    )
    return _page("Unsubscribe", form)


@router.post("/unsubscribe", responses=_PAGE,
             summary="Unsubscribe (RFC 8058 one-click; no API key)")  # fmt: skip
async def unsubscribe(request: Request, pool: AppPool, token: Token) -> Response:
    """Record the unsubscribe of the token's customer (idempotent)."""
    claims = _claims(request, token, "unsubscribe")
    if isinstance(claims, HTMLResponse):
        return claims
    await store.unsubscribe(TenantPool(pool, claims.tenant), claims.tenant, claims.customer_ref)
    return _page("Unsubscribed", "<p>You will not get these emails any more.</p>")


_UPDATE: dict[int | str, dict[str, Any]] = {
    **_PAGE,
    303: {"description": "To the billing portal, or the tenant's update page."},
    404: {"content": {"text/html": {}}, "description": "No payment page is set up (HTML)."},
    502: {"content": {"text/html": {}}, "description": "Stripe did not answer (HTML)."},
}


@router.get("/update", status_code=303, responses=_UPDATE,
            summary="Go to the page where the customer updates the payment method")  # fmt: skip
async def update(request: Request, pool: AppPool, token: Token) -> Response:
    """303 to a new Stripe billing-portal session, or to the tenant's update_url."""
    claims = _claims(request, token, "update")
    if isinstance(claims, HTMLResponse):
        return claims
    bound = TenantPool(pool, claims.tenant)
    async with bound.acquire() as conn:
        rows = await conn.fetch(
            "SELECT name, value_enc FROM paywatch_stripe_portal_secrets($1)", claims.tenant
        )
        settings_row = await conn.fetchrow(
            "SELECT update_url, link_secret_enc FROM email_settings WHERE tenant = $1",
            claims.tenant,
        )
    box, settings = _box(request), request.app.state.settings
    try:
        stripe = {
            r["name"]: box.open(r["value_enc"], tenant=claims.tenant, provider="stripe",
                                name=r["name"])
            for r in rows
        }  # fmt: skip
        if "api_key" in stripe:
            back = (settings_row and settings_row["update_url"]) or settings.email_return_url
            url = await portal_session(
                stripe["api_key"], claims.customer_ref, back or settings.public_api_url,
                api_base=stripe.get("api_base"), transport=_transport(request),
            )  # fmt: skip
            return RedirectResponse(url, status_code=303)
        if settings_row is not None and settings_row["update_url"]:
            secret = store.open_link_secret(box, claims.tenant, settings_row["link_secret_enc"])
            signed = sign_with(secret.encode("utf-8"), claims)
            return RedirectResponse(with_token(settings_row["update_url"], signed), 303)
    except PortalError:
        return _page("Please try again", "<p>The payment page did not open.</p>", 502)
    except ConfigError:
        pass
    return _page("This link does not work", "<p>No payment page is set up.</p>", 404)


def _transport(request: Request) -> httpx.AsyncBaseTransport | None:
    """The Stripe transport tests inject (``app.state.stripe_transport``); None: the network."""
    return getattr(request.app.state, "stripe_transport", None)
