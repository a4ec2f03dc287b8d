"""Per-provider cost of verify + parse + normalize for one webhook (µs, median of many).

Usage: .venv/bin/python bench/bench_providers.py [--n 3000]
Pure code only (no Kafka, no HTTP: PayPal's certificate comes from an in-memory
transport and is cached after the first call, as in production). Thin providers (Xero,
QuickBooks) send ids only: their row is verify + parse + references + normalize_fetched of
the invoice as already fetched; the fetch itself is I/O and is not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import _repo  # noqa: F401  (puts tests.builders on sys.path)
import httpx

from paywatch.providers.paypal import PayPalProvider
from paywatch.providers.registry import PROVIDERS
from paywatch.schemas.models import RawWebhook
from tests.builders import adyen as ady
from tests.builders import authorizenet as anet
from tests.builders import braintree as bt
from tests.builders import checkout as cko
from tests.builders import generic as gen
from tests.builders import paypal as pp
from tests.builders import quickbooks as qbo
from tests.builders import stripe as samples
from tests.builders import xero as xr
from tests.builders.paypal_pki import make_test_pki, mock_paypal, sign_paypal

FETCHED_COORDS = ("webhooks.fetched", 0, 0)
THIN_NOTE = (
    "† thin webhook: verify + parse + references + normalize_fetched of the already-fetched "
    "invoice; the HTTP fetch (I/O) is excluded."
)


@dataclass(frozen=True)
class Case:
    """One provider's webhook: body, lowercase headers, secrets and, if thin, the fetched doc."""

    name: str
    body: bytes
    headers: dict[str, str]
    secrets: dict[str, str]
    provider: Any
    fetched: bytes | None = field(default=None, repr=False)


def cases(now: datetime) -> list[Case]:
    """One failure webhook per provider, in the registry's order."""
    ts = int(now.timestamp())
    stripe_body = samples.stripe_body(
        samples.stripe_event(
            "charge.failed", samples.stripe_charge_failed(basil=False, invoice="in_b"), created=ts
        )
    )
    pki = make_test_pki(now)
    paypal = PayPalProvider(
        httpx.AsyncClient(transport=httpx.MockTransport(mock_paypal(pki.bundle, now=now)))
    )
    pp_body = pp.paypal_body(pp.paypal_payment_failed())
    bt_body = bt.braintree_body(bt.braintree_failure())
    an_body = anet.authorizenet_body(anet.authorizenet_failure())
    return [
        Case(
            "stripe",
            stripe_body,
            {"stripe-signature": samples.sign_stripe(stripe_body, "whsec_b", ts)},
            {"signing_secret": "whsec_b"},
            PROVIDERS["stripe"],
        ),
        Case(
            "paypal",
            pp_body,
            sign_paypal(pp_body, pp.WEBHOOK_ID, pki.leaf_key, transmission_time=now.isoformat()),
            {"webhook_id": pp.WEBHOOK_ID},
            paypal,
        ),
        Case(
            "braintree",
            bt_body,
            dict(bt.BRAINTREE_HEADERS),
            {"public_key": bt.PUBLIC_KEY, "private_key": bt.PRIVATE_KEY},
            PROVIDERS["braintree"],
        ),
        Case(
            "authorizenet",
            an_body,
            {k.lower(): v for k, v in anet.authorizenet_headers(an_body).items()},
            {"signature_key": anet.SIGNATURE_KEY},
            PROVIDERS["authorizenet"],
        ),
        *thin_cases(),
        *other_cases(ts),
    ]


def thin_cases() -> list[Case]:
    """Xero and QuickBooks: an invoice-update webhook plus the overdue invoice it names."""
    xero_body = xr.xero_body(xr.xero_failure())
    qbo_body = qbo.qbo_body(qbo.qbo_failure())
    return [
        Case(
            "xero",
            xero_body,
            xr.xero_headers(xero_body),
            {"webhook_key": xr.WEBHOOK_KEY},
            PROVIDERS["xero"],
            xr.xero_body(xr.xero_overdue()),
        ),
        Case(
            "quickbooks",
            qbo_body,
            qbo.quickbooks_headers(qbo_body),
            {"verifier_token": qbo.VERIFIER_TOKEN},
            PROVIDERS["quickbooks"],
            qbo.qbo_body(qbo.qbo_overdue()),
        ),
    ]


def other_cases(ts: int) -> list[Case]:
    """Adyen, Checkout.com and generic (Standard Webhooks, signed now: 5-minute window)."""
    adyen_body = ady.adyen_body(ady.adyen_failure())
    cko_body = cko.checkout_body(cko.checkout_failure())
    gen_body = gen.generic_body(gen.generic_failure())
    return [
        Case(
            "adyen",
            adyen_body,
            ady.adyen_headers(adyen_body),
            {"hmac_key": ady.HMAC_KEY},
            PROVIDERS["adyen"],
        ),
        Case(
            "checkout",
            cko_body,
            cko.checkout_headers(cko_body),
            {"signature_key": cko.SIGNATURE_KEY},
            PROVIDERS["checkout"],
        ),
        Case(
            "generic",
            gen_body,
            gen.generic_headers(gen_body, timestamp=ts),
            {"signing_secret": gen.SIGNING_SECRET},
            PROVIDERS["generic"],
        ),
    ]


async def one(case: Case, now: datetime) -> None:
    """Verify, parse and normalize one delivery, as ingest + the worker do."""
    provider, body = case.provider, case.body
    await provider.verify_async(body, case.headers, [case.secrets], now)
    doc = provider.parse(body)
    if case.fetched is not None:
        events = [
            event
            for ref in provider.references(doc)
            for event in provider.normalize_fetched("bench", ref, case.fetched, FETCHED_COORDS)
        ]
        assert events, case.name
        return
    raw = RawWebhook(ingest_id="b", tenant="bench", provider=case.name, received_at=now, body=body)
    assert provider.normalize(raw, "webhooks.raw", 0, 0, doc), case.name


async def measure(n: int) -> list[tuple[str, float, float]]:
    """(provider, median µs, p90 µs) per provider."""
    now = datetime.now(UTC)
    out = []
    for case in cases(now):
        for _ in range(50):  # warm-up (and PayPal's certificate cache)
            await one(case, now)
        samples_ns = []
        for _ in range(n):
            start = time.perf_counter_ns()
            await one(case, now)
            samples_ns.append(time.perf_counter_ns() - start)
        q = statistics.quantiles(samples_ns, n=10)
        name = f"{case.name} †" if case.fetched is not None else case.name
        out.append((name, statistics.median(samples_ns) / 1000, q[8] / 1000))
    return out


def main() -> None:
    """Print the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.n))
    base = dict((r[0], r[1]) for r in rows)["stripe"]
    print(f"Command: .venv/bin/python bench/bench_providers.py --n {args.n}\n")
    print("| provider | verify+parse+normalize median µs | p90 µs | ratio to Stripe |")
    print("|---|---:|---:|---:|")
    for name, median, p90 in rows:
        print(f"| {name} | {median:.1f} | {p90:.1f} | {median / base:.2f} |")
    print(f"\n{THIN_NOTE}")


if __name__ == "__main__":
    main()
