"""Which secret names each provider accepts (ARCHITECTURE §5)."""

from __future__ import annotations

_OAUTH = ("client_id", "client_secret", "refresh_token", "api_base")

SECRET_NAMES: dict[str, tuple[str, ...]] = {
    "stripe": ("signing_secret", "api_key", "api_base"),
    "paypal": ("webhook_id", "api_base", "client_id", "client_secret"),
    "braintree": ("public_key", "private_key", "merchant_id", "api_base"),
    "authorizenet": ("signature_key", "api_login_id", "transaction_key", "api_base"),
    "xero": ("webhook_key", *_OAUTH),
    "quickbooks": ("verifier_token", *_OAUTH),
    "adyen": ("hmac_key", "api_key", "merchant_account", "api_base"),
    "checkout": ("signature_key", "secret_key", "processing_channel_id", "api_base"),
    "generic": ("signing_secret",),
    "email": ("smtp_url",),
}
"""Provider -> accepted secret names; the first one is the signature secret (for
``email``, a channel rather than a provider: the tenant's own SMTP server URL).

The names after the first serve live channels (issue 11): the API credentials of the
provider's merchant-initiated retries (paywatch/charging/registry.py) and ``api_base`` to
point them at a sandbox or a test fake."""
