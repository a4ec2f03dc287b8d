"""A generated history as each customer's own payment provider would deliver it.

``assign`` gives every customer of a ``population.Population`` one provider, drawn from a
weighted mix by a hash of the seed and the customer (so adding customers moves nobody);
``render`` writes each event in that provider's webhook format, the shapes its normalizer in
``paywatch.providers`` reads (the fixtures in tests/fixtures are the reference). ``Wire.expected``
is the canonical event the worker will derive from the body: the population's event except
for what the provider's format cannot say, listed here so nothing is lost silently:

* decline codes are the provider's own (Stripe names a stolen card's fraud ``fraudulent``,
  Braintree ``2014``, Adyen ``issuer_suspected_fraud``, ...), chosen so that the provider's
  classifier gives the population's category;
* Braintree has no invoices: its invoice ref is ``<subscription>:<billing period start>``
  (for every event of that customer, so an episode still closes) and its cancellation carries
  the subscription's last charge (amount, currency); its successes carry no attempt;
* Adyen and Authorize.Net name no subscription and no attempt; Checkout.com's successes no
  attempt; Authorize.Net has no currency field, so it only bills customers in the currency
  the worker is configured with (``authorizenet_currency``), the others draw again without it.

Events a provider has no webhook for stay generic webhooks of the same customer: card updates
(PAYMENT_METHOD_UPDATED) everywhere but generic; INVOICE_UNCOLLECTIBLE and
SUBSCRIPTION_CANCELED on Adyen, Checkout.com and Authorize.Net (whose ARB cancellation names
the subscription, not the invoice); INVOICE_UNCOLLECTIBLE on Braintree. Bodies are unsigned
(Braintree's ``bt_signature`` reads ``unsigned``, Adyen items have no ``hmacSignature``): the
caller signs what it POSTs. Pure and deterministic: ids derive from the webhook ids.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from paywatch.risk import population as pop
from paywatch.schemas.models import EventType, PaymentEvent

PROVIDERS = ("stripe", "braintree", "adyen", "checkout", "authorizenet", "generic")
UNSIGNED = "unsigned"  # bt_signature of a Braintree body nobody signed (a --via raw record)
JSON, FORM = "application/json", "application/x-www-form-urlencoded"
_FAILED, _PAID = EventType.PAYMENT_FAILED, EventType.PAYMENT_SUCCEEDED
_NAMESPACE = uuid.UUID("1b0e7d0c-3f5e-4d2a-9a43-64656d6f7772")  # demo-only ids, never events'

# population decline code -> the provider's code and text for it (same category there).
_CODES: dict[str, dict[str, tuple[str, str]]] = {
    "stripe": {"stolen_card": ("fraudulent", "Your card was declined.")},
    "braintree": {
        "insufficient_funds": ("2001", "Insufficient Funds"),
        "do_not_honor": ("2000", "Do Not Honor"),
        "invalid_account": ("2007", "No Account"),
        "incorrect_cvc": ("2010", "Card Issuer Declined CVV"),
        "stolen_card": ("2014", "Processor Declined - Fraud Suspected"),
        "expired_card": ("2004", "Expired Card"),
    },
    "adyen": {
        "insufficient_funds": ("not_enough_balance", "Not enough balance"),
        "do_not_honor": ("refused", "Refused"),
        "invalid_account": ("invalid_card_number", "Invalid Card Number"),
        "incorrect_cvc": ("cvc_declined", "CVC Declined"),
        "stolen_card": ("issuer_suspected_fraud", "Issuer Suspected Fraud"),
        "expired_card": ("expired_card", "Expired Card"),
    },
    "checkout": {
        "insufficient_funds": ("20051", "Insufficient Funds"),
        "do_not_honor": ("20005", "Declined - Do Not Honour"),
        "invalid_account": ("20014", "Invalid card number"),
        "incorrect_cvc": ("20082", "Invalid CVV"),
        "stolen_card": ("20059", "Suspected fraud"),
        "expired_card": ("20054", "Expired card"),
    },
    "authorizenet": {
        "insufficient_funds": ("2", "This transaction has been declined."),
        "do_not_honor": ("2", "This transaction has been declined."),
        "invalid_account": ("4", "This transaction has been declined."),
        "incorrect_cvc": ("44", "This transaction has been declined."),
        "stolen_card": ("250", "This transaction has been declined."),
        "expired_card": ("8", "The credit card has expired."),
    },
}
_MAC_TEXT = {"01": "New account information available", "03": "Do not try again"}


@dataclass(frozen=True)
class Wire:
    """One event as its customer's provider delivers it, and what it must normalize into."""

    provider: str
    msg_id: str
    body: bytes
    content_type: str
    expected: PaymentEvent
    """The canonical fields the provider's normalizer gives back (event id and provider
    aside): the population's event with the provider's limits applied (module doc)."""


