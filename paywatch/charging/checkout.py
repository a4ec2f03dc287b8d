"""Checkout.com: a merchant-initiated recurring payment from the customer's default card.

API: https://api-reference.checkout.com/#operation/requestAPaymentOrPayout (``POST
/payments``), ``GET /payments/{id}`` (get payment details), idempotency:
https://www.checkout.com/docs/developer-resources/api/idempotency.

Charge: ``POST {api_base}/payments``, ``Authorization: Bearer <secret_key>``,
``Cko-Idempotency-Key: <command_id>``, body ``source {type: customer, id: customer_ref}``
(Checkout.com charges the customer's default instrument), ``amount`` (minor units),
``currency``, ``reference`` (``invoice_ref``, which webhooks come back with),
``payment_type: Recurring``, ``merchant_initiated: true``, ``capture: true``, and
``processing_channel_id`` when the tenant set that optional secret (accounts on
Checkout.com's current platform need it).

Answers:

* 201 ``approved: true`` -> succeeded (``provider_ref`` the payment id ``pay_…``);
  ``approved: false`` -> declined with ``response_code`` (e.g. "20051") and
  ``response_summary``, classified by paywatch/providers/checkout/declines.py.
* 202 pending. Choice: no outcome is known yet, so the client reads the payment (``GET
  /payments/{id}``): ``Authorized``/``Captured``/``Paid`` (also partially captured) ->
  succeeded, ``Declined``/``Canceled``/``Expired`` -> declined, anything else
  (``Pending``) -> ``Unavailable``. A later try resends the same key, Checkout.com
  replays the 202 with the same payment id, and the read tells the current state: the
  command converges on the one payment, never a second.
* 422 (``request_invalid``: unknown customer, no default instrument...) -> ``Rejected``
  naming the ``error_codes``; 400, 404 -> ``Rejected``.
* 401, 403, 409 (the key in flight), 429, 5xx, timeouts -> ``Unavailable``.

Default ``api_base`` is the sandbox (``https://api.sandbox.checkout.com``); accounts with a
unique ``{prefix}.api.checkout.com`` set it explicitly.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from paywatch.charging.base import ChargeRequest, ChargeResult, Pending, Rejected, Unavailable
from paywatch.charging.http import HttpClient, json_body, log_outcome
from paywatch.errors import PayloadError
from paywatch.providers.checkout import declines
from paywatch.providers.checkout.normalize import network
from paywatch.schemas.models import Decline

DEFAULT_API_BASE = "https://api.sandbox.checkout.com"
PAID = frozenset({"Authorized", "Captured", "Paid", "Partially Captured"})
FAILED = frozenset({"Declined", "Canceled", "Expired"})


def _str(mapping: dict[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def declined(body: dict[str, Any], ref: str | None) -> ChargeResult:
    """A declined payment, classified as paywatch/providers/checkout/declines.py classifies
    a ``payment_declined`` webhook's data (the same fields: response and partner codes)."""
    try:
        classified: Decline | None = declines.decline(body, network(body))
    except PayloadError:
        classified = None
    status = _str(body, "status")
    return ChargeResult(
        succeeded=False,
        provider_ref=ref,
        decline_code=_str(body, "response_code") or (status.lower() if status else None),
        decline_message=_str(body, "response_summary"),
        decline=classified,
    )


def outcome(body: dict[str, Any]) -> ChargeResult:
    """The ChargeResult of a 201 payment answer."""
    ref = _str(body, "id")
    if body.get("approved") is True:
        return ChargeResult(succeeded=True, provider_ref=ref)
    return declined(body, ref)


class CheckoutClient(HttpClient):
    """One tenant's Checkout.com account."""

    provider = "checkout"

    def __init__(
        self,
        *,
        secret_key: str,
        processing_channel_id: str | None = None,
        api_base: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._channel = processing_channel_id
        super().__init__(
            base_url=(api_base or DEFAULT_API_BASE).rstrip("/"),
            headers={"Authorization": f"Bearer {secret_key}"},
            transport=transport,
            timeout_s=timeout_s,
            secrets=(secret_key,),
        )

    async def charge(self, request: ChargeRequest, *, resumed: bool = False) -> ChargeResult:
        """Pay once from the customer's default card; a resumed try replays via the key."""
        if not request.customer_ref:
            raise Rejected("checkout retries need the customer id (none known)")
        if request.amount_minor is None or not request.currency:
            raise Rejected("checkout retries need the amount and currency (none known)")
        body: dict[str, Any] = {
            "source": {"type": "customer", "id": request.customer_ref},
            "amount": request.amount_minor,
            "currency": request.currency.upper(),
            "reference": request.invoice_ref,
            "payment_type": "Recurring",
            "merchant_initiated": True,
            "capture": True,
        }
        if self._channel:
            body["processing_channel_id"] = self._channel
        headers = {"Cko-Idempotency-Key": request.command_id}
        response = await self._send("POST", "/payments", json=body, headers=headers)
        result = await self._outcome(response)
        log_outcome(self.provider, request, resumed, result)
        return result

    async def _outcome(self, response: httpx.Response) -> ChargeResult:
        status, body = response.status_code, json_body(response)
        if status == 201:
            return outcome(body)
        if status == 202:
            return await self._pending(_str(body, "id"))
        if status in (400, 404, 422):
            codes = body.get("error_codes")
            named = (
                ", ".join(c for c in codes if isinstance(c, str)) if isinstance(codes, list) else ""
            )
            cleaned = self._clean(named) or "no error codes"
            raise Rejected(f"checkout refused the payment (HTTP {status}): {cleaned}")
        raise Unavailable(f"checkout answered HTTP {status}")

    async def _pending(self, payment_id: str | None) -> ChargeResult:
        if payment_id is None:
            raise Unavailable("checkout answered 202 without a payment id")
        response = await self._send("GET", f"/payments/{quote(payment_id, safe='')}")
        if response.status_code != 200:
            raise Unavailable(f"checkout payment read answered HTTP {response.status_code}")
        details = json_body(response)
        state = _str(details, "status")
        if state in PAID:
            return ChargeResult(succeeded=True, provider_ref=payment_id)
        if state in FAILED:
            return declined(details, payment_id)
        raise Pending(f"checkout payment {payment_id} is {state or 'pending'}")
