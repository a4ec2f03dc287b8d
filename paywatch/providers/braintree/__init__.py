"""Braintree webhooks: form-encoded ``bt_signature`` + ``bt_payload`` (base64 of XML).

Modules: ``signature`` (form, HMAC-SHA1, ``bt_challenge``), ``xmldoc`` (safe XML decoding),
``normalize`` (kinds -> PaymentEvent fields), ``declines`` (classification table),
``provider`` (the Provider port).
"""

from __future__ import annotations

from paywatch.providers.braintree.provider import BraintreeProvider, braintree
from paywatch.providers.braintree.signature import challenge_response

__all__ = ["BraintreeProvider", "braintree", "challenge_response"]