def parse_mix(text: str) -> dict[str, int]:
    """``stripe:5,adyen:2,generic`` -> {name: weight}; ValueError naming what is wrong."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition(":")
        if name not in PROVIDERS:
            raise ValueError(f"unknown provider {name!r} (choose from {', '.join(PROVIDERS)})")
        if name in mix:
            raise ValueError(f"provider {name} is listed twice")
        if sep and not (weight.isascii() and weight.isdigit() and 0 < int(weight) <= 1000):
            raise ValueError(f"weight of {name} must be a whole number 1-1000, not {weight!r}")
        mix[name] = int(weight) if sep else 1
    return mix


def assign(
    people: Sequence[pop.Traits], mix: Mapping[str, int], seed: int, anet_currency: str = "USD"
) -> dict[str, str]:
    """Customer ref -> provider, drawn from ``mix`` by a hash of seed and customer."""
    return {p.customer_ref: _pick(p, mix, seed, anet_currency) for p in people}


def _pick(person: pop.Traits, mix: Mapping[str, int], seed: int, anet_currency: str) -> str:
    able = [
        (name, mix[name])
        for name in PROVIDERS  # a fixed order: the same mix written otherwise draws the same
        if name in mix and (name != "authorizenet" or person.currency == anet_currency)
    ]
    if not able:
        return "generic"  # only Authorize.Net listed, and it cannot bill this currency
    digest = blake2b(f"{seed}/{person.customer_ref}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64 * sum(w for _, w in able)
    for name, weight in able:
        point -= weight
        if point < 0:
            return name
    return able[-1][0]


def render(population: pop.Population, assignment: Mapping[str, str]) -> Iterator[Wire]:
    """Every event of ``population`` in time order, in its customer's provider's format."""
    opened: dict[str, PaymentEvent] = {}  # invoice -> its first event (billing period, amount)
    for msg_id, event in zip(population.webhook_ids, population.events, strict=True):
        first = opened.setdefault(event.invoice_ref, event)
        yield wire(assignment.get(event.customer_ref or "", "generic"), event, msg_id, first)


def wire(provider: str, event: PaymentEvent, msg_id: str, first: PaymentEvent) -> Wire:
    """One event for ``provider`` (``first``: its invoice's first event), else generic."""
    if provider == "braintree":
        event = event.model_copy(update={"invoice_ref": _period_ref(event, first)})
    build = _BUILDERS.get(provider, {}).get(event.type)
    if build is None:
        return Wire("generic", msg_id, pop.generic_body(event, msg_id), JSON, event)
    body, changes = build(event, msg_id, first)
    expected = event.model_copy(update={**changes, **_native_decline(provider, event)})
    return Wire(provider, msg_id, body, FORM if provider == "braintree" else JSON, expected)


def _period_ref(event: PaymentEvent, first: PaymentEvent) -> str:
    if event.invoice_ref.startswith("sub:"):
        return event.invoice_ref
    return f"{event.subscription_ref}:{first.occurred_at.date().isoformat()}"


def _native_decline(provider: str, event: PaymentEvent) -> dict[str, Any]:
    if event.decline is None or event.decline.code is None:
        return {}
    code, _ = _native(provider, event.decline.code)
    return {"decline": event.decline.model_copy(update={"code": code})}


def _native(provider: str, code: str) -> tuple[str, str]:
    return _CODES.get(provider, {}).get(code, (code, "Your card was declined."))


def _id(msg_id: str, what: str, size: int = 13) -> str:
    """A deterministic lower-case base32 id (``size`` bytes of hash) for one webhook."""
    digest = blake2b(f"{what}/{msg_id}".encode(), digest_size=size).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()


def _json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _card(event: PaymentEvent) -> tuple[str, int, int]:
    """(network, expiry month, expiry year) of the event's card."""
    method = event.payment_method
    if method is None or not (method.brand and method.exp_month and method.exp_year):
        raise ValueError(f"event {event.event_id} has no card to render")
    return method.brand, method.exp_month, method.exp_year


def _decimal(minor: int | None) -> str:
    return f"{(minor or 0) // 100}.{(minor or 0) % 100:02d}"


Built = tuple[bytes, dict[str, Any]]
"""A body and the expected event's differences from the population's (module doc)."""


def _stripe_invoice(event: PaymentEvent, msg_id: str, first: PaymentEvent) -> Built:
    kind = {_FAILED: "invoice.payment_failed", _PAID: "invoice.paid"}.get(
        event.type, "invoice.marked_uncollectible"
    )
    status = {_FAILED: "open", _PAID: "paid"}.get(event.type, "uncollectible")
    invoice: dict[str, Any] = {"id": event.invoice_ref, "object": "invoice"}
    invoice |= {"customer": event.customer_ref, "subscription": event.subscription_ref}
    invoice |= {"billing_reason": "subscription_cycle", "status": status}
    invoice |= {"collection_method": "charge_automatically", "next_payment_attempt": None}
    if event.amount_minor is not None and event.currency:
        paid = event.amount_minor if event.type is _PAID else 0
        invoice |= {"amount_due": event.amount_minor, "amount_paid": paid}
        invoice |= {"currency": event.currency.lower()}
    if event.attempt is not None:
        invoice |= {"attempt_count": event.attempt, "attempted": True}
    if event.type is _FAILED:
        invoice["charge"] = _stripe_charge(event, msg_id)
    return _stripe_event(kind, invoice, event, msg_id), {}


def _stripe_charge(event: PaymentEvent, msg_id: str) -> dict[str, Any]:
    """The failed charge, expanded on the invoice (API 2024-06-20) so the decline travels."""
    decline = event.decline
    if decline is None or not decline.code or not event.currency:
        raise ValueError(f"event {event.event_id} has no decline code or currency to render")
    network, month, year = _card(event)
    outcome: dict[str, str | None] = {"network_status": "declined_by_network"}
    outcome["type"] = "issuer_declined"
    outcome |= {"reason": _native("stripe", decline.code)[0], "seller_message": decline.message}
    outcome |= {"network_decline_code": decline.network_code}
    if decline.advice_code:
        outcome["network_advice_code"] = decline.advice_code
    card: dict[str, Any] = {"brand": network, "network": network, "last4": "4242"}
    card |= {"exp_month": month, "exp_year": year}
    return {
        "id": f"ch_{_id(msg_id, 'charge')}", "object": "charge", "amount": event.amount_minor,
        "currency": event.currency.lower(), "customer": event.customer_ref,
        "invoice": event.invoice_ref, "failure_code": "card_declined",
        "failure_message": decline.message, "outcome": outcome, "paid": False, "status": "failed",
        "payment_method_details": {"type": "card", "card": card},
    }  # fmt: skip


def _stripe_canceled(event: PaymentEvent, msg_id: str, first: PaymentEvent) -> Built:
    ended = int(event.occurred_at.timestamp())
    sub: dict[str, Any] = {"id": event.subscription_ref, "object": "subscription"}
    sub["customer"] = event.customer_ref
    sub |= {"status": "canceled", "canceled_at": ended, "ended_at": ended}
    if not event.invoice_ref.startswith("sub:"):
        sub["latest_invoice"] = event.invoice_ref
    return _stripe_event("customer.subscription.deleted", sub, event, msg_id), {}


def _stripe_event(kind: str, obj: dict[str, Any], event: PaymentEvent, msg_id: str) -> bytes:
    return _json({
        "id": f"evt_{_id(msg_id, 'event')}", "object": "event", "api_version": "2024-06-20",
        "created": int(event.occurred_at.timestamp()), "data": {"object": obj},
        "livemode": False, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "type": kind,
    })  # fmt: skip


def _braintree(event: PaymentEvent, msg_id: str, first: PaymentEvent) -> Built:
    kind = {
        _FAILED: "subscription_charged_unsuccessfully",
        _PAID: "subscription_charged_successfully",
    }
    status = {_FAILED: "Past Due", _PAID: "Active"}.get(event.type, "Canceled")
    charged = event if event.type in kind else first  # a cancellation lists the last charge
    sub = _leaf("id", event.subscription_ref) + _leaf("status", status)
    sub += _leaf("failure-count", event.attempt if event.type is _FAILED else 0, "integer")
    sub += _period(first)
    sub += f'<transactions type="array">{_braintree_txn(charged, msg_id, first)}</transactions>'
    xml = (
        f'<notification><timestamp type="datetime">{_iso(event.occurred_at)}</timestamp>'
        f"<kind>{kind.get(event.type, 'subscription_canceled')}</kind>"
        f"<subject><subscription>{sub}</subscription></subject></notification>"
    )
    payload = base64.encodebytes(xml.encode()).decode("ascii")
    body = urlencode({"bt_signature": UNSIGNED, "bt_payload": payload}).encode("ascii")
    if event.type in kind:
        return body, {"attempt": event.attempt if event.type is _FAILED else None}
    return body, {"amount_minor": first.amount_minor, "currency": first.currency}


def _braintree_txn(event: PaymentEvent, msg_id: str, first: PaymentEvent) -> str:
    network, month, year = _card(event)
    failed, decline = event.type is _FAILED, event.decline
    code, text = _native("braintree", decline.code or "") if decline else ("1000", "Approved")
    return "<transaction>" + "".join((
        _leaf("id", _id(msg_id, "transaction", 5)), _leaf("type", "sale"),
        _leaf("status", "processor_declined" if failed else "submitted_for_settlement"),
        _leaf("amount", _decimal(event.amount_minor)), _leaf("currency-iso-code", event.currency),
        _leaf("subscription-id", event.subscription_ref), _leaf("recurring", "true", "boolean"),
        _leaf("processor-response-code", code), _leaf("processor-response-text", text),
        _leaf("processor-response-type", _bt_type(code) if failed else "approved"),
        _leaf("network-response-code", decline.network_code if decline else "00"),
        _leaf("merchant-advice-code", decline.advice_code if decline else None),
        f"<customer>{_leaf('id', event.customer_ref)}</customer>",
        "<credit-card>", _leaf("card-type", "MasterCard" if network == "mastercard" else "Visa"),
        _leaf("last-4", "4242"), _leaf("expiration-month", f"{month:02d}"),
        _leaf("expiration-year", str(year)), "</credit-card>",
        f"<subscription>{_period(first)}</subscription>",
    )) + "</transaction>"  # fmt: skip


def _period(first: PaymentEvent) -> str:
    return _leaf("billing-period-start-date", first.occurred_at.date().isoformat(), "date")


def _bt_type(code: str) -> str:
    return "soft_declined" if code in ("2000", "2001") else "hard_declined"


def _leaf(tag: str, value: str | int | None, kind: str | None = None) -> str:
    if value is None:
        return f'<{tag} nil="true"/>'
    typed = f' type="{kind}"' if kind else ""
    return f"<{tag}{typed}>{escape(str(value))}</{tag}>"


def _adyen(event: PaymentEvent, msg_id: str, first: PaymentEvent) -> Built:
    network, month, year = _card(event)
    data = {"shopperReference": event.customer_ref, "cardSummary": "4242"}
    data |= {"expiryDate": f"{month:02d}/{year}", "recurringProcessingModel": "Subscription"}
    data |= {"shopperInteraction": "ContAuth"}
    decline = event.decline
    if decline is not None and decline.code:
        reason = _native("adyen", decline.code)[1]
        data |= {"refusalCodeRaw": decline.network_code}
        data |= {"refusalReasonRaw": f"{decline.network_code} : {decline.message}"}
        if decline.advice_code:
            data["merchantAdviceCode"] = f"{decline.advice_code}: {_MAC_TEXT[decline.advice_code]}"
    else:
        reason = f"{_id(msg_id, 'auth', 4)[:6].upper()}:4242:{month:02d}/{year}"
    item = {
        "additionalData": data, "amount": {"currency": event.currency, "value": event.amount_minor},
        "eventCode": "AUTHORISATION", "eventDate": event.occurred_at.astimezone(UTC).isoformat(),
        "merchantAccountCode": "PaywatchDemoECOM", "merchantReference": event.invoice_ref,
        "operations": [], "paymentMethod": "mc" if network == "mastercard" else "visa",
        "pspReference": _id(msg_id, "psp", 10)[:16].upper(), "reason": reason,
        "success": "false" if decline is not None else "true",
    }  # fmt: skip
    body = _json({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]})
    return body, {"subscription_ref": None, "attempt": None}


