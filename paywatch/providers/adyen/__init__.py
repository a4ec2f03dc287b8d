"""Adyen Standard webhooks: JSON notifications, one HMAC-SHA256 per item inside the body.

Modules: ``signature`` (strict parse + per-item HMAC), ``normalize`` (items -> PaymentEvent
fields), ``declines`` (refusal reasons, raw network codes, chargebacks), ``provider`` (the
Provider port). Adyen expects ``[accepted]`` as the body of the 2xx answer
(``AdyenProvider.success_body``).
"""

from __future__ import annotations

from paywatch.providers.adyen.provider import AdyenProvider, adyen

__all__ = ["AdyenProvider", "adyen"]
