"""PayPal API mode: OAuth token + verify-webhook-signature through an injected transport."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from urllib.parse import parse_qs

import httpx
import pytest

from paywatch.errors import Retryable, VerificationError
from paywatch.providers.paypal import PayPalProvider
from tests.builders.paypal import (
    CERT_URL,
    WEBHOOK_ID,
    SamplePki,
    make_test_pki,
    mock_paypal,
    paypal_body,
    paypal_payment_failed,
    sign_paypal,
)

NOW = datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC)
BODY = paypal_body(paypal_payment_failed())
API_BASE = "https://api-m.sandbox.paypal.com"
CLIENT_ID, CLIENT_SECRET = "test-client", "test-secret"
API_SET = {
    "webhook_id": WEBHOOK_ID,
    "api_base": API_BASE,
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
}
TOKEN_URL = API_BASE + "/v1/oauth2/token"
VERIFY_URL = API_BASE + "/v1/notifications/verify-webhook-signature"

Answer = Callable[[httpx.Request], httpx.Response | None]


@cache
def pki() -> SamplePki:
    return make_test_pki(NOW)


class FakePayPal:
    """``mock_paypal`` with a request log and per-test overrides (``answer`` returning None
    falls through to the mock)."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer
        self.mock = mock_paypal(pki().bundle, now=NOW)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        override = self.answer(request) if self.answer else None
        return override if override is not None else self.mock(request)

    def urls(self) -> list[str]:
        return [f"{r.method} {r.url}" for r in self.requests]


def _headers(body: bytes = BODY, webhook_id: str = WEBHOOK_ID) -> dict[str, str]:
    return sign_paypal(body, webhook_id, pki().leaf_key)


async def _verify(
    fake: FakePayPal,
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    secrets: list[dict[str, str]] | None = None,
    now: datetime = NOW,
    **kwargs: object,
) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
        provider = PayPalProvider(client, **kwargs)  # type: ignore[arg-type]
        await provider.verify_async(
            body,
            _headers(body) if headers is None else headers,
            [API_SET] if secrets is None else secrets,
            now,
        )


async def test_success_posts_the_documented_request() -> None:
    fake = FakePayPal()
    await _verify(fake)
    assert fake.urls() == [f"POST {TOKEN_URL}", f"POST {VERIFY_URL}"]
    token, verify = fake.requests
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token.headers["authorization"] == f"Basic {basic}"
    assert parse_qs(token.content.decode()) == {"grant_type": ["client_credentials"]}
    assert verify.headers["authorization"] == "Bearer A21AAtest-token"
    assert verify.headers["content-type"] == "application/json"
    sent = json.loads(verify.content)
    headers = _headers()
    assert sent == {
        "auth_algo": "SHA256withRSA",
        "cert_url": CERT_URL,
        "transmission_id": headers["paypal-transmission-id"],
        "transmission_sig": headers["paypal-transmission-sig"],
        "transmission_time": headers["paypal-transmission-time"],
        "webhook_id": WEBHOOK_ID,
        "webhook_event": json.loads(BODY),
    }


async def test_the_event_is_sent_as_the_raw_bytes_received() -> None:
    # A float that does not round-trip and spaces: re-serialising would change the CRC.
    body = BODY[:-1] + b', "extra": 1.10}'
    assert json.dumps(json.loads(body)).encode() != body
    fake = FakePayPal()
    await _verify(fake, body)
    assert fake.requests[-1].content.endswith(b',"webhook_event":' + body + b"}")


async def test_failure_is_rejected() -> None:
    with pytest.raises(VerificationError, match="answered FAILURE"):
        await _verify(FakePayPal(), headers=_headers(webhook_id="9ZZ99999ZZ999999Z"))


async def test_tampered_body_is_rejected_by_paypal() -> None:
    tampered = BODY.replace(b"PAYMENT_DENIED", b"PAYMENT_DENIEX")
    with pytest.raises(VerificationError, match="answered FAILURE"):
        await _verify(FakePayPal(), tampered, _headers(BODY))


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_verify_api_outage_is_retryable(status: int) -> None:
    fake = FakePayPal(lambda r: httpx.Response(status) if "verify" in r.url.path else None)
    with pytest.raises(Retryable, match=f"HTTP {status}"):
        await _verify(fake)


async def test_token_endpoint_outage_is_retryable() -> None:
    fake = FakePayPal(lambda r: httpx.Response(500) if "oauth2" in r.url.path else None)
    with pytest.raises(Retryable, match="HTTP 500"):
        await _verify(fake)
    assert len(fake.requests) == 1


async def test_network_failure_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(Retryable, match="unreachable"):
        await _verify(FakePayPal(refuse))


async def test_rejected_credentials_are_a_verification_error_without_the_secret() -> None:
    wrong = {**API_SET, "client_secret": "not-the-secret"}
    with pytest.raises(VerificationError, match="rejected the tenant's client_id") as info:
        await _verify(FakePayPal(), secrets=[wrong])
    assert "not-the-secret" not in str(info.value)


async def test_other_client_errors_are_verification_errors() -> None:
    fake = FakePayPal(lambda r: httpx.Response(400) if "verify" in r.url.path else None)
    with pytest.raises(VerificationError, match="HTTP 400"):
        await _verify(fake)


