"""Which secret names each provider accepts (ARCHITECTURE §5)."""

from __future__ import annotations

_OAUTH = ("client_id", "client_secret", "refresh_token", "api_base")

SECRET_NAMES: dict[str, tuple[str, ...]] = {
    "stripe": ("signing_secret",),
    "paypal": ("webhook_id", "api_base", "client_id", "client_secret"),
    "braintree": ("public_key", "private_key"),
    "authorizenet": ("signature_key",),
    "xero": ("webhook_key", *_OAUTH),
    "quickbooks": ("verifier_token", *_OAUTH),
    "adyen": ("hmac_key",),
    "checkout": ("signature_key",),
    "generic": ("signing_secret",),
}
"""Provider -> accepted secret names; the first one is the signature secret."""
