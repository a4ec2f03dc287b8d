"""Authorize.Net: charge a customer profile's default payment profile (JSON API).

API: https://developer.authorize.net/api/reference/index.html ("Charge a customer
profile", "Get Customer Profile", "Get Customer Profile Transaction List", "Get
Transaction Details"); response codes: https://developer.authorize.net/api/reference/
responseCodes.html.

Every call is ``POST {api_base}/xml/v1/request.api`` with one JSON object named after the
request, ``merchantAuthentication {name: api_login_id, transactionKey}`` first (the JSON
API mirrors the XML schema, so key order matters). Answers are HTTP 200 even for errors
(``messages.resultCode: "Error"``) and may start with a UTF-8 BOM.

1. ``getCustomerProfileRequest`` (``customerProfileId`` = ``customer_ref``): the payment
   profile with ``defaultPaymentProfile: true``, else the first; none -> ``Rejected``.
2. ``resumed`` only, before step 1: ``getTransactionListForCustomerRequest`` for the
   customer profile (all its payment profiles), newest first. A transaction whose
   ``invoiceNumber`` is this command's gives the outcome instead of a new charge:
   ``settledSuccessfully``, ``capturedPendingSettlement``, ``authorizedPendingCapture``
   succeeded; under review -> ``Unavailable``; anything else (``declined``, ``voided``,
   ``failedReview``...) declined, its reason read with ``getTransactionDetailsRequest``.
3. ``createTransactionRequest``: ``authCaptureTransaction``, ``amount`` (decimal, the
   account's currency), ``profile {customerProfileId, paymentProfile {paymentProfileId}}``,
   ``order {invoiceNumber}``. ``invoiceNumber`` (20 characters at most) is the first 20
   hex digits of SHA-256 of the command id: the same on every try, so step 2 finds it,
   and within Authorize.Net's duplicate window (2 minutes) a repeat is refused as reason
   11 anyway.

``transactionResponse.responseCode``:

* 1 approved -> succeeded (``provider_ref`` the ``transId``);
* 2 declined -> declined, ``decline_code`` = ``errors[0].errorCode`` (the response reason
  code, e.g. "2" general decline, "45" AVS/CVV), classified by
  paywatch/providers/authorizenet/declines.py like the webhooks' ``responseReasonCode``;
* 3 error -> transient processor errors (reasons 19-23, 25, 26, 57-63, 120-122, "try again
  later") and 11 (a duplicate of a try still in the window: the resumed try finds it) are
  ``Unavailable``; card-data errors the decline table knows (6, 7, 8 invalid number or
  expiry, 17/28 card type not accepted, 41 fraud...) are *declines* (the customer must
  act; dead-lettering would hide them from the saga); anything else is ``Rejected``;
* 4 held for review -> ``Unavailable``. Choice: the charge exists and may still be
  approved, so calling it declined would let the saga charge again (a double charge once
  the review passes), and calling it paid is premature. The next (resumed) try finds the
  transaction and answers once the review ended; meanwhile the webhook
  ``fraud.approved``/``fraud.declined`` also reaches the saga.

Without a transaction response: E00007/E00008 (credentials, inactive account), E00001,
E00053, E00104 (server busy/maintenance) -> ``Unavailable``; E00040 (profile not found)
and others -> ``Rejected``. HTTP 429/5xx, timeouts -> ``Unavailable``.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import httpx

from paywatch.charging.base import ChargeRequest, ChargeResult, Pending, Rejected, Unavailable
from paywatch.charging.http import HttpClient, log_outcome, obj
from paywatch.errors import PayloadError
from paywatch.providers.authorizenet.declines import REASON_CODES, decline
from paywatch.providers.money import exponent
from paywatch.schemas.models import Decline

DEFAULT_API_BASE = "https://apitest.authorize.net"
PATH = "/xml/v1/request.api"
TRANSIENT_REASONS = frozenset("11 19 20 21 22 23 25 26 57 58 59 60 61 62 63 120 121 122".split())
"""responseCode 3 reasons that a later try can cure (11: duplicate inside the window)."""
TRANSIENT_MESSAGES = frozenset({"E00001", "E00007", "E00008", "E00053", "E00104"})
SUCCEEDED = frozenset(
    {"settledSuccessfully", "capturedPendingSettlement", "authorizedPendingCapture"}
)
PENDING = frozenset({"FDSPendingReview", "FDSAuthorizedPendingReview", "underReview"})


def invoice_number(command_id: str) -> str:
    """The deterministic 20-character ``order.invoiceNumber`` of every try of a command."""
    return hashlib.sha256(command_id.encode("utf-8")).hexdigest()[:20]


def decimal_amount(amount_minor: int, currency: str) -> str:
    """Minor units as the decimal string of ``amount`` ("1234", "USD" -> "12.34")."""
    digits = exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-digits):.{digits}f}"


def _list(mapping: Any, key: str) -> list[dict[str, Any]]:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _str(mapping: dict[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def message_code(body: dict[str, Any]) -> str | None:
    """The first ``messages.message[].code`` (E00007...)."""
    messages = _list(obj(body, "messages"), "message")
    return _str(messages[0], "code") if messages else None


def declined(
    ref: str | None, reason: str | None, response_code: str | None, text: str | None
) -> ChargeResult:
    """A decline, classified by its response reason code as the webhooks' are."""
    try:
        classified: Decline | None = decline(reason, int(response_code or 2), text, False)
    except (PayloadError, ValueError):
        classified = None
    return ChargeResult(
        False, provider_ref=ref, decline_code=reason, decline_message=text, decline=classified
    )


