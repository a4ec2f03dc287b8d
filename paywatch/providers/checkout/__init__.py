"""Checkout.com webhooks: JSON events signed with ``Cko-Signature`` (hex HMAC-SHA256).

Modules: ``provider`` (signature + the Provider port), ``normalize`` (events -> PaymentEvent
fields), ``declines`` (response-code ranges, overrides, live advice).
"""

from __future__ import annotations

from paywatch.providers.checkout.provider import CheckoutProvider, checkout

__all__ = ["CheckoutProvider", "checkout"]
