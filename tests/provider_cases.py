"""One signed failure and one recovery per enabled provider, with what the read models must show."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from tests.builders import adyen as ady
from tests.builders import authorizenet as anet
from tests.builders import braintree as bt
from tests.builders import checkout as cko
from tests.builders import generic as gen
from tests.builders import paypal as pp
from tests.builders import quickbooks as qbo
from tests.builders import stripe as samples
from tests.builders import xero as xs
from tests.builders.paypal_pki import make_test_pki, mock_paypal, sign_paypal
from tests.fake_ledgers import Ledgers, quickbooks_path, xero_path

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass(frozen=True)
class Case:
    """Deliveries of one provider and the invoice they must produce."""

    provider: str
    secrets: dict[str, str]
    deliveries: list[tuple[bytes, dict[str, str]]]
    invoice_ref: str
    status: str
    amount_minor: int
    currency: str
    decline_category: str
    http: Handler | None = field(default=None)
    """What the provider's API answers (PayPal certificates) when ingest calls out."""
    documents: list[dict[str, bytes]] = field(default_factory=list)
    """Thin webhooks: before delivery i, the fake ledger API serves documents[i]
    (request path -> JSON); the next delivery waits until the invoice shows
    one of ``between`` (fetches return the *current* state, so stages must not overlap).
    The status is the saga's state: an open failure is ``failed`` only until the saga's
    first decision moves it on."""
    between: frozenset[str] = frozenset({"failed", "retrying", "awaiting_customer"})


def _stripe() -> Case:
    secret = "whsec_cases_stripe"
    now = int(time.time())
    failed = samples.stripe_event(
        "charge.failed",
        samples.stripe_charge_failed(
            basil=False, invoice="in_case_1", reason="stolen_card", amount=1999
        ),
        event_id="evt_c1",
        created=now,
        api_version="2024-06-20",
    )
    paid = samples.stripe_event(
        "invoice.paid",
        samples.stripe_invoice(basil=True, invoice_id="in_case_1", amount_due=1999, paid=True),
        event_id="evt_c2",
        created=now + 5,
    )
    bodies = [samples.stripe_body(e) for e in (failed, paid)]
    return Case(
        "stripe",
        {"signing_secret": secret},
        [(b, {"Stripe-Signature": samples.sign_stripe(b, secret, now)}) for b in bodies],
        "in_case_1",
        "recovered",
        1999,
        "USD",
        "HARD",
    )


def _braintree() -> Case:
    bodies = [bt.braintree_body(bt.braintree_failure()), bt.braintree_body(bt.braintree_recovery())]
    return Case(
        "braintree",
        {"public_key": bt.PUBLIC_KEY, "private_key": bt.PRIVATE_KEY},
        [(b, dict(bt.BRAINTREE_HEADERS)) for b in bodies],
        f"{bt.SUBSCRIPTION_ID}:{bt.PERIOD_START}",
        "recovered",
        4900,
        "USD",
        "SOFT",
    )


def _authorizenet() -> Case:
    bodies = [
        anet.authorizenet_body(anet.authorizenet_failure()),
        anet.authorizenet_body(anet.authorizenet_recovery()),
    ]
    return Case(
        "authorizenet",
        {"signature_key": anet.SIGNATURE_KEY},
        [(b, anet.authorizenet_headers(b)) for b in bodies],
        anet.INVOICE_NUMBER,
        "recovered",
        4900,
        "USD",
        "UNKNOWN",
    )


def _paypal() -> Case:
    now = datetime.now(UTC)
    pki = make_test_pki(now)
    bodies = [
        pp.paypal_body(pp.paypal_payment_failed()),
        pp.paypal_body(pp.paypal_sale_completed()),
    ]
    # One transmission per delivery, sent now: PayPal certificate mode refuses an old
    # transmission time and a transmission id seen before with another body.
    sent = now.isoformat().replace("+00:00", "Z")
    deliveries = [
        (
            b,
            sign_paypal(
                b,
                pp.WEBHOOK_ID,
                pki.leaf_key,
                transmission_id=str(uuid.uuid1()),
                transmission_time=sent,
            ),
        )
        for b in bodies
    ]
    return Case(
        "paypal",
        {"webhook_id": pp.WEBHOOK_ID},
        deliveries,
        pp.SUBSCRIPTION_ID,
        "recovered",
        4999,
        "USD",
        "SOFT",
        http=mock_paypal(pki.bundle, now=now),
    )


