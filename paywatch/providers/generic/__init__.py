"""Generic webhooks: Standard Webhooks signatures around paywatch's own small JSON payload.

Modules: ``signature`` (Standard Webhooks v1: webhook-id/-timestamp/-signature, whsec_
secrets, 5-minute window), ``schema`` (the public payload schema, documented there, ->
PaymentEvent fields), ``declines`` (the sender's category behind the network rules),
``provider`` (the Provider port).
"""

from __future__ import annotations

from paywatch.providers.generic.provider import GenericProvider, generic

__all__ = ["GenericProvider", "generic"]
