"""Braintree: retry a past-due subscription's charge through the XML gateway API.

API: the gateway's XML API as braintree_python speaks it (``Subscription.retry_charge``,
``TransactionGateway.create`` / ``search``), https://developer.paypal.com/braintree/docs/
reference/request/subscription/retry-charge/python and .../transaction/search/python.

Charge: ``POST {api_base}/merchants/{merchant_id}/transactions``, Basic auth
``public_key:private_key``, ``X-ApiVersion: 6``, ``Accept``/``Content-Type:
application/xml``, body::

    <transaction><type>sale</type><subscription-id>S</subscription-id><amount>12.34</amount>
      <order-id>pw-…</order-id>
      <options><submit-for-settlement>true</submit-for-settlement></options></transaction>

``subscription_ref`` is required (``Rejected`` without it). ``amount`` is the minor amount
in the currency's exponent; without an amount it is left out and Braintree charges the
subscription's balance, as ``retry_charge`` does. Braintree has no currency field: the
merchant account's currency applies (as the webhook normalizer assumes).

Answers: 201 ``<transaction>`` with status ``authorized``, ``submitted_for_settlement``,
``settling``, ``settlement_pending`` or ``settled`` -> succeeded (``provider_ref`` the
transaction id). A decline is HTTP 422 ``<api-error-response>`` holding the
``<transaction>`` (status ``processor_declined``, ``gateway_rejected``, ``failed``,
``settlement_declined``) -> declined with ``processor-response-code`` (else the
``gateway-rejection-reason``) and its text; ``decline`` classifies it (response type,
gateway rejection, network codes) as paywatch/providers/braintree/declines.py classifies
a webhook's transaction. A 422 without a transaction is a validation
error (e.g. 91531 "subscription status must be Past Due": it was paid or canceled in the
meantime) -> ``Rejected``. 401, 403, 404 (an unknown ``merchant_id``: a credentials fix),
426, 429, 5xx, timeouts -> ``Unavailable``.

Braintree has no idempotency header, so every try carries a deterministic ``order-id``
(``pw-`` + 32 hex digits of SHA-256 of the command id), and a ``resumed`` try first asks
``POST …/transactions/advanced_search_ids`` for ``<order-id><is>…</is></order-id>``; when
ids come back it fetches them (``POST …/transactions/advanced_search``) and answers with
that transaction's outcome instead of charging again [U: Braintree's search index can lag
a freshly created transaction by seconds; the executor's claim lease is far longer].

XML is built with ``xml.etree`` and parsed DTD-free (defusedxml is not installed): a
document with a ``<!DOCTYPE``/``<!ENTITY`` declaration is refused before parsing, like
paywatch/providers/braintree/xmldoc.py does for webhooks.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from paywatch.charging.base import ChargeRequest, ChargeResult, Rejected, Unavailable
from paywatch.charging.http import HttpClient, log_outcome
from paywatch.errors import PayloadError
from paywatch.providers.braintree.declines import Facts, decline
from paywatch.providers.money import exponent
from paywatch.schemas.models import Decline

DEFAULT_API_BASE = "https://api.sandbox.braintreegateway.com"
SUCCEEDED = frozenset(
    {"authorized", "submitted_for_settlement", "settling", "settlement_pending", "settled"}
)
DECLINED = frozenset(
    {"processor_declined", "gateway_rejected", "failed", "settlement_declined", "voided"}
)
"""``voided``: only a found earlier try can be voided; no money moved, so it is a decline."""
_BRANDS = {"visa": "visa", "mastercard": "mastercard", "american express": "amex"}
_DECLARATION = re.compile(rb"<!\s*[A-Za-z]")
_MAX_XML = 1024 * 1024


def order_id(command_id: str) -> str:
    """The deterministic ``order-id`` of every try of a command."""
    return "pw-" + hashlib.sha256(command_id.encode("utf-8")).hexdigest()[:32]


def decimal_amount(amount_minor: int, currency: str) -> str:
    """Minor units as the decimal string Braintree wants ("1234", "USD" -> "12.34")."""
    digits = exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-digits):.{digits}f}"


def _xml(root: str, fields: dict[str, Any]) -> bytes:
    element = ET.Element(root)
    _fill(element, fields)
    document: bytes = ET.tostring(element, encoding="utf-8", xml_declaration=True)
    return document


def _fill(parent: ET.Element, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        child = ET.SubElement(parent, name)
        if isinstance(value, dict):
            _fill(child, value)
        elif isinstance(value, list):
            child.set("type", "array")
            for item in value:
                ET.SubElement(child, "item").text = str(item)
        else:
            child.text = str(value)


def parse(xml: bytes) -> ET.Element:
    """A gateway answer as an element tree; ``Unavailable`` when it is not one."""
    if len(xml) > _MAX_XML or b"\x00" in xml or _DECLARATION.search(xml):
        raise Unavailable("braintree answered an unusable XML document")
    parser = ET.XMLParser(encoding="utf-8")  # noqa: S314 - DTD-free UTF-8 only (module doc)
    try:
        parser.feed(xml)
        return parser.close()
    except ET.ParseError as exc:
        raise Unavailable("braintree answered malformed XML") from exc


def _leaf(txn: ET.Element, path: str) -> str | None:
    return (txn.findtext(path) or "").strip() or None


def classified(txn: ET.Element) -> Decline | None:
    """The decline classified as the webhook normalizer classifies a transaction's."""
    card_type = (_leaf(txn, "credit-card/card-type") or "").lower()
    facts = Facts(
        code=_leaf(txn, "processor-response-code"),
        response_type=_leaf(txn, "processor-response-type"),
        gateway_rejection=_leaf(txn, "gateway-rejection-reason"),
        network=_BRANDS.get(card_type, card_type or None),
        advice_code=_leaf(txn, "merchant-advice-code"),
        network_code=_leaf(txn, "network-response-code"),
        text=_leaf(txn, "processor-response-text"),
    )
    try:
        return decline(facts)
    except PayloadError:
        return None


