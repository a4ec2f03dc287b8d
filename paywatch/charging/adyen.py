"""Adyen: a merchant-initiated subscription payment with a stored card (Checkout API v71).

API: https://docs.adyen.com/api-explorer/Checkout/71/post/payments, stored tokens:
https://docs.adyen.com/online-payments/tokenization/managing-tokens (``GET
/storedPaymentMethods``), idempotency: https://docs.adyen.com/development-resources/
api-idempotency, result codes: https://docs.adyen.com/online-payments/build-your-
integration/payment-result-codes.

The token. The webhook normalizer knows the shopper (``customer_ref`` =
``shopperReference``) but no ``storedPaymentMethodId`` (notifications carry it only with
extra additionalData settings [U]). So the client asks Adyen: ``GET
{api_base}/v71/storedPaymentMethods?merchantAccount=…&shopperReference=…`` and uses the
first stored method whose ``supportedRecurringProcessingModels`` contains ``Subscription``
(when the list is given) and whose ``supportedShopperInteractions`` contains ``ContAuth``
(likewise). No shopper or no such token -> ``Rejected`` (the customer must store a card).

Charge: ``POST {api_base}/v71/payments``, headers ``X-API-Key`` and ``Idempotency-Key:
<command_id>`` (64 characters at most: a longer id is sent as its SHA-256 hex), body
``amount {value, currency}`` (minor units), ``reference`` (``invoice_ref``, the
``merchantReference`` webhooks come back with), ``merchantAccount``, ``shopperReference``,
``paymentMethod {type: scheme, storedPaymentMethodId}``, ``shopperInteraction: ContAuth``,
``recurringProcessingModel: Subscription``.

Answers: ``resultCode`` ``Authorised`` -> succeeded (``pspReference``); ``Refused`` ->
declined. Its ``decline_code`` is the ``refusalReason`` as the webhook normalizer keys it
(``reason_key``: "Not enough balance" -> ``not_enough_balance``), so a live decline carries
the same code, and classifies the same way (paywatch/providers/adyen/declines.py), as the
AUTHORISATION webhook of the same payment; the numeric ``refusalReasonCode`` (e.g. "12")
is kept in ``decline_message`` and is the code only when no reason text came.
``Cancelled`` -> declined; ``Error``, ``Pending``, ``Received`` -> ``Unavailable`` (no
outcome yet: the AUTHORISATION webhook will carry it to the saga). HTTP 422 with
``errorCode`` 704 (the same key still in progress) -> ``Unavailable``; other 400/422
(validation) -> ``Rejected``; 401, 403, 429, 5xx, timeouts -> ``Unavailable``.
A resumed try resends the same key: Adyen replays the first answer (keys live 31 days).

Default ``api_base`` is the test host; live needs the merchant's own
``https://{prefix}-checkout-live.adyenpayments.com/checkout`` set explicitly.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from paywatch.charging.base import ChargeRequest, ChargeResult, Pending, Rejected, Unavailable
from paywatch.charging.http import HttpClient, json_body, log_outcome, text
from paywatch.errors import PayloadError
from paywatch.providers.adyen.declines import network_of, reason_key, refusal
from paywatch.schemas.models import Decline

DEFAULT_API_BASE = "https://checkout-test.adyen.com"
VERSION = "v71"
MAX_KEY = 64


def idempotency_key(command_id: str) -> str:
    """The command id, or its SHA-256 hex when it is longer than Adyen accepts."""
    if len(command_id) <= MAX_KEY:
        return command_id
    return hashlib.sha256(command_id.encode("utf-8")).hexdigest()


def _allows(method: dict[str, Any], key: str, wanted: str) -> bool:
    """Absent lists allow (older tokens lack them); present ones must name ``wanted``."""
    values = method.get(key)
    return not isinstance(values, list) or wanted in values


def pick_token(body: dict[str, Any]) -> str | None:
    """The id of the first stored method usable for a ContAuth subscription payment."""
    methods = body.get("storedPaymentMethods")
    for method in methods if isinstance(methods, list) else []:
        if (
            isinstance(method, dict)
            and text(method, "id")
            and _allows(method, "supportedRecurringProcessingModels", "Subscription")
            and _allows(method, "supportedShopperInteractions", "ContAuth")
        ):
            return text(method, "id")
    return None


def classified(body: dict[str, Any], reason: str | None) -> Decline | None:
    """The refusal classified as the AUTHORISATION webhook's is (reason text, scheme
    response code and Mastercard advice code from ``additionalData`` when sent)."""
    data = body.get("additionalData")
    data = data if isinstance(data, dict) else {}
    method = body.get("paymentMethod")
    brand = text(method, "brand") if isinstance(method, dict) else None
    try:
        return refusal(reason, data, network_of(brand or text(data, "paymentMethod")))
    except PayloadError:
        return None


def outcome(body: dict[str, Any]) -> ChargeResult:
    """The ChargeResult of a /payments answer (module doc)."""
    result = text(body, "resultCode")
    ref = text(body, "pspReference")
    if result == "Authorised":
        return ChargeResult(succeeded=True, provider_ref=ref)
    if result in ("Refused", "Cancelled"):
        reason, number = text(body, "refusalReason"), text(body, "refusalReasonCode")
        return ChargeResult(
            succeeded=False,
            provider_ref=ref,
            decline_code=reason_key(reason) or number or result.lower(),
            decline_message=f"{reason} (refusalReasonCode {number})" if number else reason,
            decline=classified(body, reason),
        )
    if result in ("Pending", "Received"):
        raise Pending(f"adyen payment {ref} has resultCode {result}, no outcome yet")
    raise Unavailable(f"adyen payment {ref} has resultCode {result}, no outcome yet")


class AdyenClient(HttpClient):
    """One tenant's Adyen merchant account."""

    provider = "adyen"

    def __init__(
        self,
        *,
        api_key: str,
        merchant_account: str,
        api_base: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._merchant = merchant_account
        super().__init__(
            base_url=f"{(api_base or DEFAULT_API_BASE).rstrip('/')}/{VERSION}",
            headers={"X-API-Key": api_key},
            transport=transport,
            timeout_s=timeout_s,
            secrets=(api_key,),
        )

    async def charge(self, request: ChargeRequest, *, resumed: bool = False) -> ChargeResult:
        """Pay once with the shopper's stored card; a resumed try replays through the key."""
        if not request.customer_ref:
            raise Rejected("adyen retries need the shopperReference (none known)")
        if request.amount_minor is None or not request.currency:
            raise Rejected("adyen retries need the amount and currency (none known)")
        token = await self._token(request.customer_ref)
        body = {
            "amount": {"value": request.amount_minor, "currency": request.currency.upper()},
            "reference": request.invoice_ref,
            "merchantAccount": self._merchant,
            "shopperReference": request.customer_ref,
            "paymentMethod": {"type": "scheme", "storedPaymentMethodId": token},
            "shopperInteraction": "ContAuth",
            "recurringProcessingModel": "Subscription",
        }
        headers = {"Idempotency-Key": idempotency_key(request.command_id)}
        response = await self._send("POST", "/payments", json=body, headers=headers)
        result = outcome(self._answer(response, "payment"))
        log_outcome(self.provider, request, resumed, result)
        return result

    async def _token(self, shopper: str) -> str:
        params = {"merchantAccount": self._merchant, "shopperReference": shopper}
        response = await self._send("GET", "/storedPaymentMethods", params=params)
        token = pick_token(self._answer(response, "stored payment methods lookup"))
        if token is None:
            raise Rejected(f"adyen shopper {shopper} has no stored card for subscriptions")
        return token

    def _answer(self, response: httpx.Response, what: str) -> dict[str, Any]:
        """The JSON body of a 200, else the error mapped to Unavailable/Rejected."""
        body = json_body(response)
        status = response.status_code
        if status == 200:
            return body
        code = text(body, "errorCode") or str(body.get("errorCode") or "")
        if status in (400, 422) and code != "704":
            message = self._clean(text(body, "message"))
            raise Rejected(f"adyen refused the {what} ({code or status}): {message}")
        raise Unavailable(f"adyen {what} answered HTTP {status}" + (f" ({code})" if code else ""))
