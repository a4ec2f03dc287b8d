"""A fake of the five providers' charge APIs in ONE real HTTP server on 127.0.0.1.

``async with serve_providers() as fake:`` starts uvicorn + a small Starlette app on a random
port in the test's event loop; ``fake.base`` is every provider's ``api_base`` (the real
paths do not overlap: Stripe ``/v1/…``, Braintree ``/merchants/…``, Authorize.Net
``/xml/v1/request.api``, Adyen ``/v71/…``, Checkout.com ``/payments…``), and
``fake.secrets(provider)`` the tenant secrets it accepts (anything else answers 401, or
Authorize.Net's E00007).

The ledger: ``fake.charges`` holds every charge the fake really made (provider, key =
idempotency key / order id / invoiceNumber, amount, currency, customer, subscription,
invoice, result, provider ref, decline code), ``fake.requests`` every request received.

Faithful where the clients depend on it:

* idempotency: Stripe/Adyen ``Idempotency-Key`` and Checkout.com ``Cko-Idempotency-Key``
  replay the first answer and charge nothing new; a repeat while the first is still in
  flight gets Stripe 409, Adyen 422 errorCode 704, Checkout.com 409;
* Braintree and Authorize.Net have no key: a second request IS a second charge, except
  that Braintree retries only a Past Due subscription (a paid one answers 91531) and
  Authorize.Net refuses a duplicate (same invoiceNumber and amount) within its duplicate
  window (``anet_duplicate_window_s``, 120 s as Authorize.Net's default) as reason 11;
* the lookups the clients use: Stripe invoice read, Braintree ``advanced_search_ids`` +
  ``advanced_search``, Authorize.Net customer profile / transaction list / details, Adyen
  ``storedPaymentMethods``, Checkout.com ``GET /payments/{id}``.

Scripting: register the accounts' objects (``stripe_invoice``, ``braintree_subscription``,
``anet_profile``, ``adyen_shopper``, ``checkout_customer``), ``decline(provider, subject,
code)`` for a customer/invoice/subscription, ``fail(provider, status, times)`` for 500/429/
401 answers before anything is processed, ``hang(provider, times)`` for a request that never
answers (until the server stops), ``slow(provider, seconds)`` to delay each charge's
answer *after* the charge is booked (an executor killed meanwhile has charged), and
``checkout_pending`` / ``settle_checkout`` for a 202 payment.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from paywatch.providers.money import to_minor

CREDENTIALS: dict[str, dict[str, str]] = {
    "stripe": {"api_key": "sk_test_fakeStripeKey4fd91c"},
    "braintree": {
        "merchant_id": "fakemerchant01",
        "public_key": "fakeBtPublicKey77",
        "private_key": "fakeBtPrivateKey3e9a5d",
    },
    "authorizenet": {"api_login_id": "fakeAnetLogin5", "transaction_key": "fakeAnetTxnKey8c21"},
    "adyen": {"api_key": "AQEfakeAdyenApiKey0b7e44", "merchant_account": "FakeMerchantECOM"},
    "checkout": {"secret_key": "sk_sbox_fakeCheckoutKey2d8f"},
}
"""The credentials the fake accepts (tests set them as the tenant's secrets)."""

ADYEN_REASONS = {
    "2": "Refused",
    "5": "Blocked Card",
    "6": "Expired Card",
    "12": "Not enough balance",
}
CHECKOUT_SUMMARIES = {"20051": "Insufficient Funds", "20054": "Expired Card", "20005": "Declined"}
BRAINTREE_TEXTS = {"2001": "Insufficient Funds", "2004": "Expired Card", "2046": "Declined"}
ANET_TEXTS = {"2": "This transaction has been declined.", "8": "The credit card has expired."}


@dataclass
class Charge:
    """One charge the fake made (what a provider's ledger would show)."""

    provider: str
    key: str
    amount_minor: int | None
    currency: str | None
    customer: str | None
    subscription: str | None
    invoice: str | None
    result: str
    """paid, declined or pending."""
    ref: str
    decline_code: str | None = None


@dataclass
class Received:
    """One request the fake received."""

    provider: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Fault:
    status: int | None  # None: hang
    times: int
    only: str | None


@dataclass
class Reply:
    """An answer: status, body bytes, content type."""

    status: int
    body: bytes = b""
    media_type: str = "application/json"


def _json(status: int, body: Any, *, bom: bool = False) -> Reply:
    data = json.dumps(body).encode("utf-8")
    return Reply(status, (b"\xef\xbb\xbf" + data) if bom else data)


def _xml(status: int, element: ET.Element) -> Reply:
    return Reply(
        status, ET.tostring(element, encoding="utf-8", xml_declaration=True), "application/xml"
    )


def _leaf(parent: ET.Element, tag: str, text: str | None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is None:
        child.set("nil", "true")
    else:
        child.text = text
    return child


@dataclass
class FakeProviders:
    """The fake's state and scripting; see the module doc."""

    base: str = ""
    charges: list[Charge] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    anet_duplicate_window_s: float = 120.0
    stripe_invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    bt_subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    bt_transactions: list[dict[str, Any]] = field(default_factory=list)
    anet_profiles: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    anet_transactions: list[dict[str, Any]] = field(default_factory=list)
    adyen_tokens: dict[str, str] = field(default_factory=dict)
    checkout_customers: set[str] = field(default_factory=set)
    checkout_payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    _declines: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)
    _pending: set[str] = field(default_factory=set)
    _faults: dict[str, list[_Fault]] = field(default_factory=dict)
    _delays: dict[str, float] = field(default_factory=dict)
    _idem: dict[tuple[str, str], Reply | None] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    # -- scripting -------------------------------------------------------------------------

    def secrets(self, provider: str) -> dict[str, str]:
        """The tenant secrets that reach this fake: its credentials + ``api_base``."""
        return {**CREDENTIALS[provider], "api_base": self.base}

    def stripe_invoice(
        self, invoice: str, customer: str, amount: int, currency: str = "usd", status: str = "open"
    ) -> None:
        """An invoice the Stripe fake knows (unknown ones answer 404)."""
        self.stripe_invoices[invoice] = {
            "id": invoice,
            "object": "invoice",
            "customer": customer,
            "amount_due": amount,
            "currency": currency,
            "status": status,
            "charge": None,
        }

    def braintree_subscription(
        self, sub: str, customer: str, price: str, currency: str = "USD", status: str = "Past Due"
    ) -> None:
        """A Braintree subscription (retries need it Past Due)."""
        self.bt_subscriptions[sub] = {
            "customer": customer,
            "price": price,
            "currency": currency,
            "status": status,
        }

    def anet_profile(self, customer: str, *payment_profiles: tuple[str, bool]) -> None:
        """An Authorize.Net customer profile and its (payment profile id, default) pairs."""
        self.anet_profiles[customer] = list(payment_profiles)

    def adyen_shopper(self, shopper: str, token: str) -> None:
        """An Adyen shopper with one stored card usable for ContAuth subscriptions."""
        self.adyen_tokens[shopper] = token

    def checkout_customer(self, customer: str) -> None:
        """A Checkout.com customer with a default card."""
        self.checkout_customers.add(customer)

    def decline(self, provider: str, subject: str, code: str, response: str | None = None) -> None:
        """Decline charges for a customer, invoice or subscription with a real code
        (Authorize.Net: ``response`` is the responseCode, "2" unless given)."""
        self._declines[(provider, subject)] = (code, response)

    def checkout_pending(self, customer: str) -> None:
        """Checkout.com answers 202 Pending for this customer's payments."""
        self._pending.add(customer)

    def settle_checkout(self, payment_id: str, status: str) -> None:
        """A pending Checkout.com payment reaches ``status`` (Captured, Declined...)."""
        payment = self.checkout_payments[payment_id]
        payment["status"] = status
        payment["approved"] = status in ("Authorized", "Captured")
        for charge in self.charges:
            if charge.ref == payment_id:
                charge.result = "paid" if payment["approved"] else "declined"

    def fail(self, provider: str, status: int, times: int = 1, only: str | None = None) -> None:
        """Answer the provider's next ``times`` requests (whose path contains ``only``)
        with ``status`` before processing anything."""
        self._faults.setdefault(provider, []).append(_Fault(status, times, only))

    def hang(self, provider: str, times: int = 1, only: str | None = None) -> None:
        """Never answer the provider's next ``times`` requests (until the server stops)."""
        self._faults.setdefault(provider, []).append(_Fault(None, times, only))

    def slow(self, provider: str, seconds: float) -> None:
        """Delay each charge's answer by ``seconds``, after the charge is booked."""
        self._delays[provider] = seconds

    def ledger(self, provider: str | None = None, key: str | None = None) -> list[Charge]:
        """The charges made, optionally of one provider and/or one key."""
        return [
            c
            for c in self.charges
            if (provider is None or c.provider == provider) and (key is None or c.key == key)
        ]

    def received(self, provider: str, path_contains: str = "") -> list[Received]:
        """The requests one provider received (whose path contains ``path_contains``)."""
        return [r for r in self.requests if r.provider == provider and path_contains in r.path]

    # -- serving ---------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    def _declined(self, provider: str, *subjects: str | None) -> tuple[str, str | None] | None:
        for subject in subjects:
            if subject and (provider, subject) in self._declines:
                return self._declines[(provider, subject)]
        return None

    def _fault(self, provider: str, path: str) -> _Fault | None:
        for fault in self._faults.get(provider, []):
            if fault.times > 0 and (fault.only is None or fault.only in path):
                fault.times -= 1
                return fault
        return None

    async def _delay(self, provider: str) -> None:
        if self._delays.get(provider):
            await asyncio.sleep(self._delays[provider])  # the scripted slowness of a charge

    async def _idempotent(
        self, provider: str, key: str | None, busy: Reply, make: Callable[[], Awaitable[Reply]]
    ) -> Reply:
        """Replay the first answer to ``key``; ``busy`` while the first is in flight."""
        if not key:
            return await make()
        slot = (provider, key)
        if slot in self._idem:
            stored = self._idem[slot]
            return busy if stored is None else stored
        self._idem[slot] = None
        try:
            reply = await make()
        except BaseException:
            del self._idem[slot]
            raise
        self._idem[slot] = reply
        return reply

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        provider = _provider_of(path)
        body = await request.body()
        if provider is None:
            return Response(status_code=404)
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Received(provider, request.method, path, headers, body))
        fault = self._fault(provider, path)
        if fault is not None:
            if fault.status is None:
                await self._stopping.wait()
                return Response(status_code=503)
            return Response(b'{"error": "scripted"}', fault.status, media_type="application/json")
        reply = await _HANDLERS[provider](self, request, headers, body)
        return Response(reply.body, reply.status, media_type=reply.media_type)


