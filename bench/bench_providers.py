"""Per-provider cost of verify + parse + normalize for one webhook (µs, median of many).

Usage: .venv/bin/python bench/bench_providers.py [--n 3000]
Pure code only (no Kafka, no HTTP: PayPal's certificate comes from an in-memory
transport and is cached after the first call, as in production).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from paywatch.providers import samples
from paywatch.providers import samples_authorizenet as anet
from paywatch.providers import samples_braintree as bt
from paywatch.providers import samples_paypal as pp
from paywatch.providers.paypal import PayPalProvider
from paywatch.providers.paypal.testkit import make_test_pki, mock_paypal, sign_paypal
from paywatch.providers.registry import PROVIDERS
from paywatch.schemas.models import RawWebhook

Case = tuple[str, bytes, dict[str, str], dict[str, str], Any]


def cases(now: datetime) -> list[Case]:
    """(provider, body, lowercase headers, secrets, provider object) per provider."""
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
        (
            "stripe",
            stripe_body,
            {"stripe-signature": samples.sign_stripe(stripe_body, "whsec_b", ts)},
            {"signing_secret": "whsec_b"},
            PROVIDERS["stripe"],
        ),
        (
            "paypal",
            pp_body,
            sign_paypal(pp_body, pp.WEBHOOK_ID, pki.leaf_key),
            {"webhook_id": pp.WEBHOOK_ID},
            paypal,
        ),
        (
            "braintree",
            bt_body,
            dict(bt.BRAINTREE_HEADERS),
            {"public_key": bt.PUBLIC_KEY, "private_key": bt.PRIVATE_KEY},
            PROVIDERS["braintree"],
        ),
        (
            "authorizenet",
            an_body,
            {k.lower(): v for k, v in anet.authorizenet_headers(an_body).items()},
            {"signature_key": anet.SIGNATURE_KEY},
            PROVIDERS["authorizenet"],
        ),
    ]


async def one(case: Case, now: datetime) -> None:
    """Verify, parse and normalize one delivery, as ingest + the worker do."""
    name, body, headers, secrets, provider = case
    verify_async: Callable[..., Any] | None = getattr(provider, "verify_async", None)
    if verify_async is not None:
        await verify_async(body, headers, [secrets], now)
    else:
        provider.verify(body, headers, [secrets], now)
    provider.parse(body)
    raw = RawWebhook(ingest_id="b", tenant="bench", provider=name, received_at=now, body=body)
    assert provider.normalize(raw, "webhooks.raw", 0, 0), name


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
        out.append((case[0], statistics.median(samples_ns) / 1000, q[8] / 1000))
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


if __name__ == "__main__":
    main()
