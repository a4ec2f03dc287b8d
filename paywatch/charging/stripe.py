"""Stripe: retry an open invoice's payment with ``POST /v1/invoices/{id}/pay``.

API: https://docs.stripe.com/api/invoices/pay (errors: https://docs.stripe.com/api/errors,
idempotency: https://docs.stripe.com/api/idempotent_requests).

Request: ``POST {api_base}/v1/invoices/{invoice_ref}/pay``, form body ``off_session=true``
(a merchant-initiated retry; Stripe's default, sent to say so), ``Authorization: Bearer
<api_key>``, ``Idempotency-Key: <command_id>``. The invoice is charged with its customer's
default payment method, as Stripe's own smart retries do.

Answers:

* 200, invoice ``status: paid`` -> succeeded; ``provider_ref`` is the invoice's ``charge``
  or ``payment_intent`` (or, API 2025-03-31.basil on, ``payments.data[].payment``) when
  present. 200 with another status (an asynchronous method still processing) -> the
  invoice is read again; still not paid -> ``Unavailable``.
* 402 (``card_error``) -> declined: ``decline_code`` is ``error.decline_code``, else
  ``error.code`` (``card_declined``, ``expired_card``, ``authentication_required``...);
  ``decline`` classifies the error (with its advice and network codes) as the webhook
  normalizer classifies a PaymentIntent's ``last_payment_error``.
* 400 ``invalid_request_error``: the invoice cannot be paid *now*. Stripe refuses to pay a
  paid invoice [U: message "Invoice is already paid", no documented code], so the invoice
  is read (``GET /v1/invoices/{id}``): ``paid`` is a success for us (an earlier try or the
  customer paid it); otherwise ``Rejected`` (void, uncollectible, draft...).
  ``idempotency_error`` (the key reused with other parameters) -> ``Rejected``.
* 404 -> ``Rejected`` (no such invoice on this account).
* 401, 403, 409 (the same key is in flight), 429, 5xx, timeouts, connection errors ->
  ``Unavailable``.

Resumed tries need nothing special: Stripe stores the first answer to a key for at least
24 hours and replays it, so the same ``Idempotency-Key`` never charges twice.

Live money: Stripe's test and live modes share ``https://api.stripe.com`` and the key
decides. With the default ``api_base`` only test keys (``sk_test_``/``rk_test_``) are
accepted; a live key needs ``api_base`` set explicitly (a deliberate choice, never a default).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from paywatch.charging.base import ChargeRequest, ChargeResult, Pending, Rejected, Unavailable
from paywatch.charging.http import HttpClient, json_body, log_outcome, obj, text
from paywatch.errors import PayloadError
from paywatch.providers.declines import to_decline
from paywatch.providers.stripe.declines import explain_stripe
from paywatch.schemas.models import Decline

DEFAULT_API_BASE = "https://api.stripe.com"
_LIVE_PREFIXES = ("sk_live_", "rk_live_")


def _ref(value: Any) -> str | None:
    """An id given as a string or as an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def classified(error: dict[str, Any], message: str | None) -> Decline | None:
    """The card_error classified as paywatch/providers/stripe/normalize.py classifies a
    PaymentIntent's ``last_payment_error`` (None when a field does not fit the model)."""
    card = obj(obj(error, "payment_method"), "card")
    network = text(obj(card, "networks"), "preferred") or text(card, "brand")
    verdict = explain_stripe(
        code=text(error, "code"),
        decline_code=text(error, "decline_code"),
        advice_code=text(error, "advice_code"),
        network=network,
        network_advice_code=text(error, "network_advice_code"),
        network_decline_code=text(error, "network_decline_code"),
    )
    try:
        return to_decline(
            verdict,
            code=text(error, "decline_code") or text(error, "code"),
            message=message,
            network=network,
            network_code=text(error, "network_decline_code"),
            advice_code=text(error, "network_advice_code") or text(error, "advice_code"),
        )
    except PayloadError:
        return None


def invoice_payment_ref(invoice: dict[str, Any]) -> str | None:
    """The charge or PaymentIntent that paid the invoice, in either API shape."""
    legacy = _ref(invoice.get("charge")) or _ref(invoice.get("payment_intent"))
    if legacy:
        return legacy
    entries = obj(invoice, "payments").get("data")
    for entry in entries if isinstance(entries, list) else []:
        payment = obj(entry, "payment")
        ref = _ref(payment.get("charge")) or _ref(payment.get("payment_intent"))
        if ref:
            return ref
    return None


class StripeClient(HttpClient):
    """One tenant's Stripe account."""

    provider = "stripe"

    def __init__(
        self,
        *,
        api_key: str,
        api_base: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if api_base is None and api_key.startswith(_LIVE_PREFIXES):
            raise Rejected("stripe: a live api_key needs an explicit api_base (no live default)")
        super().__init__(
            base_url=(api_base or DEFAULT_API_BASE).rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
            timeout_s=timeout_s,
            secrets=(api_key,),
        )

    async def charge(self, request: ChargeRequest, *, resumed: bool = False) -> ChargeResult:
        """Pay the invoice once; a resumed try replays through the same Idempotency-Key."""
        path = f"/v1/invoices/{quote(request.invoice_ref, safe='')}"
        response = await self._send(
            "POST",
            f"{path}/pay",
            data={"off_session": "true"},
            headers={"Idempotency-Key": request.command_id},
        )
        result = await self._outcome(path, response)
        log_outcome(self.provider, request, resumed, result)
        return result

    async def _outcome(self, path: str, response: httpx.Response) -> ChargeResult:
        status = response.status_code
        body = json_body(response)
        if status == 200:
            return await self._paid(path, body)
        error = obj(body, "error")
        if status == 402:
            message = self._clean(text(error, "message"))
            return ChargeResult(
                succeeded=False,
                provider_ref=_ref(error.get("charge")) or _ref(error.get("payment_intent")),
                decline_code=text(error, "decline_code") or text(error, "code"),
                decline_message=message,
                decline=classified(error, message),
            )
        if status == 400 and error.get("type") != "idempotency_error":
            invoice = await self._invoice(path)
            if invoice.get("status") == "paid":
                return ChargeResult(succeeded=True, provider_ref=invoice_payment_ref(invoice))
        if status in (400, 404):
            what = text(error, "code") or text(error, "type") or str(status)
            message = self._clean(error.get("message")) or "no message"
            raise Rejected(f"stripe refused the payment ({what}): {message}")
        raise Unavailable(f"stripe answered HTTP {status}")

    async def _paid(self, path: str, invoice: dict[str, Any]) -> ChargeResult:
        if invoice.get("status") != "paid":
            # Asynchronous methods leave the invoice open while the payment processes; a
            # replayed 200 is the old snapshot, so the invoice itself is the truth.
            invoice = await self._invoice(path)
            if invoice.get("status") != "paid":
                raise Pending(f"stripe invoice is {invoice.get('status')!r}, not paid yet")
        return ChargeResult(succeeded=True, provider_ref=invoice_payment_ref(invoice))

    async def _invoice(self, path: str) -> dict[str, Any]:
        """The invoice as Stripe has it now (a failed read is no proof of anything)."""
        response = await self._send("GET", path)
        if response.status_code != 200:
            raise Unavailable(f"stripe invoice read answered HTTP {response.status_code}")
        return json_body(response)