def _provider_of(path: str) -> str | None:
    if path.startswith("/v1/"):
        return "stripe"
    if path.startswith("/merchants/"):
        return "braintree"
    if path == "/xml/v1/request.api":
        return "authorizenet"
    if path.startswith("/v71/"):
        return "adyen"
    if path == "/payments" or path.startswith("/payments/"):
        return "checkout"
    return None


# -- Stripe ---------------------------------------------------------------------------------


async def _stripe(
    fake: FakeProviders, request: Request, headers: dict[str, str], body: bytes
) -> Reply:
    given = headers.get("authorization", "").removeprefix("Bearer ")
    if given != CREDENTIALS["stripe"]["api_key"]:
        # Stripe names the key it got (masked); the fake echoes it whole, so a client
        # that copied error text into an exception would leak it.
        error = {"type": "invalid_request_error", "message": f"Invalid API Key provided: {given}"}
        return _json(401, {"error": error})
    parts = request.url.path.split("/")  # "", v1, invoices, id[, pay]
    invoice = fake.stripe_invoices.get(parts[3]) if len(parts) >= 4 else None
    if invoice is None:
        missing = {"type": "invalid_request_error", "code": "resource_missing"}
        return _json(404, {"error": {**missing, "message": "No such invoice"}})
    if request.method == "GET":
        return _json(200, invoice)
    busy = {"type": "idempotency_error", "message": "request in progress"}
    return await fake._idempotent(
        "stripe",
        headers.get("idempotency-key"),
        _json(409, {"error": busy}),
        lambda: _stripe_pay(fake, invoice, headers.get("idempotency-key") or ""),
    )


