"""PayPal cert mode: the allow-listed, capped, cached fetch and ``verify_async`` around it."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import cache

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import Retryable, VerificationError
from paywatch.providers.paypal import CertFetcher, PayPalProvider, paypal
from tests.builders.paypal import (
    CERT_URL,
    WEBHOOK_ID,
    SamplePki,
    make_test_pki,
    paypal_body,
    paypal_payment_failed,
    sign_paypal,
)

NOW = datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC)
BODY = paypal_body(paypal_payment_failed())
OLD_WEBHOOK_ID = "1JE4291016473214C"
SECRETS = [{"webhook_id": WEBHOOK_ID}]

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@cache
def pki() -> SamplePki:
    return make_test_pki(NOW)


class Recorder:
    """A MockTransport handler that serves the bundle (or ``answer``) and logs every request."""

    def __init__(self, answer: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answer is not None:
            response = self.answer(request)
            return await response if isinstance(response, Awaitable) else response
        return httpx.Response(200, content=pki().bundle)


def _client(recorder: Recorder) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(recorder))


def _headers(body: bytes = BODY, webhook_id: str = WEBHOOK_ID, **kwargs: str) -> dict[str, str]:
    return sign_paypal(body, webhook_id, pki().leaf_key, **kwargs)


async def _verify(
    recorder: Recorder,
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    secrets: list[dict[str, str]] = SECRETS,
    now: datetime = NOW,
) -> None:
    async with _client(recorder) as client:
        await PayPalProvider(client).verify_async(
            body, _headers(body) if headers is None else headers, secrets, now
        )


async def test_good_delivery_is_accepted() -> None:
    recorder = Recorder()
    await _verify(recorder)
    assert [str(r.url) for r in recorder.requests] == [CERT_URL]
    assert recorder.requests[0].method == "GET"


async def test_rotation_any_secret_set_may_verify_with_one_fetch() -> None:
    recorder = Recorder()
    rotated = [{"webhook_id": WEBHOOK_ID}, {"webhook_id": OLD_WEBHOOK_ID}]
    await _verify(recorder, headers=_headers(webhook_id=OLD_WEBHOOK_ID), secrets=rotated)
    assert len(recorder.requests) == 1


async def test_wrong_webhook_id_is_rejected() -> None:
    with pytest.raises(VerificationError, match="does not match"):
        await _verify(Recorder(), headers=_headers(webhook_id="9ZZ99999ZZ999999Z"))


async def test_tampered_body_is_rejected() -> None:
    tampered = BODY.replace(b'"49.99"', b'"49.98"')
    assert tampered != BODY
    with pytest.raises(VerificationError, match="does not match"):
        await _verify(Recorder(), tampered, _headers(BODY))


async def test_reserialized_body_is_rejected() -> None:
    reserialized = json.dumps(json.loads(BODY), indent=1).encode()
    with pytest.raises(VerificationError, match="does not match"):
        await _verify(Recorder(), reserialized, _headers(BODY))


@pytest.mark.parametrize("secrets", [[], [{"webhook_id": ""}], [{"client_id": "x"}]])
async def test_no_webhook_id_is_rejected_before_any_request(
    secrets: list[dict[str, str]],
) -> None:
    recorder = Recorder()
    with pytest.raises(VerificationError, match="no PayPal webhook_id"):
        await _verify(recorder, secrets=secrets)
    assert recorder.requests == []


async def test_missing_header_is_rejected_before_any_request() -> None:
    recorder = Recorder()
    headers = _headers()
    del headers["paypal-transmission-sig"]
    with pytest.raises(VerificationError, match="missing paypal-transmission-sig"):
        await _verify(recorder, headers=headers)
    assert recorder.requests == []


async def test_unsupported_algorithm_is_rejected_before_any_request() -> None:
    recorder = Recorder()
    with pytest.raises(VerificationError, match="only SHA256withRSA"):
        await _verify(recorder, headers=_headers(auth_algo="SHA1withRSA"))
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://evil.example.com/v1/notifications/certs/CERT-1", "allow-listed"),
        ("https://api.paypal.com.evil.example/v1/notifications/certs/CERT-1", "allow-listed"),
        ("https://127.0.0.1/v1/notifications/certs/CERT-1", "allow-listed"),
        ("https://evil.example#@api.paypal.com/v1/notifications/certs/CERT-1", "allow-listed"),
        ("https://api.paypal.com\\@evil.example/v1/notifications/certs/CERT-1", "allow-listed"),
        ("http://api.paypal.com/v1/notifications/certs/CERT-1", "must use https"),
        ("file:///etc/passwd", "must use https"),
        ("https://api.paypal.com:8443/v1/notifications/certs/CERT-1", "port or user info"),
        ("https://me:pw@api.paypal.com/v1/notifications/certs/CERT-1", "port or user info"),
        ("https://api.paypal.com/v1/oauth2/token", "certificate path"),
        ("https://api.paypal.com/v1/notifications/certs/../../oauth2/token", "certificate path"),
        ("https://api.paypal.com/v1/notifications/certs/%2e%2e/x", "certificate path"),
        ("https://api.paypal.com/v1/notifications/certs/CERT-1?x=1", "certificate path"),
        ("https://api.paypal.com/v1/notifications/certs/CERT-1#frag", "certificate path"),
        ("https://[::1", "not a valid URL"),
    ],
)
async def test_cert_url_outside_the_allow_list_is_never_fetched(url: str, message: str) -> None:
    recorder = Recorder()
    with pytest.raises(VerificationError, match=message):
        await _verify(recorder, headers=_headers(cert_url=url))
    assert recorder.requests == []


@pytest.mark.parametrize(
    "host",
    ["api.paypal.com", "api-m.paypal.com", "api.sandbox.paypal.com", "API-M.Sandbox.PayPal.com"],
)
async def test_every_paypal_cert_host_is_allowed(host: str) -> None:
    url = f"https://{host}/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77"
    recorder = Recorder()
    await _verify(recorder, headers=_headers(cert_url=url))
    assert recorder.requests[0].url.host == host.lower()


async def test_cert_hosts_are_configurable() -> None:
    url = "https://paypal.test/v1/notifications/certs/CERT-1"
    async with _client(recorder := Recorder()) as client:
        provider = PayPalProvider(client, cert_hosts={"paypal.test"})
        await provider.verify_async(BODY, _headers(cert_url=url), SECRETS, NOW)
        with pytest.raises(VerificationError, match="allow-listed"):
            await provider.verify_async(BODY, _headers(cert_url=CERT_URL), SECRETS, NOW)
    assert len(recorder.requests) == 1


async def test_cache_hit_one_fetch_for_two_verifications() -> None:
    recorder = Recorder()
    async with _client(recorder) as client:
        provider = PayPalProvider(client)
        await provider.verify_async(BODY, _headers(), SECRETS, NOW)
        await provider.verify_async(BODY, _headers(), SECRETS, NOW + timedelta(minutes=5))
    assert len(recorder.requests) == 1


async def test_cache_expires_after_its_ttl() -> None:
    recorder = Recorder()
    async with _client(recorder) as client:
        fetcher = CertFetcher(client, ttl=timedelta(minutes=10))
        await fetcher.fetch(CERT_URL, NOW)
        await fetcher.fetch(CERT_URL, NOW + timedelta(minutes=9))
        assert len(recorder.requests) == 1
        await fetcher.fetch(CERT_URL, NOW + timedelta(minutes=10))
        await fetcher.fetch(CERT_URL, NOW - timedelta(minutes=1))  # clock went back: refetch
    assert len(recorder.requests) == 3


async def test_cache_is_bounded_least_recently_used_first() -> None:
    urls = [f"https://api.paypal.com/v1/notifications/certs/CERT-{i}" for i in range(3)]
    recorder = Recorder()
    async with _client(recorder) as client:
        fetcher = CertFetcher(client, max_entries=2)
        for url in (urls[0], urls[1], urls[0], urls[2], urls[0], urls[1]):
            await fetcher.fetch(url, NOW)
    fetched = [str(r.url)[-6:] for r in recorder.requests]
    assert fetched == ["CERT-0", "CERT-1", "CERT-2", "CERT-1"]


async def test_concurrent_misses_share_one_download() -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        return httpx.Response(200, content=pki().bundle)

    recorder = Recorder(slow)
    async with _client(recorder) as client:
        provider = PayPalProvider(client)
        await asyncio.gather(
            *(provider.verify_async(BODY, _headers(), SECRETS, NOW) for _ in range(5))
        )
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("response", "error", "message"),
    [
        (httpx.Response(404), VerificationError, "HTTP 404"),
        (httpx.Response(302, headers={"location": "https://evil.example/c"}), VerificationError,
         "HTTP 302"),
        (httpx.Response(500), Retryable, "HTTP 500"),
        (httpx.Response(503), Retryable, "HTTP 503"),
        (httpx.Response(429), Retryable, "HTTP 429"),
        (httpx.Response(200, content=b"<html>not a cert</html>"), VerificationError, "PEM"),
    ],
)  # fmt: skip
async def test_cert_url_answers(
    response: httpx.Response, error: type[Exception], message: str
) -> None:
    recorder = Recorder(lambda _: response)
    with pytest.raises(error, match=message):
        await _verify(recorder)
    assert len(recorder.requests) == 1  # a redirect is never followed


async def test_network_failure_is_retryable_negatively_cached_then_retried() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    recorder = Recorder(refuse)
    async with _client(recorder) as client:
        provider = PayPalProvider(client)
        with pytest.raises(Retryable, match="unreachable"):
            await provider.verify_async(BODY, _headers(), SECRETS, NOW)
        recorder.answer = None
        with pytest.raises(Retryable):  # within the negative cache: no second download
            await provider.verify_async(BODY, _headers(), SECRETS, NOW + timedelta(seconds=30))
        assert len(recorder.requests) == 1
        await provider.verify_async(BODY, _headers(), SECRETS, NOW + timedelta(seconds=61))
    assert len(recorder.requests) == 2


async def test_oversize_response_is_refused_by_its_declared_length() -> None:
    big = httpx.Response(200, content=b"x" * 70_000)
    with pytest.raises(VerificationError, match="larger than"):
        await _verify(Recorder(lambda _: big))


async def test_oversize_response_is_refused_while_streaming() -> None:
    async def chunks() -> object:
        for _ in range(100):
            yield b"x" * 1_000

    streamed = httpx.Response(200, content=chunks())  # type: ignore[arg-type]
    assert "content-length" not in streamed.headers
    with pytest.raises(VerificationError, match="larger than"):
        await _verify(Recorder(lambda _: streamed))


async def test_expired_certificate_fails_through_the_provider() -> None:
    with pytest.raises(VerificationError, match="has expired"):
        await _verify(Recorder(), now=NOW + timedelta(days=400))


async def test_wrong_common_name_fails_through_the_provider() -> None:
    other = make_test_pki(NOW, cn="attacker.example.com")
    headers = sign_paypal(BODY, WEBHOOK_ID, other.leaf_key)
    recorder = Recorder(lambda _: httpx.Response(200, content=other.bundle))
    with pytest.raises(VerificationError, match="not a PayPal signing name"):
        await _verify(recorder, headers=headers)


async def test_accepted_names_and_pinned_roots_are_constructor_arguments() -> None:
    async with _client(Recorder()) as client:
        pinned = PayPalProvider(client, trust_roots=[make_test_pki(NOW).ca_cert])
        with pytest.raises(VerificationError, match="pinned root"):
            await pinned.verify_async(BODY, _headers(), SECRETS, NOW)
        renamed = PayPalProvider(client, accepted_cns={"messageverificationcerts.paypal.com"})
        with pytest.raises(VerificationError, match="not a PayPal signing name"):
            await renamed.verify_async(BODY, _headers(), SECRETS, NOW)


async def test_provider_tolerance_applies_to_cert_mode() -> None:
    async with _client(Recorder()) as client:
        strict = PayPalProvider(client, tolerance=timedelta(hours=1))
        with pytest.raises(VerificationError, match="older than"):
            await strict.verify_async(BODY, _headers(), SECRETS, NOW + timedelta(hours=2))


def test_module_instance_creates_no_client_at_import() -> None:
    assert paypal._http is None and paypal._certs is None and paypal._api is None


async def test_own_client_is_closed_injected_one_is_not() -> None:
    own = PayPalProvider()
    fetcher, api = own.cert_fetcher(), own.verify_api()
    assert fetcher.client is api.client
    await own.aclose()
    assert fetcher.client.is_closed
    reopened = own.cert_fetcher()  # a later verification gets a fresh client
    assert reopened is not fetcher and not reopened.client.is_closed
    assert own.verify_api().client is reopened.client
    await own.aclose()
    async with _client(Recorder()) as client:
        injected = PayPalProvider(client)
        injected.cert_fetcher()
        await injected.aclose()
        assert not client.is_closed


def test_fetcher_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="positive"):
        CertFetcher(httpx.AsyncClient(), max_bytes=0)


_HEADER_VALUES = st.fixed_dictionaries(
    {"paypal-cert-url": st.sampled_from([CERT_URL, "https://evil.example/x", "x"])},
    optional={
        "paypal-transmission-id": st.text(max_size=40),
        "paypal-transmission-time": st.text(max_size=30),
        "paypal-transmission-sig": st.binary(min_size=1, max_size=300).map(
            lambda b: base64.b64encode(b).decode()
        ),
        "paypal-auth-algo": st.sampled_from(["SHA256withRSA", "RSA"]),
    },
)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=1_024), headers=_HEADER_VALUES)
def test_random_deliveries_only_ever_raise_verification_error(
    body: bytes, headers: dict[str, str]
) -> None:
    async def attempt() -> None:
        await _verify(Recorder(), body, headers)

    with pytest.raises(VerificationError):
        asyncio.run(attempt())
