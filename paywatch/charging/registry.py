"""Which providers charge live, which tenant secrets each needs, and the client factory.

``client_for(provider, secrets)`` builds one tenant's client from its stored secrets. A
missing credential raises ``Rejected`` naming the missing secret (never a value, never a
``KeyError``). Every client defaults to its provider's sandbox/test host; ``api_base``
points it elsewhere (the live host, or a test fake): live money is never a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from paywatch.charging.adyen import AdyenClient
from paywatch.charging.authorizenet import AuthorizeNetClient
from paywatch.charging.base import ChargeClient, Rejected
from paywatch.charging.braintree import BraintreeClient
from paywatch.charging.checkout import CheckoutClient
from paywatch.charging.stripe import StripeClient

CREDENTIALS: dict[str, tuple[str, ...]] = {
    "stripe": ("api_key",),
    "braintree": ("merchant_id", "public_key", "private_key"),
    "authorizenet": ("api_login_id", "transaction_key"),
    "adyen": ("api_key", "merchant_account"),
    "checkout": ("secret_key",),
}
"""Provider -> the tenant secrets its client needs."""

OPTIONAL: dict[str, tuple[str, ...]] = {
    "stripe": ("api_base",),
    "braintree": ("api_base",),
    "authorizenet": ("api_base",),
    "adyen": ("api_base",),
    "checkout": ("api_base", "processing_channel_id"),
}
"""Provider -> secrets its client uses when set (``api_base``: a sandbox or test fake)."""

LIVE_PROVIDERS: tuple[str, ...] = tuple(CREDENTIALS)
"""The providers paywatch can retry a payment through."""

Factory = Callable[..., ChargeClient]
_FACTORIES: dict[str, Factory] = {
    "stripe": StripeClient,
    "braintree": BraintreeClient,
    "authorizenet": AuthorizeNetClient,
    "adyen": AdyenClient,
    "checkout": CheckoutClient,
}


def client_for(
    provider: str,
    secrets: Mapping[str, str],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 10.0,
) -> ChargeClient:
    """The tenant's client for ``provider``; ``Rejected`` for a provider or secret missing."""
    if provider not in _FACTORIES:
        raise Rejected(f"no live charging through provider {provider!r}")
    missing = [name for name in CREDENTIALS[provider] if not secrets.get(name)]
    if missing:
        raise Rejected(f"{provider} live charging needs the secret(s): {', '.join(missing)}")
    names = CREDENTIALS[provider] + OPTIONAL[provider]
    given = {name: secrets[name] for name in names if secrets.get(name)}
    return _FACTORIES[provider](**given, transport=transport, timeout_s=timeout_s)