async def _stripe_pay(fake: FakeProviders, invoice: dict[str, Any], key: str) -> Reply:
    if invoice["status"] == "paid":
        error = {"type": "invalid_request_error", "message": "Invoice is already paid"}
        return _json(400, {"error": error})
    if invoice["status"] != "open":
        error = {"type": "invalid_request_error", "code": "invoice_not_open"}
        return _json(400, {"error": {**error, "message": "This invoice can no longer be paid"}})
    ref = fake._next_id("ch_")
    declined = fake._declined("stripe", invoice["customer"], invoice["id"])
    fake.charges.append(
        Charge(
            "stripe",
            key,
            invoice["amount_due"],
            invoice["currency"],
            invoice["customer"],
            None,
            invoice["id"],
            "declined" if declined else "paid",
            ref,
            declined[0] if declined else None,
        )
    )
    await fake._delay("stripe")
    if declined:
        error = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": declined[0],
            "message": "Your card was declined.",
            "charge": ref,
        }
        return _json(402, {"error": error})
    invoice.update(status="paid", charge=ref, amount_paid=invoice["amount_due"])
    return _json(200, invoice)


# -- Braintree ------------------------------------------------------------------------------


def _bt_auth_ok(headers: dict[str, str]) -> bool:
    creds = CREDENTIALS["braintree"]
    expected = base64.b64encode(f"{creds['public_key']}:{creds['private_key']}".encode()).decode()
    return headers.get("authorization") == f"Basic {expected}"


