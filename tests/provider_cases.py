"""One signed failure and one recovery per enabled provider, with what the read models must show."""

from __future__ import annotations

import time
from dataclasses import dataclass

from paywatch.providers import samples
from paywatch.providers import samples_authorizenet as anet
from paywatch.providers import samples_braintree as bt


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


def provider_cases() -> list[Case]:
    """Every enabled provider's case (signatures made now: build them right before use)."""
    return [_stripe(), _braintree(), _authorizenet()]
