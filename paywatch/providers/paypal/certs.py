"""Fetch PayPal signing certificates from ``paypal-cert-url``: allow-listed, capped, cached.

The URL arrives in a header anyone can set, so before any request it must be ``https`` on
the default port, on an allow-listed PayPal API host, under PayPal's cert path, with no
user info, query or fragment; anything else is a VerificationError and nothing is fetched
(SSRF and attacker-hosted certificates). Redirects are never followed. Responses over
``max_bytes`` are refused. Bundles are cached by URL for ``ttl`` (bounded, least recently
used evicted): PayPal reuses one certificate URL for many deliveries. A burst that misses
the cache downloads each URL once (a lock per URL, so one slow URL does not hold up the
others), and a URL whose download failed is not asked again for ``negative_ttl``: the
same error is raised at once (a 503 or 401 without a request), so a flood of deliveries
naming a dead or forged URL costs one request a minute, not one each.

Errors: a network failure, timeout or 5xx is ``Retryable`` (the ingest answers 503 and
PayPal redelivers); a 3xx/4xx or an oversize body is a VerificationError.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Collection
from datetime import datetime, timedelta

import httpx

from paywatch.errors import Retryable, VerificationError
from paywatch.providers.paypal.signature import MAX_BUNDLE_BYTES

DEFAULT_CERT_HOSTS = frozenset(
    {"api.paypal.com", "api.sandbox.paypal.com", "api-m.paypal.com", "api-m.sandbox.paypal.com"}
)
"""Hosts PayPal serves webhook certificates from (live and sandbox, classic and -m)."""

DEFAULT_CERT_PATH = "/v1/notifications/certs/"
"""Path prefix of PayPal's cert URLs (``.../v1/notifications/certs/CERT-...``) [S]."""

DEFAULT_TTL = timedelta(hours=1)
DEFAULT_MAX_ENTRIES = 64
DEFAULT_NEGATIVE_TTL = timedelta(seconds=60)


class CertFetcher:
    """Downloads and caches PayPal certificate bundles through an injected httpx client."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        hosts: Collection[str] = DEFAULT_CERT_HOSTS,
        path_prefix: str = DEFAULT_CERT_PATH,
        max_bytes: int = MAX_BUNDLE_BYTES,
        ttl: timedelta = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        negative_ttl: timedelta = DEFAULT_NEGATIVE_TTL,
    ) -> None:
        if max_bytes <= 0 or max_entries <= 0 or ttl <= timedelta(0):
            raise ValueError("max_bytes, max_entries and ttl must be positive")
        if negative_ttl < timedelta(0):
            raise ValueError("negative_ttl must not be negative")
        self.client = client
        self.hosts = frozenset(h.lower() for h in hosts)
        self.path_prefix = path_prefix
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[datetime, bytes]] = OrderedDict()
        self.negative_ttl = negative_ttl
        # URL -> when its download failed and the error raised again until negative_ttl.
        # (The error's kind and text only: a kept exception would keep its frames alive.)
        self._failed: OrderedDict[str, tuple[datetime, bool, str]] = OrderedDict()
        # URL -> (its lock, [callers holding or awaiting it]); an entry lives only while a
        # download of that URL is wanted, so the dict is bounded by requests in flight.
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def check_url(self, url: str) -> httpx.URL:
        """The parsed URL when it may be fetched, else VerificationError (no request made)."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise VerificationError("paypal-cert-url is not a valid URL") from exc
        if parsed.scheme != "https":
            raise VerificationError("paypal-cert-url must use https")
        if parsed.host.lower() not in self.hosts:
            raise VerificationError("paypal-cert-url host is not an allow-listed PayPal host")
        if parsed.port not in (None, 443) or parsed.userinfo:
            raise VerificationError("paypal-cert-url must not carry a port or user info")
        path = parsed.path
        if parsed.query or parsed.fragment or ".." in path or not path.startswith(self.path_prefix):
            raise VerificationError("paypal-cert-url is not a PayPal certificate path")
        return parsed

    async def fetch(self, url: str, now: datetime) -> bytes:
        """The PEM bundle at ``url`` (cached for ``ttl``), checked and capped."""
        parsed = self.check_url(url)
        key = str(parsed)
        cached = self._cached(key, now)
        if cached is not None:
            return cached
        self._raise_if_failed(key, now)
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:  # one download per URL even when a burst misses together
                cached = self._cached(key, now)
                if cached is not None:
                    return cached
                self._raise_if_failed(key, now)
                try:
                    pem = await self._download(parsed)
                except (Retryable, VerificationError) as exc:
                    self._remember_failure(key, now, exc)
                    raise
                self._store(key, now, pem)
                return pem
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    def _raise_if_failed(self, key: str, now: datetime) -> None:
        failed = self._failed.get(key)
        if failed is None:
            return
        failed_at, retryable, text = failed
        # abs(): callers racing on one URL carry `now`s a little apart, either way round.
        if abs(now - failed_at) >= self.negative_ttl:
            del self._failed[key]
            return
        text = f"{text} (not asked again for {self.negative_ttl.total_seconds():g} s)"
        raise Retryable(text) if retryable else VerificationError(text)

    def _remember_failure(
        self, key: str, now: datetime, exc: Retryable | VerificationError
    ) -> None:
        if self.negative_ttl <= timedelta(0):
            return
        self._failed[key] = (now, isinstance(exc, Retryable), str(exc))
        self._failed.move_to_end(key)
        while len(self._failed) > self.max_entries:
            self._failed.popitem(last=False)

    def _cached(self, key: str, now: datetime) -> bytes | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        fetched_at, pem = hit
        if not timedelta(0) <= now - fetched_at < self.ttl:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return pem

    def _store(self, key: str, now: datetime, pem: bytes) -> None:
        self._cache[key] = (now, pem)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _download(self, url: httpx.URL) -> bytes:
        try:
            async with self.client.stream("GET", url, follow_redirects=False) as response:
                _check_status(response.status_code)
                return await read_capped(response, self.max_bytes, "PayPal certificate")
        except httpx.TransportError as exc:
            raise Retryable(f"PayPal cert URL unreachable: {type(exc).__name__}") from exc
        except httpx.DecodingError as exc:
            raise VerificationError("PayPal cert URL sent an undecodable body") from exc


def _check_status(status: int) -> None:
    if status >= 500 or status == 429:
        raise Retryable(f"PayPal cert URL answered HTTP {status}")
    if status != 200:
        raise VerificationError(f"PayPal cert URL answered HTTP {status}")


async def read_capped(response: httpx.Response, max_bytes: int, what: str) -> bytes:
    """The streamed body, or VerificationError once it exceeds ``max_bytes``."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise VerificationError(f"{what} response is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise VerificationError(f"{what} response is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