async def _braintree(
    fake: FakeProviders, request: Request, headers: dict[str, str], body: bytes
) -> Reply:
    if not _bt_auth_ok(headers):
        return Reply(401, b"", "application/xml")
    parts = request.url.path.split("/")  # "", merchants, id, transactions[, search]
    if parts[2] != CREDENTIALS["braintree"]["merchant_id"]:
        return Reply(404, b"", "application/xml")
    doc = ET.fromstring(body)  # the fake trusts its own test clients' XML
    tail = parts[4] if len(parts) > 4 else ""
    if tail == "advanced_search_ids":
        order = doc.findtext("order-id/is")
        root = ET.Element("search-results")
        _leaf(root, "page-size", "50", type="integer")
        ids = ET.SubElement(root, "ids", type="array")
        for txn in fake.bt_transactions:
            if txn["order_id"] == order:
                _leaf(ids, "item", txn["id"])
        return _xml(200, root)
    if tail == "advanced_search":
        wanted = {(i.text or "") for i in doc.iter("item")}
        found = [t for t in fake.bt_transactions if t["id"] in wanted]
        root = ET.Element("credit-card-transactions", type="collection")
        _leaf(root, "current-page-number", "1", type="integer")
        _leaf(root, "page-size", "50", type="integer")
        _leaf(root, "total-items", str(len(found)), type="integer")
        for txn in found:
            root.append(_bt_transaction(txn))
        return _xml(200, root)
    return await _bt_sale(fake, doc)


def _bt_error(code: str, message: str) -> Reply:
    root = ET.Element("api-error-response")
    errors = ET.SubElement(ET.SubElement(root, "errors"), "transaction")
    error = ET.SubElement(ET.SubElement(errors, "errors", type="array"), "error")
    _leaf(error, "code", code)
    _leaf(error, "attribute", "subscription_id")
    _leaf(error, "message", message)
    _leaf(root, "message", message)
    return _xml(422, root)


async def _bt_sale(fake: FakeProviders, doc: ET.Element) -> Reply:
    sub_id = doc.findtext("subscription-id") or ""
    sub = fake.bt_subscriptions.get(sub_id)
    if sub is None:
        return _bt_error("91903", "Subscription ID is invalid.")  # [U] the exact code
    if sub["status"] != "Past Due":
        return _bt_error("91531", "Subscription status must be Past Due in order to retry.")
    amount = doc.findtext("amount") or sub["price"]
    declined = fake._declined("braintree", sub["customer"], sub_id)
    txn = {
        "id": fake._next_id("bt"),
        "status": "processor_declined" if declined else "submitted_for_settlement",
        "amount": amount,
        "order_id": doc.findtext("order-id"),
        "subscription_id": sub_id,
        "code": declined[0] if declined else "1000",
        "text": BRAINTREE_TEXTS.get(declined[0], "Declined") if declined else "Approved",
    }
    fake.bt_transactions.append(txn)
    fake.charges.append(
        Charge(
            "braintree",
            txn["order_id"] or "",
            to_minor(amount, sub["currency"]),
            sub["currency"],
            sub["customer"],
            sub_id,
            None,
            "declined" if declined else "paid",
            txn["id"],
            declined[0] if declined else None,
        )
    )
    await fake._delay("braintree")
    if not declined:
        sub["status"] = "Active"
        return _xml(201, _bt_transaction(txn))
    root = ET.Element("api-error-response")
    ET.SubElement(root, "errors")
    _leaf(root, "message", txn["text"])
    root.append(_bt_transaction(txn))
    return _xml(422, root)


