"""The demo sample behind the banner's curl (a realistic, card-free Stripe failure)."""

from __future__ import annotations

import json
import time


def sample_failure_body(now: int | None = None) -> bytes:
    """A Stripe `invoice.payment_failed` event (basil shape) as compact JSON bytes."""
    from paywatch.providers import samples

    created = int(time.time()) if now is None else now
    invoice = samples.stripe_invoice(
        invoice_id="in_demo_0001",
        customer="cus_demo_0001",
        subscription="sub_demo_0001",
        amount_due=4900,
        currency="usd",
        attempt_count=1,
        basil=True,
    )
    event = samples.stripe_event(
        "invoice.payment_failed",
        invoice,
        event_id=f"evt_demo_{created}",
        created=created,
        api_version="2025-03-31.basil",
    )
    return json.dumps(event, separators=(",", ":")).encode()
