"""What a live payment retry asks of a provider, and what the provider answered.

The executor hands a ``ChargeRequest`` (built from a RETRY_PAYMENT command) to the
tenant's ``ChargeClient`` for the command's provider. The command id is the idempotency
key: a client sends it the way its provider deduplicates (Stripe ``Idempotency-Key``,
Adyen ``Idempotency-Key``, Checkout.com ``Cko-Idempotency-Key``) or, where the provider
has no such header, finds an earlier attempt of the same command before charging again
(``resumed``).

A client either returns a ``ChargeResult`` (the payment went through or was declined by
the network/issuer: both are outcomes) or raises:

* ``Unavailable``: the provider did not answer usably (timeout, connection error, 5xx,
  429, or a 401/403 that a credentials fix will cure). Nothing is known to have been
  charged; the executor tries again later with the same key, and the tenant/provider's
  circuit breaker counts it.
* ``Rejected``: the request itself is refused for good (the invoice cannot be paid, the
  customer has no stored payment method, the command lacks what the provider needs).
  The executor dead-letters the command with the reason; retrying cannot help.

No card number, CVV or credential ever appears in a result, an error or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from paywatch.errors import PaywatchError
from paywatch.schemas.models import Decline


@dataclass(frozen=True)
class ChargeRequest:
    """One merchant-initiated retry of an invoice's payment."""

    tenant: str
    provider: str
    command_id: str
    """The idempotency key: the same on every try of this command."""
    invoice_ref: str
    customer_ref: str | None
    subscription_ref: str | None
    payment_ref: str | None
    amount_minor: int | None
    currency: str | None
    attempt: int


@dataclass(frozen=True)
class ChargeResult:
    """What the provider answered: paid, or declined (with the provider's decline code)."""

    succeeded: bool
    provider_ref: str | None = None
    """The provider's id of the charge/transaction/payment, when it gave one."""
    decline_code: str | None = None
    decline_message: str | None = None
    decline: Decline | None = None
    """A decline classified by the provider's own tables (paywatch/providers/<p>/declines.py),
    as its webhooks would be; None: the executor falls back to the code and the category
    of the failure being retried."""


class ChargeError(PaywatchError):
    """A retry that produced no outcome."""


class Unavailable(ChargeError):
    """Transient: the provider could not be reached or did not answer usably; try later."""


class Pending(Unavailable):
    """The provider took the payment and has no outcome yet (held for review, pending, a
    202): no outcome to record, but the provider answered, so the circuit breaker does not
    count it as an outage; the command is looked at again later with the same key."""


class Rejected(ChargeError):
    """Permanent: the provider refused the request itself (not a decline); do not retry."""


class ChargeClient(Protocol):
    """One tenant's API client for one provider."""

    provider: str

    async def charge(self, request: ChargeRequest, *, resumed: bool = False) -> ChargeResult:
        """Retry the payment once; ``resumed``: an earlier try of this command may have
        reached the provider (its executor died before recording the outcome), so a
        provider without idempotency keys must look it up before charging again."""
        ...

    async def aclose(self) -> None:
        """Release the client's connections."""
        ...
