"""Stripe webhooks: ``Stripe-Signature`` (HMAC-SHA256 over ``<t>.<body>``), JSON events.

Pure (reference/webhooks.md §1.1, §2.1, §3.1): no clock, no I/O. Modules: ``signature``
(header parsing, HMAC check, replay window), ``fields`` (type-checked JSON reads),
``normalize`` (event types -> PaymentEvent fields), ``provider`` (the Provider port).
"""

from __future__ import annotations

from paywatch.providers.stripe.provider import StripeProvider, stripe
from paywatch.providers.stripe.signature import DEFAULT_TOLERANCE, SIGNATURE_HEADER

__all__ = ["DEFAULT_TOLERANCE", "SIGNATURE_HEADER", "StripeProvider", "stripe"]