def _checkout(event: PaymentEvent, msg_id: str, first: PaymentEvent) -> Built:
    network, month, year = _card(event)
    at, decline = _iso(event.occurred_at), event.decline
    data: dict[str, Any] = {
        "id": f"pay_{_id(msg_id, 'payment', 16)[:26]}", "amount": event.amount_minor,
        "currency": event.currency, "customer": {"id": event.customer_ref},
        "metadata": {"subscription_id": event.subscription_ref}, "payment_type": "Recurring",
        "processed_on": at, "reference": event.invoice_ref,
        "source": {"type": "card", "scheme": network.upper(), "last_4": "4242",
                   "expiry_month": month, "expiry_year": year},
    }  # fmt: skip
    if decline is not None and decline.code:
        code, summary = _native("checkout", decline.code)
        processing = {"partner_response_code": decline.network_code}
        if decline.advice_code:
            processing["partner_merchant_advice_code"] = decline.advice_code
        data |= {"processing": processing, "response_code": code, "response_summary": summary}
        data["retry"] = {"attempts_made": event.attempt}
    else:
        data |= {"response_code": "10000", "response_summary": "Approved"}
    kind = "payment_declined" if decline is not None else "payment_captured"
    doc = {"id": f"evt_{_id(msg_id, 'event', 16)[:26]}", "type": kind, "version": "1.0.29"}
    body = _json(doc | {"created_on": at, "data": data})
    return body, {} if decline is not None else {"attempt": None}


