"""Issue 12 item 5, unit level: token buckets, the LRU secret cache, tenant-name checks and
the PayPal certificate fetcher's per-URL locks and negative cache."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from paywatch.api.ingest.body import BodyTimeout, read_body
from paywatch.api.ingest.webhooks import valid_tenant
from paywatch.api.ratelimit import TokenBuckets, retry_after
from paywatch.deadlines import Deadlines
from paywatch.errors import ConfigError, Retryable, VerificationError
from paywatch.providers.paypal import CertFetcher
from paywatch.tenants.cache import SecretCache
from paywatch.tenants.store import check_tenant_name
from tests.builders.paypal import CERT_URL

NOW = datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC)
OTHER_URL = "https://api.paypal.com/v1/notifications/certs/CERT-other"


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# --- token buckets -------------------------------------------------------------------


def test_bucket_admits_the_burst_then_refuses_with_the_wait_for_one_token() -> None:
    clock = Clock()
    buckets = TokenBuckets(2.0, 3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # 1 token at 2/s
    clock.now += 0.25
    assert buckets.take("a") == pytest.approx(0.25)  # half a token refilled
    clock.now += 0.25
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)


def test_bucket_refill_is_capped_at_the_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(10.0, 4, clock=clock)
    for _ in range(4):
        buckets.take("a")
    clock.now += 3_600
    admitted = sum(buckets.take("a") == 0.0 for _ in range(10))
    assert admitted == 4


def test_refused_requests_do_not_consume_tokens() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 1, clock=clock)
    assert buckets.take("a") == 0.0
    for _ in range(50):
        assert buckets.take("a") > 0
    clock.now += 1.0
    assert buckets.take("a") == 0.0


def test_tenants_have_their_own_buckets() -> None:
    buckets = TokenBuckets(1.0, 2, clock=Clock())
    assert buckets.take("a") == 0.0 and buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0 and buckets.take("b") == 0.0


def test_buckets_are_bounded_least_recently_used_first() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 1, max_keys=2, clock=clock)
    buckets.take("hot")
    buckets.take("cold")
    buckets.take("hot")  # refused, but "hot" is now the most recently used
    buckets.take("new")  # evicts "cold"
    assert len(buckets) == 2
    assert buckets.take("hot") > 0  # still limited: its bucket was kept


def test_rate_zero_is_off_and_stores_nothing() -> None:
    buckets = TokenBuckets(0.0, 1)
    assert not buckets.enabled
    assert all(buckets.take(f"t{i}") == 0.0 for i in range(1_000))
    assert len(buckets) == 0


def test_refusals_are_counted() -> None:
    registry = CollectorRegistry()
    counter = Counter("refused", "refused", registry=registry)
    buckets = TokenBuckets(1.0, 1, clock=Clock(), refused=counter)
    for _ in range(4):
        buckets.take("a")
    assert registry.get_sample_value("refused_total") == 3.0


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBuckets(1.0, 0)
    with pytest.raises(ValueError, match="rate"):
        TokenBuckets(-1.0, 1)


@pytest.mark.parametrize(
    ("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (2.5, 3), (59.99, 60)]
)
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: int) -> None:
    assert retry_after(wait) == header


# --- tenant names --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "acme", "acme-eu_2", "0tenant", "t" * 63])
def test_names_tenant_create_accepts_are_valid(name: str) -> None:
    assert check_tenant_name(name) == name
    assert valid_tenant(name)


@pytest.mark.parametrize(
    "name",
    ["", "Acme", "-acme", "_acme", "acme.eu", "acme eu", "t" * 64, "ac%2Fme", "é", "acme\n"],
)
def test_names_no_tenant_can_have_are_invalid(name: str) -> None:
    assert not valid_tenant(name)
    with pytest.raises(ConfigError):
        check_tenant_name(name)


# --- the secret cache --------------------------------------------------------------------


class CountingLoader:
    """A loader that knows "hot" and counts every call per tenant."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def __call__(self, tenant: str, provider: str) -> list[dict[str, str]] | None:
        self.calls[tenant] = self.calls.get(tenant, 0) + 1
        return [{"signing_secret": "s"}] if tenant == "hot" else None


async def test_a_flood_of_random_names_leaves_the_hot_tenant_cached() -> None:
    loader = CountingLoader()
    cache = SecretCache(loader, ttl=3_600, max_entries=100)
    assert await cache.get("hot", "stripe") == [{"signing_secret": "s"}]
    for i in range(5_000):
        assert await cache.get(f"random{i}", "stripe") is None
        if i % 50 == 0:
            await cache.get("hot", "stripe")  # a tenant sending webhooks all along
    assert loader.calls["hot"] == 1
    assert len(cache) == 100
    assert ("hot", "stripe") in cache


async def test_the_least_recently_used_entry_is_evicted() -> None:
    loader = CountingLoader()
    cache = SecretCache(loader, ttl=3_600, max_entries=2)
    await cache.get("a", "stripe")
    await cache.get("b", "stripe")
    await cache.get("a", "stripe")  # a is now newer than b
    await cache.get("c", "stripe")  # evicts b
    assert ("a", "stripe") in cache and ("c", "stripe") in cache
    assert ("b", "stripe") not in cache
    await cache.get("a", "stripe")
    await cache.get("b", "stripe")
    assert loader.calls == {"a": 1, "b": 2, "c": 1}