@pytest.mark.parametrize(
    "answer", [b"not json", b"[]", b'{"verification_status":"success"}', b"{}"]
)
async def test_unexpected_answers_are_not_success(answer: bytes) -> None:
    def reply(request: httpx.Request) -> httpx.Response | None:
        return httpx.Response(200, content=answer) if "verify" in request.url.path else None

    with pytest.raises(VerificationError, match="FAILURE"):
        await _verify(FakePayPal(reply))


async def test_token_is_cached_until_shortly_before_it_expires() -> None:
    fake = FakePayPal()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
        provider = PayPalProvider(client)
        for minutes in (0, 60, 60 * 8):  # expires_in 32400 s = 9 h, renewed 60 s early
            await provider.verify_async(
                BODY, _headers(), [API_SET], NOW + timedelta(minutes=minutes)
            )
        assert sum("oauth2" in u for u in fake.urls()) == 1
        late = NOW + timedelta(seconds=32_400 - 59)
        await provider.verify_async(BODY, _headers(), [API_SET], late)
        assert sum("oauth2" in u for u in fake.urls()) == 2


async def test_rotated_client_secret_does_not_reuse_the_old_token() -> None:
    fake = FakePayPal()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
        provider = PayPalProvider(client)
        await provider.verify_async(BODY, _headers(), [API_SET], NOW)
        with pytest.raises(VerificationError, match="rejected"):
            await provider.verify_async(BODY, _headers(), [{**API_SET, "client_secret": "x"}], NOW)


async def test_a_revoked_token_is_replaced_once() -> None:
    revoked = {"n": 0}

    def first_token_revoked(request: httpx.Request) -> httpx.Response | None:
        if "verify" in request.url.path and revoked["n"] == 0:
            revoked["n"] += 1
            return httpx.Response(401)
        return None

    fake = FakePayPal(first_token_revoked)
    await _verify(fake)
    assert [u.split("/")[-1] for u in fake.urls()] == [
        "token",
        "verify-webhook-signature",
        "token",
        "verify-webhook-signature",
    ]


async def test_api_base_defaults_to_live_paypal() -> None:
    fake = FakePayPal()
    live = {k: v for k, v in API_SET.items() if k != "api_base"}
    await _verify(fake, secrets=[live])
    assert {r.url.host for r in fake.requests} == {"api-m.paypal.com"}


async def test_default_api_base_is_a_constructor_argument() -> None:
    fake = FakePayPal()
    live = {k: v for k, v in API_SET.items() if k != "api_base"}
    await _verify(fake, secrets=[live], default_api_base="http://paypal.local:9000/")
    assert {str(r.url)[:26] for r in fake.requests} == {"http://paypal.local:9000/v"}


async def test_bad_api_base_is_refused_before_any_request() -> None:
    fake = FakePayPal()
    with pytest.raises(VerificationError, match="http"):
        await _verify(fake, secrets=[{**API_SET, "api_base": "ftp://paypal.example"}])
    assert fake.requests == []


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe{}", b'\xef\xbb\xbf{"a":1}'])
async def test_a_body_that_is_not_a_json_object_cannot_be_sent(body: bytes) -> None:
    fake = FakePayPal()
    with pytest.raises(VerificationError, match="JSON"):
        await _verify(fake, body)
    assert fake.requests == []


async def test_api_mode_fetches_no_certificate() -> None:
    fake = FakePayPal()
    await _verify(fake)
    assert not any(r.method == "GET" for r in fake.requests)


async def test_sets_are_tried_newest_first_across_modes() -> None:
    old_cert_set = {"webhook_id": "1JE4291016473214C"}
    fake = FakePayPal()
    await _verify(fake, headers=_headers(webhook_id="1JE4291016473214C"),
                  secrets=[API_SET, old_cert_set])  # fmt: skip
    assert fake.urls() == [f"POST {TOKEN_URL}", f"POST {VERIFY_URL}", f"GET {CERT_URL}"]


async def test_a_transient_failure_wins_over_definitive_ones() -> None:
    down = FakePayPal(lambda r: httpx.Response(503) if "verify" in r.url.path else None)
    with pytest.raises(Retryable, match="unavailable"):
        await _verify(down, secrets=[API_SET, {"webhook_id": "OTHER"}])


async def test_a_transient_failure_does_not_hide_another_set_that_verifies() -> None:
    down = FakePayPal(lambda r: httpx.Response(503) if "verify" in r.url.path else None)
    await _verify(down, secrets=[API_SET, {"webhook_id": WEBHOOK_ID}])


async def test_all_sets_failing_reports_the_newest_sets_reason() -> None:
    with pytest.raises(VerificationError, match="answered FAILURE"):
        await _verify(
            FakePayPal(),
            headers=_headers(webhook_id="9ZZ99999ZZ999999Z"),
            secrets=[API_SET, {"webhook_id": "OTHER"}],
        )


async def test_provider_tolerance_applies_to_api_mode() -> None:
    with pytest.raises(VerificationError, match="older than"):
        await _verify(FakePayPal(), now=NOW + timedelta(days=5), tolerance=timedelta(days=4))
