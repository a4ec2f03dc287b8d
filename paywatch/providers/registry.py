"""Which provider modules are enabled, by the name used in ``/webhooks/{provider}/{tenant}``."""

from __future__ import annotations

from datetime import timedelta

import httpx

from paywatch.errors import UnknownProvider
from paywatch.providers.adyen import adyen
from paywatch.providers.authorizenet import AuthorizeNetProvider, authorizenet
from paywatch.providers.base import Provider
from paywatch.providers.braintree import braintree
from paywatch.providers.checkout import checkout
from paywatch.providers.generic import GenericProvider, generic
from paywatch.providers.paypal import PayPalProvider, paypal
from paywatch.providers.quickbooks import QuickBooksProvider, quickbooks
from paywatch.providers.stripe import StripeProvider, stripe
from paywatch.providers.xero import XeroProvider, xero
from paywatch.settings import Settings

KNOWN_PROVIDERS = (
    "stripe",
    "paypal",
    "braintree",
    "authorizenet",
    "xero",
    "quickbooks",
    "adyen",
    "checkout",
    "generic",
)
"""Every provider name of the contract (ARCHITECTURE §6); only PROVIDERS are enabled."""

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (stripe, paypal, braintree, authorizenet, xero, quickbooks, adyen, checkout, generic)
}
"""Enabled provider modules by name."""


def configured_providers(
    settings: Settings, http: httpx.AsyncClient | None = None
) -> dict[str, Provider]:
    """Enabled providers with the operator's settings applied.

    `http` is the ingest's client for providers whose verification calls out (PayPal
    certificates / verify API); the worker passes none: normalizing never does I/O.
    """
    configured: dict[str, Provider] = {
        **PROVIDERS,
        "stripe": StripeProvider(tolerance=settings.stripe_tolerance_s),
        "generic": GenericProvider(tolerance=settings.generic_tolerance_s),
        "authorizenet": AuthorizeNetProvider(
            key_form=settings.authorizenet_key_form,
            default_currency=settings.authorizenet_currency,
        ),
        "xero": XeroProvider(grace_days=settings.ledger_grace_days),
        "quickbooks": QuickBooksProvider(
            grace_days=settings.ledger_grace_days, default_currency=settings.quickbooks_currency
        ),
    }
    if http is not None:
        seconds = settings.paypal_tolerance_s
        tolerance = timedelta(seconds=seconds) if seconds else None  # 0: off
        configured["paypal"] = PayPalProvider(http, tolerance=tolerance)
    return configured


def get_provider(name: str, enabled: dict[str, Provider] | None = None) -> Provider:
    """The enabled provider called ``name``, or UnknownProvider."""
    provider = (PROVIDERS if enabled is None else enabled).get(name)
    if provider is not None:
        return provider
    if name in KNOWN_PROVIDERS:
        raise UnknownProvider(f"provider {name!r} is not enabled yet")
    raise UnknownProvider(f"unknown provider {name!r}")