async def test_entries_expire_after_the_ttl_unknown_tenants_too() -> None:
    loader = CountingLoader()
    clock = Clock()
    cache = SecretCache(loader, ttl=5.0, clock=clock)
    for _ in range(3):
        await cache.get("hot", "stripe")
        await cache.get("ghost", "stripe")
    clock.now += 4.9
    await cache.get("hot", "stripe")
    await cache.get("ghost", "stripe")
    assert loader.calls == {"hot": 1, "ghost": 1}
    clock.now += 0.2
    await cache.get("hot", "stripe")
    await cache.get("ghost", "stripe")
    assert loader.calls == {"hot": 2, "ghost": 2}


# --- the body read timeout ---------------------------------------------------------------


async def test_a_trickled_body_times_out_and_a_prompt_one_does_not() -> None:
    async def trickle() -> dict[str, object]:
        await asyncio.sleep(0.05)  # the slow client being simulated, not a wait for a condition
        return {"type": "http.request", "body": b"x", "more_body": True}

    with pytest.raises(BodyTimeout):
        await read_body("1000", trickle, 256 * 1024, Deadlines(0.3))

    parts = [b"ab", b"cd"]

    async def prompt() -> dict[str, object]:
        chunk = parts.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    assert await read_body("4", prompt, 256 * 1024, Deadlines(5.0)) == b"abcd"


# --- PayPal certificate fetches --------------------------------------------------------------


class Recorder:
    """A MockTransport handler counting requests per URL; ``gates`` hold a URL's answer."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[str] = []
        self.status = status
        self.gates: dict[str, asyncio.Event] = {}
        self.arrived = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requests.append(url)
        self.arrived.set()
        gate = self.gates.get(url)
        if gate is not None:
            await gate.wait()
        return httpx.Response(self.status, content=b"bundle")


def _fetcher(recorder: Recorder, negative_ttl: timedelta = timedelta(seconds=60)) -> CertFetcher:
    client = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    return CertFetcher(client, negative_ttl=negative_ttl)


async def test_a_slow_url_does_not_hold_up_another_one() -> None:
    recorder = Recorder()
    recorder.gates[CERT_URL] = asyncio.Event()
    fetcher = _fetcher(recorder)
    slow = [asyncio.create_task(fetcher.fetch(CERT_URL, NOW)) for _ in range(5)]
    # With one lock for every URL this waited for the slow URL's download.
    assert await asyncio.wait_for(fetcher.fetch(OTHER_URL, NOW), timeout=10) == b"bundle"
    recorder.gates[CERT_URL].set()
    assert await asyncio.gather(*slow) == [b"bundle"] * 5
    assert sorted(recorder.requests) == sorted([CERT_URL, OTHER_URL])  # one download per URL
    assert fetcher._locks == {}  # no lock outlives its callers


async def test_a_failed_url_is_not_fetched_again_within_the_negative_ttl() -> None:
    recorder = Recorder(status=503)
    fetcher = _fetcher(recorder, negative_ttl=timedelta(seconds=60))
    with pytest.raises(Retryable, match="HTTP 503"):
        await fetcher.fetch(CERT_URL, NOW)
    for seconds in (0, 1, 59):
        with pytest.raises(Retryable, match="not asked again"):
            await fetcher.fetch(CERT_URL, NOW + timedelta(seconds=seconds))
    with pytest.raises(Retryable, match="not asked again"):  # a racing caller's earlier now
        await fetcher.fetch(CERT_URL, NOW - timedelta(milliseconds=5))
    assert recorder.requests == [CERT_URL]
    recorder.status = 200
    assert await fetcher.fetch(OTHER_URL, NOW) == b"bundle"  # other URLs are not affected
    assert await fetcher.fetch(CERT_URL, NOW + timedelta(seconds=60)) == b"bundle"
    assert recorder.requests == [CERT_URL, OTHER_URL, CERT_URL]


async def test_a_refused_url_stays_refused_without_requests() -> None:
    recorder = Recorder(status=404)
    fetcher = _fetcher(recorder)
    for _ in range(3):
        with pytest.raises(VerificationError, match="HTTP 404"):
            await fetcher.fetch(CERT_URL, NOW)
    assert recorder.requests == [CERT_URL]


async def test_a_burst_on_a_failing_url_costs_one_request() -> None:
    recorder = Recorder(status=500)
    recorder.gates[CERT_URL] = asyncio.Event()
    fetcher = _fetcher(recorder)
    burst = [asyncio.create_task(fetcher.fetch(CERT_URL, NOW)) for _ in range(20)]
    # The first caller is in its download, the others queue on the URL's lock.
    await asyncio.wait_for(recorder.arrived.wait(), timeout=10)
    assert fetcher._locks[str(httpx.URL(CERT_URL))][1] == [20]  # all 20 on one lock
    recorder.gates[CERT_URL].set()
    results = await asyncio.gather(*burst, return_exceptions=True)
    assert all(isinstance(r, Retryable) for r in results)
    assert recorder.requests == [CERT_URL]
    assert fetcher._locks == {}


async def test_negative_ttl_zero_turns_the_negative_cache_off() -> None:
    recorder = Recorder(status=503)
    fetcher = _fetcher(recorder, negative_ttl=timedelta(0))
    for _ in range(2):
        with pytest.raises(Retryable):
            await fetcher.fetch(CERT_URL, NOW)
    assert len(recorder.requests) == 2