def _bt_transaction(txn: dict[str, Any]) -> ET.Element:
    element = ET.Element("transaction")
    _leaf(element, "id", txn["id"])
    _leaf(element, "status", txn["status"])
    _leaf(element, "type", "sale")
    _leaf(element, "amount", txn["amount"], type="decimal")
    _leaf(element, "order-id", txn["order_id"])
    _leaf(element, "subscription-id", txn["subscription_id"])
    _leaf(element, "processor-response-code", txn["code"])
    _leaf(element, "processor-response-text", txn["text"])
    _leaf(element, "gateway-rejection-reason", None)
    return element


# -- Authorize.Net --------------------------------------------------------------------------

_ANET_OK = {"resultCode": "Ok", "message": [{"code": "I00001", "text": "Successful."}]}


def _anet_error(code: str, text: str) -> Reply:
    return _json(
        200,
        {"messages": {"resultCode": "Error", "message": [{"code": code, "text": text}]}},
        bom=True,
    )


async def _authorizenet(
    fake: FakeProviders, request: Request, headers: dict[str, str], body: bytes
) -> Reply:
    payload = json.loads(body)
    ((name, call),) = payload.items()
    creds = CREDENTIALS["authorizenet"]
    auth = call.get("merchantAuthentication", {})
    if auth != {"name": creds["api_login_id"], "transactionKey": creds["transaction_key"]}:
        return _anet_error(
            "E00007", "User authentication failed due to invalid authentication values."
        )
    if name == "getTransactionDetailsRequest":
        txn = next((t for t in fake.anet_transactions if t["transId"] == call["transId"]), None)
        if txn is None:
            return _anet_error("E00040", "The record cannot be found.")
        return _json(200, {"transaction": txn["details"], "messages": _ANET_OK}, bom=True)
    profile = call.get("transactionRequest", {}).get("profile", {})
    customer = call.get("customerProfileId") or profile.get("customerProfileId")
    if customer not in fake.anet_profiles:
        return _anet_error("E00040", "The record cannot be found.")
    if name == "getCustomerProfileRequest":
        profiles = [
            {
                "customerPaymentProfileId": pid,
                **({"defaultPaymentProfile": True} if default else {}),
            }
            for pid, default in fake.anet_profiles[customer]
        ]
        profile = {"customerProfileId": customer, "paymentProfiles": profiles}
        return _json(200, {"profile": profile, "messages": _ANET_OK}, bom=True)
    if name == "getTransactionListForCustomerRequest":
        mine = [t for t in fake.anet_transactions if t["profile"]["customerProfileId"] == customer]
        listed = sorted(mine, key=lambda t: t["submitTimeUTC"], reverse=True)
        result = {"totalNumInResultSet": len(listed), "messages": _ANET_OK}
        return _json(200, {"transactions": listed, **result} if listed else result, bom=True)
    return await _anet_charge(fake, call, customer)