def _adyen() -> Case:
    ref = "INV-ADY-1"
    bodies = [
        ady.adyen_body(ady.adyen_failure(merchant_reference=ref)),
        ady.adyen_body(ady.adyen_recovery(merchant_reference=ref)),
    ]
    return Case(
        "adyen",
        {"hmac_key": ady.HMAC_KEY},
        [(b, ady.adyen_headers(b)) for b in bodies],
        ref,
        "recovered",
        4900,
        "EUR",
        "SOFT",
    )


def _checkout() -> Case:
    ref = "INV-CKO-1"
    bodies = [
        cko.checkout_body(cko.checkout_failure(reference=ref)),
        cko.checkout_body(cko.checkout_recovery(reference=ref)),
    ]
    return Case(
        "checkout",
        {"signature_key": cko.SIGNATURE_KEY},
        [(b, cko.checkout_headers(b)) for b in bodies],
        ref,
        "recovered",
        4900,
        "EUR",
        "SOFT",
    )


def _generic() -> Case:
    ref, now = "INV-GEN-1", int(time.time())
    failed = gen.generic_body(gen.generic_failure(invoice_ref=ref))
    paid = gen.generic_body(gen.generic_recovery(invoice_ref=ref))
    deliveries = [
        (failed, gen.generic_headers(failed, timestamp=now)),
        (paid, gen.generic_headers(paid, msg_id=gen.RECOVERY_MSG_ID, timestamp=now)),
    ]
    return Case(
        "generic",
        {"signing_secret": gen.SIGNING_SECRET},
        deliveries,
        ref,
        "recovered",
        4999,
        "EUR",
        "SOFT",
    )


def _xero(ledgers: Ledgers) -> Case:
    bodies = [xs.xero_body(xs.xero_failure()), xs.xero_body(xs.xero_recovery())]
    return Case(
        "xero",
        {
            "webhook_key": xs.WEBHOOK_KEY,
            "client_id": xs.CLIENT_ID,
            "client_secret": xs.CLIENT_SECRET,
            "refresh_token": xs.REFRESH_TOKEN,
            "api_base": ledgers.api_base("xero"),
        },
        [(b, xs.xero_headers(b)) for b in bodies],
        xs.INVOICE_ID,
        "recovered",
        4900,
        "USD",
        "ACTION",
        documents=[
            {xero_path(): xs.xero_body(xs.xero_overdue())},
            {xero_path(): xs.xero_body(xs.xero_paid())},
        ],
    )


def _quickbooks(ledgers: Ledgers) -> Case:
    bodies = [qbo.qbo_body(qbo.qbo_failure()), qbo.qbo_body(qbo.qbo_recovery())]
    invoice = quickbooks_path("invoice", qbo.INVOICE_ID)
    payment = quickbooks_path("payment", qbo.PAYMENT_ID)
    return Case(
        "quickbooks",
        {
            "verifier_token": qbo.VERIFIER_TOKEN,
            "client_id": qbo.CLIENT_ID,
            "client_secret": qbo.CLIENT_SECRET,
            "refresh_token": qbo.REFRESH_TOKEN,
            "api_base": ledgers.api_base("quickbooks"),
        },
        [(b, qbo.quickbooks_headers(b)) for b in bodies],
        qbo.INVOICE_ID,
        "recovered",
        4900,
        "USD",
        "ACTION",
        documents=[
            {invoice: qbo.qbo_body(qbo.qbo_overdue())},
            {invoice: qbo.qbo_body(qbo.qbo_paid()), payment: qbo.qbo_body(qbo.qbo_payment())},
        ],
    )


def provider_cases(ledgers: Ledgers | None = None) -> list[Case]:
    """Every enabled provider's case (signatures made now: build them right before use).

    ``ledgers``: where the fake Xero/QuickBooks APIs answer (a dummy address when absent).
    """
    ledgers = ledgers or Ledgers(base="http://127.0.0.1:9", fakes={})
    return [
        _stripe(),
        _paypal(),
        _braintree(),
        _authorizenet(),
        _xero(ledgers),
        _quickbooks(ledgers),
        _adyen(),
        _checkout(),
        _generic(),
    ]


def transport(cases: list[Case]) -> httpx.MockTransport:
    """One transport answering for every case's provider API (404 for anything else)."""
    handlers = [c.http for c in cases if c.http is not None]

    def handle(request: httpx.Request) -> httpx.Response:
        for handler in handlers:
            response = handler(request)
            if response.status_code != 404:
                return response
        return httpx.Response(404)

    return httpx.MockTransport(handle)
