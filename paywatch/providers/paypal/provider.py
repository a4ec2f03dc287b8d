"""The PayPal adapter of the Provider port (reference/webhooks.md §1.2, §2.2, §3.2, §4, §5).

PayPal's signature is asymmetric: checking it needs PayPal's certificate (fetched from the
``paypal-cert-url`` header) or a call to PayPal's verify API, so verification is
``verify_async``; the sync ``verify`` refuses to run. Which way, per tenant secret set:

* ``client_id`` and ``client_secret`` set -> **API mode**: ``POST {api_base}/v1/notifications/
  verify-webhook-signature`` (``api_base`` defaults to ``default_api_base``, live PayPal);
* else -> **cert mode**: offline RSA check against the certificate (``signature`` module),
  fetched by ``certs.CertFetcher`` (allow-listed hosts, size cap, cache).

``webhook_id`` is required in both. Several secret sets (rotation) are tried newest first;
one that verifies accepts. When none does and one of them failed transiently (cert URL or
PayPal API down), ``Retryable`` is raised so the ingest answers 503 and PayPal redelivers;
otherwise the newest set's VerificationError. ``tolerance`` bounds the age of
``paypal-transmission-time`` in both modes (default ``DEFAULT_TOLERANCE``, 4 days: PayPal
retries for 3; None turns it off, which is unsafe: see the CRC caveat in ``signature``).
``verify_delivery`` also says which mode accepted, so the ingest runs the transmission-id
replay guard (``replay``) in certificate mode, where only a CRC-32 of the body is signed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from pydantic import ValidationError

from paywatch.errors import PayloadError, Retryable, VerificationError
from paywatch.providers.base import (
    Provider,
    Secrets,
    envelope,
    load_json,
    refusal,
    subject_ref,
)
from paywatch.providers.paypal import normalize as fields_of
from paywatch.providers.paypal.certs import DEFAULT_CERT_HOSTS, CertFetcher
from paywatch.providers.paypal.replay import Verified
from paywatch.providers.paypal.signature import (
    DEFAULT_CERT_CNS,
    DEFAULT_TOLERANCE,
    check_transmission_time,
    read_transmission,
    verify_signature,
)
from paywatch.providers.paypal.verify_api import DEFAULT_API_BASE, ApiCredentials, VerifyApi
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import DeclineCategory, PaymentEvent, RawWebhook

DEFAULT_TIMEOUT = 5.0
"""Seconds for one cert download or API call of the default client (PayPal's own delivery
timeout is undocumented; the ingest must answer well within it)."""


class PayPalProvider(Provider):
    """PayPal REST webhooks: cert-mode or API-mode verification, JSON events."""

    name: str = "paypal"
    secret_names: tuple[str, ...] = ("webhook_id",)
    optional_secret_names: tuple[str, ...] = ("api_base", "client_id", "client_secret")

    def __init__(
        self,
        http: httpx.AsyncClient | None = None,
        *,
        certs: CertFetcher | None = None,
        api: VerifyApi | None = None,
        accepted_cns: Collection[str] = DEFAULT_CERT_CNS,
        trust_roots: Sequence[x509.Certificate] = (),
        cert_hosts: Collection[str] = DEFAULT_CERT_HOSTS,
        default_api_base: str = DEFAULT_API_BASE,
        reason_overrides: Mapping[str, DeclineCategory] | None = None,
        tolerance: timedelta | None = DEFAULT_TOLERANCE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._http = http
        self._owns_http = False
        self._certs = certs
        self._api = api
        self.accepted_cns = frozenset(cn.lower() for cn in accepted_cns)
        self.trust_roots = tuple(trust_roots)
        self.cert_hosts = frozenset(cert_hosts)
        self.default_api_base = default_api_base
        self.reason_overrides = {k.upper(): v for k, v in (reason_overrides or {}).items()}
        self.tolerance = tolerance
        self.timeout = timeout

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Always refuse: PayPal needs a certificate download or an API call."""
        raise VerificationError("PayPal verification needs verify_async")

    async def verify_async(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError (or Retryable) unless a secret set verifies the raw body."""
        await self.verify_delivery(body, headers, secrets, now)

    async def verify_delivery(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> Verified:
        """``verify_async``, saying which transmission verified and in which mode."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        transmission = read_transmission(headers)
        sets = [s for s in secrets if s.get("webhook_id")]
        if not sets:
            raise VerificationError("no PayPal webhook_id configured for this tenant")
        failures: list[VerificationError | Retryable] = []
        bundle: list[bytes | VerificationError | Retryable] = []  # fetched once per call
        for secret_set in sets:
            webhook_id = secret_set["webhook_id"]
            credentials = _api_credentials(secret_set, self.default_api_base)
            try:
                if credentials is not None:
                    api = self.verify_api()
                    await api.verify(credentials, transmission, webhook_id, body, now)
                    check_transmission_time(transmission, now, self.tolerance)
                    return Verified(transmission.transmission_id, "api")
                pem = await self._bundle(bundle, transmission.cert_url, now)
                self._verify_cert(webhook_id, pem, body, headers, now)
                return Verified(transmission.transmission_id, "cert")
            except (VerificationError, Retryable) as exc:
                failures.append(exc)
        transient = next((f for f in failures if isinstance(f, Retryable)), None)
        if transient is not None:
            raise Retryable(f"PayPal verification unavailable: {transient}") from transient
        raise VerificationError(str(failures[0])) from failures[0]

    async def aclose(self) -> None:
        """Close the HTTP client this provider created itself (not an injected one)."""
        client = self._http
        if not self._owns_http or client is None:
            return
        await client.aclose()
        # Helpers built around the closed client are rebuilt on next use.
        if self._certs is not None and self._certs.client is client:
            self._certs = None
        if self._api is not None and self._api.client is client:
            self._api = None
        self._http, self._owns_http = None, False

    def parse(self, body: bytes) -> dict[str, Any]:
        """Decode a PayPal event: a JSON object with ``id``, ``event_type``, ``resource``."""
        doc = load_json(body)
        if not isinstance(doc, dict):
            raise PayloadError("a PayPal event is a JSON object")
        for key in ("id", "event_type"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise PayloadError(f"PayPal event has no string {key!r}")
        if not isinstance(doc.get("resource"), dict):
            raise PayloadError("PayPal event has no object 'resource'")
        fields_of.occurred_at(doc)
        return doc

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """Subscription id, else the merchant invoice / order id, else the resource id."""
        return subject_ref(fields_of.subject(doc))

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """PayPal's event id (``WH-...``)."""
        evt_id = doc.get("id")
        if not isinstance(evt_id, str) or not evt_id:
            raise PayloadError("PayPal event has no string 'id'")
        return evt_id

    def normalize_doc(
        self, raw: RawWebhook, doc: Mapping[str, Any], at: Coords
    ) -> list[PaymentEvent]:
        """Canonical events of one PayPal webhook; unhandled event types give []."""
        try:  # handlers build nested models (Decline): their refusals are 400s too
            draft = fields_of.fields(doc, self.reason_overrides)
        except ValidationError as exc:
            raise PayloadError(f"PayPal event has unexpected field values: {refusal(exc)}") from exc
        if draft is None:
            return []
        evt_id = self.provider_event_id(doc)
        return [
            envelope(
                raw,
                at,
                evt_id,
                draft,
                source_type=doc["event_type"],
                occurred_at=fields_of.occurred_at(doc),
                invalid=f"PayPal event {evt_id} has unexpected field values",
            )
        ]

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
            self._owns_http = True
        return self._http

    def cert_fetcher(self) -> CertFetcher:
        """The cert fetcher (built on first use around the HTTP client)."""
        if self._certs is None:
            self._certs = CertFetcher(self._client(), hosts=self.cert_hosts)
        return self._certs

    def verify_api(self) -> VerifyApi:
        """The verify-API client (built on first use around the HTTP client)."""
        if self._api is None:
            self._api = VerifyApi(self._client())
        return self._api

    async def _bundle(
        self, memo: list[bytes | VerificationError | Retryable], url: str, now: datetime
    ) -> bytes:
        if not memo:
            try:
                memo.append(await self.cert_fetcher().fetch(url, now))
            except (VerificationError, Retryable) as exc:
                memo.append(exc)
        if isinstance(memo[0], bytes):
            return memo[0]
        raise memo[0]

    def _verify_cert(
        self, webhook_id: str, pem: bytes, body: bytes, headers: Mapping[str, str], now: datetime
    ) -> None:
        verify_signature(
            body,
            headers,
            webhook_id,
            pem,
            now,
            accepted_cns=self.accepted_cns,
            trust_roots=self.trust_roots,
            tolerance=self.tolerance,
        )


def _api_credentials(secret_set: Mapping[str, str], default_base: str) -> ApiCredentials | None:
    client_id, client_secret = secret_set.get("client_id"), secret_set.get("client_secret")
    if not client_id or not client_secret:
        return None
    return ApiCredentials(secret_set.get("api_base") or default_base, client_id, client_secret)


paypal = PayPalProvider()
"""The PayPal provider with defaults; its HTTP client is created on first verification."""
