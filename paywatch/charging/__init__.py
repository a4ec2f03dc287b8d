"""Live payment retries: one API client per provider, a factory, a circuit breaker.

``base`` holds the port every client implements: a ``ChargeRequest`` in, a
``ChargeResult`` (paid or declined, with the provider's decline code) out, or
``Unavailable`` (transient: try again later with the same command id) or ``Rejected``
(permanent: dead-letter the command). The command id is the idempotency key on every try.

``stripe`` pays an open invoice (``POST /v1/invoices/{id}/pay``) with Stripe's
``Idempotency-Key``; a 400 on an invoice that turns out to be paid is a success.

``braintree`` retries a past-due subscription's charge through the XML gateway API
(``POST /merchants/{id}/transactions``). Braintree has no idempotency header, so each try
carries a deterministic ``order-id`` and a resumed try searches for it before charging.

``authorizenet`` charges a customer profile's default payment profile
(``createTransactionRequest`` on the JSON API). No idempotency key either: a deterministic
``invoiceNumber`` lets a resumed try find the earlier transaction in the customer's list.

``adyen`` makes a ContAuth/Subscription payment (Checkout API v71) with the shopper's
stored card, found through ``GET /storedPaymentMethods``, under an ``Idempotency-Key``.

``checkout`` makes a merchant-initiated Recurring payment from the customer's default
instrument under a ``Cko-Idempotency-Key``; a pending (202) payment is read back.

``http`` is what the clients share: ``HttpClient`` (the connection pool, transport errors
as ``Unavailable``, credentials scrubbed from provider text), the outcome log line and the
JSON readers. Each client module keeps only what its provider's API makes specific.

``registry`` names the secrets each provider's client needs (``CREDENTIALS``), the
providers that charge live (``LIVE_PROVIDERS``) and builds a tenant's client
(``client_for``), defaulting to each provider's sandbox host.

``breaker`` is a pure circuit breaker per (tenant, provider): after consecutive
``Unavailable`` answers it stops calls for a while, then lets one trial through.

Each client module's docstring gives the provider's API reference URL, the exact request,
and how every answer maps to a result or an error. No credential appears in a result, an
error or a log line; clients log the command id, tenant, invoice and outcome only.
"""
