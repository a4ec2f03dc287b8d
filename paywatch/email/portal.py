"""Stripe's hosted page for a new payment method: a billing-portal session, made on click.

A portal session's URL works for a short while only, so the email links to paywatch
(``/v1/email/update?token=``) and the session is made when the customer clicks:
``POST {api_base}/v1/billing_portal/sessions`` with ``customer`` and ``return_url``, the
tenant's Stripe ``api_key`` as bearer (tenant secrets ``stripe``/``api_key`` and
``api_base``, the latter for sandboxes and tests). httpx with an injectable transport.
"""

from __future__ import annotations

import httpx

from paywatch.errors import Retryable

STRIPE_API = "https://api.stripe.com"
TIMEOUT_S = 10.0


class PortalError(Retryable):
    """Stripe did not give a portal session (the customer may try the link again)."""


async def portal_session(
    api_key: str,
    customer_ref: str,
    return_url: str,
    *,
    api_base: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """The URL of a new billing-portal session of the Stripe customer."""
    url = f"{(api_base or STRIPE_API).rstrip('/')}/v1/billing_portal/sessions"
    try:
        async with httpx.AsyncClient(
            transport=transport, timeout=TIMEOUT_S, trust_env=False
        ) as client:
            answer = await client.post(
                url,
                data={"customer": customer_ref, "return_url": return_url},
                headers={"Authorization": f"Bearer {api_key}"},
            )
    except httpx.HTTPError as exc:
        raise PortalError(f"Stripe unreachable: {type(exc).__name__}") from exc
    if answer.status_code != 200:
        raise PortalError(f"Stripe answered {answer.status_code} to the portal session")
    try:
        made = answer.json()["url"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PortalError("Stripe's portal session answer has no url") from exc
    if not isinstance(made, str) or not made.startswith("https://"):
        raise PortalError("Stripe's portal session url is not https")
    return made