def transaction_outcome(txn: dict[str, Any]) -> ChargeResult:
    """The ChargeResult of a ``transactionResponse`` (module doc for codes 3 and 4)."""
    code = _str(txn, "responseCode")
    ref = _str(txn, "transId")
    errors = _list(txn, "errors")
    reason = _str(errors[0], "errorCode") if errors else None
    text = _str(errors[0], "errorText") if errors else None
    if code == "1":
        return ChargeResult(succeeded=True, provider_ref=ref)
    if code == "4":
        raise Pending(f"authorizenet transaction {ref} is held for review")
    if code == "3" and reason in TRANSIENT_REASONS:
        raise Unavailable(f"authorizenet processing error {reason}, try later")
    if code == "2" or (code == "3" and REASON_CODES.lookup(reason) is not None):
        return declined(ref, reason, code, text)
    raise Rejected(f"authorizenet refused the transaction (response {code}, reason {reason})")


class AuthorizeNetClient(HttpClient):
    """One tenant's Authorize.Net merchant."""

    provider = "authorizenet"

    def __init__(
        self,
        *,
        api_login_id: str,
        transaction_key: str,
        api_base: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._auth = {"name": api_login_id, "transactionKey": transaction_key}
        super().__init__(
            base_url=(api_base or DEFAULT_API_BASE).rstrip("/"),
            headers={"Content-Type": "application/json"},
            transport=transport,
            timeout_s=timeout_s,
            secrets=(api_login_id, transaction_key),
        )

    async def charge(self, request: ChargeRequest, *, resumed: bool = False) -> ChargeResult:
        """Charge the default payment profile once; a resumed try finds an earlier one."""
        if not request.customer_ref:
            raise Rejected("authorizenet retries need the customer profile id (none known)")
        if request.amount_minor is None or not request.currency:
            raise Rejected("authorizenet retries need the amount (none known)")
        amount = decimal_amount(request.amount_minor, request.currency)
        number = invoice_number(request.command_id)
        found = await self._find(request.customer_ref, number) if resumed else None
        if found is None:
            profile = await self._payment_profile(request.customer_ref)
            result = await self._create(request.customer_ref, profile, amount, number)
        else:
            result = found
        log_outcome(self.provider, request, resumed, result, found=found is not None)
        return result

    async def _payment_profile(self, customer: str) -> str:
        body = await self._call("getCustomerProfileRequest", {"customerProfileId": customer})
        self._check(body, "getCustomerProfile")
        profiles = _list(obj(body, "profile"), "paymentProfiles")
        chosen = next((p for p in profiles if p.get("defaultPaymentProfile") is True), None)
        chosen = chosen or (profiles[0] if profiles else None)
        ident = _str(chosen, "customerPaymentProfileId") if chosen else None
        if ident is None:
            raise Rejected(f"authorizenet customer profile {customer} has no payment profile")
        return ident

    async def _create(self, customer: str, profile: str, amount: str, number: str) -> ChargeResult:
        txn_request = {
            "transactionType": "authCaptureTransaction",
            "amount": amount,
            "profile": {
                "customerProfileId": customer,
                "paymentProfile": {"paymentProfileId": profile},
            },
            "order": {"invoiceNumber": number},
        }
        body = await self._call(
            "createTransactionRequest", {"refId": number, "transactionRequest": txn_request}
        )
        txn = obj(body, "transactionResponse")
        if _str(txn, "responseCode"):
            return transaction_outcome(txn)
        self._check(body, "createTransaction")
        raise Unavailable("authorizenet answered without a transaction response")

    async def _find(self, customer: str, number: str) -> ChargeResult | None:
        """The earlier try's outcome, searched across all the customer's payment profiles
        (the default one may have changed since)."""
        body = await self._call(
            "getTransactionListForCustomerRequest",
            {
                "customerProfileId": customer,
                "sorting": {"orderBy": "submitTimeUTC", "orderDescending": True},
                "paging": {"limit": 100, "offset": 1},
            },
        )
        if message_code(body) == "E00040":  # "record not found": no transactions yet
            return None
        self._check(body, "getTransactionListForCustomer")
        mine = [t for t in _list(body, "transactions") if t.get("invoiceNumber") == number]
        if not mine:
            return None
        chosen = next((t for t in mine if t.get("transactionStatus") in SUCCEEDED), mine[0])
        return await self._found(chosen)

    async def _found(self, txn: dict[str, Any]) -> ChargeResult:
        status, ref = _str(txn, "transactionStatus"), _str(txn, "transId")
        if status in SUCCEEDED:
            return ChargeResult(succeeded=True, provider_ref=ref)
        if status in PENDING:
            raise Unavailable(f"authorizenet transaction {ref} is {status}")
        body = await self._call("getTransactionDetailsRequest", {"transId": ref})
        self._check(body, "getTransactionDetails")
        details = obj(body, "transaction")
        return declined(
            ref,
            _str(details, "responseReasonCode") or status,
            _str(details, "responseCode"),
            _str(details, "responseReasonDescription"),
        )

    def _check(self, body: dict[str, Any], what: str) -> None:
        """Raise for an ``Error`` result: Unavailable when a later try can cure it."""
        if _str(obj(body, "messages"), "resultCode") == "Ok":
            return
        code = message_code(body)
        messages = _list(obj(body, "messages"), "message")
        text = self._clean(_str(messages[0], "text") if messages else None)
        if code in TRANSIENT_MESSAGES:
            raise Unavailable(f"authorizenet {what} failed ({code}): {text}")
        raise Rejected(f"authorizenet {what} refused ({code}): {text}")

    async def _call(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        payload = {name: {"merchantAuthentication": self._auth, **fields}}
        response = await self._send("POST", PATH, content=json.dumps(payload).encode())
        if response.status_code != 200:
            raise Unavailable(f"authorizenet answered HTTP {response.status_code}")
        try:
            body = json.loads(response.content.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise Unavailable("authorizenet answered something that is not JSON") from exc
        return body if isinstance(body, dict) else {}
