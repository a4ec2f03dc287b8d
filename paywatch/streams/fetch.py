"""The fetch step of thin webhooks (Xero, QuickBooks): the only provider I/O of the worker.

A thin webhook names changed invoices and payments without their state. For each
reference (``provider.references``) the tenant's OAuth app fetches the current document
(``provider.api(...).fetch``), and every document, exactly as the provider sent it, is
appended to ``webhooks.fetched`` *before* anything is derived from it: replay and
re-normalization read that log and never call the provider again. A fetched payment may
name the invoices it pays (``provider.follow_ups``); those are fetched too, one level deep.

Failures, by kind:

* ``Retryable`` (network, 5xx, 429 with ``Retry-After``): retried with capped exponential
  backoff until ``settings.fetch_deadline_s``, then ``FetchGaveUp``;
* ``VerificationError`` (no OAuth credentials, refused grant, 403), ``CardDataError`` (the
  provider document holds a card number: never logged), ``PayloadError`` (oversized):
  raised at once; the worker dead-letters the raw webhook with the reason, so an operator
  can fix the credentials and replay it.

Rotated refresh tokens (Xero rotates on every refresh) are stored for the tenant as soon as
the OAuth server issues them, through ``SecretSource.store_rotated`` (idempotent).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from paywatch.errors import Retryable, VerificationError
from paywatch.providers.base import Provider, Secrets
from paywatch.providers.thin.client import ThinApi
from paywatch.providers.thin.ledger import RawCoords
from paywatch.providers.thin.port import ThinProvider
from paywatch.providers.thin.refs import FetchResult, RateLimited, ResourceRef
from paywatch.schemas.models import FetchedDocument, FetchedRef, PaymentEvent, RawRef
from paywatch.schemas.topics import fetched_key as topic_fetched_key

FETCH_NAMESPACE = uuid.UUID("6a4f3c0e-2d1b-5e8f-9c7a-0b1d2e3f4a5b")
MAX_FOLLOW_UPS = 50
"""Most invoices one fetched payment may pull in (a batch payment of many invoices)."""
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0


def thin(provider: Provider) -> ThinProvider | None:
    """The provider as a thin-webhook provider, or None for a full-payload one."""
    if provider.thin and isinstance(provider, ThinProvider):
        return provider
    return None


class FetchGaveUp(Retryable):
    """The provider API stayed unavailable past the fetch deadline."""


class SecretSource(Protocol):
    """Tenant secrets for the fetch step (read fresh each time, rotation written back)."""

    async def get(self, tenant: str, provider: str) -> Secrets | None:
        """Candidate secret sets, newest first; None when the tenant does not exist."""
        ...

    async def store_rotated(self, tenant: str, provider: str, values: dict[str, str]) -> None:
        """Store a refresh token the OAuth server rotated (idempotent)."""
        ...


def fetch_id(
    tenant: str, provider: str, source: RawRef, ref: ResourceRef, parent: str | None
) -> str:
    """Deterministic id of one fetch: same raw record, same reference, same id."""
    name = f"{tenant}/{provider}/{source.topic}/{source.partition}/{source.offset}/"
    name += f"{parent or ''}/{ref.dedupe_key}/{ref.index}"
    return str(uuid.uuid5(FETCH_NAMESPACE, name))


def logged_ref(ref: ResourceRef) -> FetchedRef:
    """A reference as it is written to ``webhooks.fetched``."""
    return FetchedRef(
        tenant_ref=ref.tenant_ref,
        kind=ref.kind,
        resource_id=ref.resource_id,
        event_type=ref.event_type,
        event_time=ref.event_time,
        index=ref.index,
        fetch=ref.fetch,
    )


def resource_ref(provider: str, ref: FetchedRef) -> ResourceRef:
    """The reference of a ``webhooks.fetched`` record (raises ValidationError when odd)."""
    return ResourceRef(provider=provider, **ref.model_dump())


def normalize_fetched(
    provider: ThinProvider, doc: FetchedDocument, coords: RawCoords
) -> list[PaymentEvent]:
    """Canonical events of one ``webhooks.fetched`` record (pure; replay runs this)."""
    ref = resource_ref(doc.provider, doc.ref)
    return provider.normalize_fetched(doc.tenant, ref, doc.document, coords, status=doc.status)


def fetched_key(doc: FetchedDocument) -> bytes:
    """Kafka key of ``webhooks.fetched``: tenant/provider/resource id."""
    return topic_fetched_key(doc.tenant, doc.provider, doc.ref.resource_id).encode()


@dataclass
class Fetcher:
    """Fetches every resource one thin webhook names (see the module docstring)."""

    http: httpx.AsyncClient
    secrets: SecretSource
    deadline_s: float = 300.0
    token_urls: Mapping[str, str | None] | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._apis: dict[str, ThinApi] = {}

    def _api(self, provider: ThinProvider) -> ThinApi:
        api = self._apis.get(provider.name)
        if api is None:
            token_url = (self.token_urls or {}).get(provider.name)
            options = {"token_url": token_url} if token_url else {}
            api = self._apis[provider.name] = provider.api(self.http, **options)
        return api

    async def fetch_all(
        self,
        provider: ThinProvider,
        tenant: str,
        doc: Mapping[str, Any],
        source: RawRef,
        now: Callable[[], datetime],
    ) -> list[FetchedDocument]:
        """Fetch the delivery's references and their follow-ups, in order."""
        deadline = self.clock() + self.deadline_s
        queue: list[tuple[ResourceRef, str | None]] = [(r, None) for r in provider.references(doc)]
        fetched: list[FetchedDocument] = []
        while queue:
            ref, parent = queue.pop(0)
            result = await self._fetch(provider, tenant, ref, deadline)
            fetched.append(
                FetchedDocument(
                    fetch_id=fetch_id(tenant, provider.name, source, ref, parent),
                    tenant=tenant,
                    provider=provider.name,
                    ref=logged_ref(ref),
                    status=result.status,
                    content_type=result.content_type[:200],
                    document=result.document,
                    fetched_at=now(),
                    source=source,
                    parent_resource_id=parent,
                )
            )
            if parent is None:
                more = provider.follow_ups(ref, result.document, result.status)
                queue.extend((r, ref.resource_id) for r in more[:MAX_FOLLOW_UPS])
        return fetched

    async def _fetch(
        self, provider: ThinProvider, tenant: str, ref: ResourceRef, deadline: float
    ) -> FetchResult:
        api = self._api(provider)
        backoff = BACKOFF_START_S

        async def store(values: dict[str, str]) -> None:
            await self.secrets.store_rotated(tenant, provider.name, values)

        while True:
            secrets = await self.secrets.get(tenant, provider.name)
            if secrets is None:
                raise VerificationError(f"tenant {tenant!r} no longer exists")
            try:
                return await api.fetch(ref, secrets, on_rotated=store)
            except RateLimited as exc:
                wait = exc.retry_after if exc.retry_after is not None else backoff
                error: Retryable = exc
            except Retryable as exc:
                wait, error = backoff, exc
            if self.clock() + wait > deadline:
                raise FetchGaveUp(
                    f"{provider.name} API unavailable for {self.deadline_s:.0f} s: {error}"
                ) from error
            await self.sleep(wait)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
