"""PayPal REST webhooks: RSA-signed transmissions, JSON events.

Modules: ``signature`` (headers, signed string, certificate checks: pure), ``certs``
(allow-listed, capped, cached certificate downloads), ``verify_api`` (PayPal's
verify-webhook-signature API), ``normalize`` (event types -> PaymentEvent fields),
``declines`` (classification tables), ``replay`` (the certificate mode's transmission-id
replay guard, pure part), ``provider`` (the Provider port + ``verify_async``).
"""

from __future__ import annotations

from paywatch.providers.paypal.certs import CertFetcher
from paywatch.providers.paypal.provider import PayPalProvider, paypal
from paywatch.providers.paypal.signature import verify_signature
from paywatch.providers.paypal.verify_api import VerifyApi

__all__ = ["CertFetcher", "PayPalProvider", "VerifyApi", "paypal", "verify_signature"]