async def _anet_charge(fake: FakeProviders, call: dict[str, Any], customer: str) -> Reply:
    txn_request = call["transactionRequest"]
    number = txn_request["order"]["invoiceNumber"]
    amount = txn_request["amount"]
    now = time.monotonic()
    if any(
        t["invoiceNumber"] == number
        and t["amount"] == amount
        and now - t["at"] < fake.anet_duplicate_window_s
        for t in fake.anet_transactions
    ):
        return _anet_transaction(None, "3", "11", "A duplicate transaction has been submitted.")
    declined = fake._declined("authorizenet", customer)
    response_code = (declined[1] or "2") if declined else "1"
    trans_id = str(60000000000 + next(fake._ids))
    status = {"1": "capturedPendingSettlement", "4": "FDSPendingReview"}.get(
        response_code, "declined"
    )
    reason = declined[0] if declined else "1"
    text = (
        ANET_TEXTS.get(reason, "This transaction has been declined.")
        if declined
        else "This transaction has been approved."
    )
    fake.anet_transactions.append(
        {
            "transId": trans_id,
            "submitTimeUTC": f"2026-01-01T00:00:{len(fake.anet_transactions):02d}Z",
            "transactionStatus": status,
            "invoiceNumber": number,
            "amount": amount,
            "at": now,
            "profile": {
                "customerProfileId": customer,
                "customerPaymentProfileId": txn_request["profile"]["paymentProfile"][
                    "paymentProfileId"
                ],
            },
            "details": {
                "transId": trans_id,
                "transactionStatus": status,
                "responseCode": int(response_code),
                "responseReasonCode": int(reason),
                "responseReasonDescription": text,
                "order": {"invoiceNumber": number},
                "authAmount": amount,
            },
        }
    )
    fake.charges.append(
        Charge(
            "authorizenet",
            number,
            to_minor(amount, "USD"),
            "USD",
            customer,
            None,
            None,
            {"1": "paid", "4": "pending"}.get(response_code, "declined"),
            trans_id,
            reason if declined else None,
        )
    )
    await fake._delay("authorizenet")
    return _anet_transaction(trans_id, response_code, reason, text)


def _anet_transaction(trans_id: str | None, code: str, reason: str, text: str) -> Reply:
    txn: dict[str, Any] = {"responseCode": code, "transId": trans_id or "0", "accountType": "Visa"}
    if code == "1":
        txn["messages"] = [{"code": "1", "description": text}]
        return _json(200, {"transactionResponse": txn, "messages": _ANET_OK}, bom=True)
    txn["errors"] = [{"errorCode": reason, "errorText": text}]
    failed = {
        "resultCode": "Error",
        "message": [{"code": "E00027", "text": "The transaction was unsuccessful."}],
    }
    return _json(200, {"transactionResponse": txn, "messages": failed}, bom=True)


# -- Adyen ----------------------------------------------------------------------------------


async def _adyen(
    fake: FakeProviders, request: Request, headers: dict[str, str], body: bytes
) -> Reply:
    creds = CREDENTIALS["adyen"]
    if headers.get("x-api-key") != creds["api_key"]:
        unauthorized = {"status": 401, "errorCode": "000", "errorType": "security"}
        return _json(401, {**unauthorized, "message": "HTTP Status Response - Unauthorized"})
    if request.url.path == "/v71/storedPaymentMethods":
        shopper = request.query_params.get("shopperReference") or ""
        token = fake.adyen_tokens.get(shopper)
        methods = [
            {
                "id": token,
                "type": "scheme",
                "brand": "visa",
                "lastFour": "1111",
                "supportedShopperInteractions": ["Ecommerce", "ContAuth"],
                "supportedRecurringProcessingModels": ["CardOnFile", "Subscription"],
            }
        ]
        listed = {"merchantAccount": creds["merchant_account"], "shopperReference": shopper}
        return _json(200, {**listed, "storedPaymentMethods": methods if token else []})
    busy = {"status": 422, "errorCode": "704", "errorType": "validation"}
    return await fake._idempotent(
        "adyen",
        headers.get("idempotency-key"),
        _json(422, {**busy, "message": "request already processed or in progress"}),
        lambda: _adyen_pay(fake, json.loads(body), headers.get("idempotency-key") or ""),
    )


