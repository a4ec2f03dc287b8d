"""Authorize.Net webhooks: JSON notifications signed with ``X-ANET-Signature: sha512=<HEX>``.

Modules: ``signature`` (HMAC-SHA512, key forms), ``normalize`` (event types -> PaymentEvent
fields), ``declines`` (responseReasonCode table), ``provider`` (the Provider port).
"""

from __future__ import annotations

from paywatch.providers.authorizenet.provider import AuthorizeNetProvider, authorizenet

__all__ = ["AuthorizeNetProvider", "authorizenet"]