def _authorizenet(event: PaymentEvent, msg_id: str, first: PaymentEvent) -> Built:
    payload: dict[str, Any] = {"responseCode": 2 if event.decline else 1}
    if event.decline is not None and event.decline.code:
        reason, text = _native("authorizenet", event.decline.code)
        payload |= {"responseReasonCode": int(reason), "responseReasonDescription": text}
    digits = int.from_bytes(blake2b(msg_id.encode(), digest_size=8).digest(), "big")
    payload |= {"authCode": "" if event.decline else _id(msg_id, "auth", 4)[:6].upper()}
    payload |= {"avsResponse": "Y", "authAmount": (event.amount_minor or 0) / 100}
    payload |= {"invoiceNumber": event.invoice_ref, "entityName": "transaction"}
    payload |= {"id": str(60_000_000_000 + digits % 10**10)}
    payload |= {"profile": {"customerProfileId": event.customer_ref}}
    doc = {
        "notificationId": str(uuid.uuid5(_NAMESPACE, f"authorizenet/{msg_id}")),
        "eventType": "net.authorize.payment.authcapture.created",
        "eventDate": _iso(event.occurred_at),
        "webhookId": str(uuid.uuid5(_NAMESPACE, "authorizenet/webhook")),
        "payload": payload,
    }
    return _json(doc), {"subscription_ref": None, "attempt": None}


Builder = Callable[[PaymentEvent, str, PaymentEvent], Built]
_CHARGES: dict[str, Builder] = {
    "adyen": _adyen,
    "checkout": _checkout,
    "authorizenet": _authorizenet,
}
_BUILDERS: dict[str, dict[EventType, Builder]] = {
    "stripe": {
        _FAILED: _stripe_invoice,
        _PAID: _stripe_invoice,
        EventType.INVOICE_UNCOLLECTIBLE: _stripe_invoice,
        EventType.SUBSCRIPTION_CANCELED: _stripe_canceled,
    },
    "braintree": {
        _FAILED: _braintree,
        _PAID: _braintree,
        EventType.SUBSCRIPTION_CANCELED: _braintree,
    },
    **{name: {_FAILED: build, _PAID: build} for name, build in _CHARGES.items()},
}
"""Provider -> event type -> builder; what is missing stays generic (module doc)."""