async def _adyen_pay(fake: FakeProviders, payment: dict[str, Any], key: str) -> Reply:
    shopper = payment.get("shopperReference")
    token = payment.get("paymentMethod", {}).get("storedPaymentMethodId")
    if payment.get("merchantAccount") != CREDENTIALS["adyen"]["merchant_account"]:
        return _json(
            403,
            {
                "status": 403,
                "errorCode": "901",
                "message": "Invalid Merchant Account",
                "errorType": "security",
            },
        )
    if not shopper or fake.adyen_tokens.get(shopper) != token:
        return _json(
            422,
            {
                "status": 422,
                "errorCode": "800",
                "message": "Contract not found",
                "errorType": "validation",
            },
        )
    psp = fake._next_id("PSP")
    declined = fake._declined("adyen", shopper, payment.get("reference"))
    amount = payment["amount"]
    fake.charges.append(
        Charge(
            "adyen",
            key,
            amount["value"],
            amount["currency"],
            shopper,
            None,
            payment.get("reference"),
            "declined" if declined else "paid",
            psp,
            declined[0] if declined else None,
        )
    )
    await fake._delay("adyen")
    answer = {"pspReference": psp, "merchantReference": payment.get("reference"), "amount": amount}
    if declined:
        refusal = {
            "refusalReasonCode": declined[0],
            "refusalReason": ADYEN_REASONS.get(declined[0], "Refused"),
        }
        return _json(200, {**answer, "resultCode": "Refused", **refusal})
    return _json(200, {**answer, "resultCode": "Authorised"})


# -- Checkout.com ---------------------------------------------------------------------------


async def _checkout(
    fake: FakeProviders, request: Request, headers: dict[str, str], body: bytes
) -> Reply:
    if headers.get("authorization") != f"Bearer {CREDENTIALS['checkout']['secret_key']}":
        return Reply(401)
    if request.method == "GET":
        payment = fake.checkout_payments.get(request.url.path.removeprefix("/payments/"))
        return _json(200, payment) if payment else Reply(404)
    return await fake._idempotent(
        "checkout",
        headers.get("cko-idempotency-key"),
        _json(409, {"error_type": "request_in_progress"}),
        lambda: _checkout_pay(fake, json.loads(body), headers.get("cko-idempotency-key") or ""),
    )


async def _checkout_pay(fake: FakeProviders, payment: dict[str, Any], key: str) -> Reply:
    customer = payment.get("source", {}).get("id")
    if customer not in fake.checkout_customers:
        invalid = {"request_id": fake._next_id("req_"), "error_type": "request_invalid"}
        return _json(422, {**invalid, "error_codes": ["customer_not_found"]})
    pay_id = fake._next_id("pay_")
    declined = fake._declined("checkout", customer, payment.get("reference"))
    pending = customer in fake._pending
    status = "Pending" if pending else ("Declined" if declined else "Authorized")
    record = {
        "id": pay_id,
        "status": status,
        "approved": not declined and not pending,
        "amount": payment.get("amount"),
        "currency": payment.get("currency"),
        "reference": payment.get("reference"),
        "customer": {"id": customer},
    }
    if declined:
        code = declined[0]
        record.update(response_code=code, response_summary=CHECKOUT_SUMMARIES.get(code, "Declined"))
    fake.checkout_payments[pay_id] = record
    result = "pending" if pending else ("declined" if declined else "paid")
    fake.charges.append(
        Charge(
            "checkout",
            key,
            payment.get("amount"),
            payment.get("currency"),
            customer,
            None,
            payment.get("reference"),
            result,
            pay_id,
            declined[0] if declined else None,
        )
    )
    await fake._delay("checkout")
    if pending:
        return _json(
            202, {"id": pay_id, "status": "Pending", "reference": payment.get("reference")}
        )
    return _json(201, record)


Handler = Callable[[FakeProviders, Request, dict[str, str], bytes], Awaitable[Reply]]
_HANDLERS: dict[str, Handler] = {
    "stripe": _stripe,
    "braintree": _braintree,
    "authorizenet": _authorizenet,
    "adyen": _adyen,
    "checkout": _checkout,
}


@asynccontextmanager
async def serve_providers(*, start_timeout_s: float = 30.0) -> AsyncIterator[FakeProviders]:
    """Run the fake on a free 127.0.0.1 port in this event loop; stop it after."""
    fake = FakeProviders()
    app = Starlette(routes=[Route("/{path:path}", fake.handle, methods=["GET", "POST"])])
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    config.timeout_graceful_shutdown = 5
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    fake.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + start_timeout_s
    while not server.started:  # a deadline-bound wait for the listener
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("the fake provider server did not start")
        await asyncio.sleep(0.02)
    try:
        yield fake
    finally:
        fake._stopping.set()
        server.should_exit = True
        await task
        sock.close()