def outcome(txn: ET.Element) -> ChargeResult:
    """The ChargeResult of one ``<transaction>``."""
    status = (txn.findtext("status") or "").strip()
    ref = (txn.findtext("id") or "").strip() or None
    if status in SUCCEEDED:
        return ChargeResult(succeeded=True, provider_ref=ref)
    if status in DECLINED:
        code = (txn.findtext("processor-response-code") or "").strip()
        rejection = (txn.findtext("gateway-rejection-reason") or "").strip()
        text = (txn.findtext("processor-response-text") or "").strip()
        return ChargeResult(
            succeeded=False,
            provider_ref=ref,
            decline_code=code or rejection or status,
            decline_message=text[:200] or None,
            decline=classified(txn),
        )
    raise Unavailable(f"braintree transaction {ref} is {status or 'without status'}, no outcome")


class BraintreeClient(HttpClient):
    """One tenant's Braintree merchant."""

    provider = "braintree"

    def __init__(
        self,
        *,
        merchant_id: str,
        public_key: str,
        private_key: str,
        api_base: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        base = (api_base or DEFAULT_API_BASE).rstrip("/")
        super().__init__(
            base_url=f"{base}/merchants/{quote(merchant_id, safe='')}",
            auth=httpx.BasicAuth(public_key, private_key),
            headers={
                "X-ApiVersion": "6",
                "Accept": "application/xml",
                "Content-Type": "application/xml",
                "User-Agent": "paywatch",
            },
            transport=transport,
            timeout_s=timeout_s,
        )

    async def charge(self, request: ChargeRequest, *, resumed: bool = False) -> ChargeResult:
        """Charge the subscription once; a resumed try returns an earlier charge if found."""
        if not request.subscription_ref:
            raise Rejected("braintree retries need the invoice's subscription (none known)")
        order = order_id(request.command_id)
        found = await self._find(order) if resumed else None
        result = found or await self._sale(request, order)
        log_outcome(self.provider, request, resumed, result, found=found is not None)
        return result

    async def _sale(self, request: ChargeRequest, order: str) -> ChargeResult:
        fields: dict[str, Any] = {"type": "sale", "subscription-id": request.subscription_ref}
        if request.amount_minor is not None and request.currency:
            fields["amount"] = decimal_amount(request.amount_minor, request.currency)
        fields["order-id"] = order
        fields["options"] = {"submit-for-settlement": "true"}
        response = await self._send("POST", "/transactions", content=_xml("transaction", fields))
        if response.status_code not in (200, 201, 422):
            raise Unavailable(f"braintree answered HTTP {response.status_code}")
        root = parse(response.content)
        txn = root if root.tag == "transaction" else root.find("transaction")
        if txn is not None:
            return outcome(txn)
        message = (root.findtext("message") or "").strip()[:200]
        codes = sorted({(e.findtext("code") or "").strip() for e in root.iter("error")} - {""})
        raise Rejected(f"braintree refused the sale ({', '.join(codes) or 'no code'}): {message}")

    async def _find(self, order: str) -> ChargeResult | None:
        """The outcome of an earlier transaction with this order id, None when none exists."""
        criteria: dict[str, Any] = {"order-id": {"is": order}}
        ids = await self._search("/transactions/advanced_search_ids", criteria)
        found = [(i.text or "").strip() for i in ids.iter("item")]
        if not any(found):
            return None
        page = await self._search(
            "/transactions/advanced_search", {"ids": [i for i in found if i], **criteria}
        )
        results = [outcome(t) for t in page.iter("transaction")]
        if not results:
            raise Unavailable("braintree search listed ids it then did not return")
        return next((r for r in results if r.succeeded), results[-1])

    async def _search(self, path: str, criteria: dict[str, Any]) -> ET.Element:
        response = await self._send("POST", path, content=_xml("search", criteria))
        if response.status_code != 200:
            raise Unavailable(f"braintree search answered HTTP {response.status_code}")
        return parse(response.content)
