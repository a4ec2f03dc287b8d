"""XeroApi against a fake Xero (httpx.MockTransport): tokens, rotation, retries, statuses."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from paywatch.errors import CardDataError, PayloadError, Retryable, VerificationError
from paywatch.providers.thin import RateLimited, ResourceRef
from paywatch.providers.xero import XERO_API_BASE, XERO_TOKEN_URL, XeroApi, xero
from tests.builders.xero import (
    CLIENT_ID,
    CLIENT_SECRET,
    INVOICE_ID,
    REFRESH_TOKEN,
    TENANT_ID,
    WEBHOOK_KEY,
    FakeLedgerApi,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xero"
DOCUMENT = (FIXTURES / "invoice.overdue.json").read_bytes()
PATH = f"/api.xro/2.0/Invoices/{INVOICE_ID}"
URL = f"{XERO_API_BASE}/Invoices/{INVOICE_ID}"
SECRETS = {
    "webhook_key": WEBHOOK_KEY,
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "refresh_token": REFRESH_TOKEN,
}
REF = ResourceRef(
    provider="xero",
    tenant_ref=TENANT_ID,
    kind="invoice",
    resource_id=INVOICE_ID,
    event_type="INVOICE.UPDATE",
    event_time=datetime(2026, 6, 15, 9, 30, 12, tzinfo=UTC),
    index=0,
)
Handler = Callable[[httpx.Request], httpx.Response]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fake() -> FakeLedgerApi:
    fake = FakeLedgerApi()
    fake.resources[PATH] = (200, DOCUMENT)
    return fake


def _api(handler: Handler, clock: Clock | None = None, **options: object) -> XeroApi:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return xero.api(client, clock=clock or Clock(), **options)


def _calls(fake: FakeLedgerApi) -> list[str]:
    return [f"{r.method} {r.url}" for r in fake.requests]


async def test_first_fetch_refreshes_then_gets_the_invoice_for_the_tenant() -> None:
    fake = _fake()
    result = await _api(fake).fetch(REF, [SECRETS])
    assert _calls(fake) == [f"POST {XERO_TOKEN_URL}", f"GET {URL}"]
    token, get = fake.requests
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token.headers["authorization"] == f"Basic {basic}"
    assert parse_qs(token.content.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": [REFRESH_TOKEN],
    }
    assert get.headers["authorization"] == "Bearer access-1"
    assert get.headers["xero-tenant-id"] == TENANT_ID
    assert get.headers["accept"] == "application/json"
    assert (result.document, result.status, result.fetched) == (DOCUMENT, 200, True)
    assert result.content_type == "application/json"


async def test_rotated_refresh_token_is_returned_and_hidden_from_repr() -> None:
    fake = _fake()
    result = await _api(fake).fetch(REF, [SECRETS])
    assert result.rotated_secrets == {"refresh_token": fake.refresh_token}
    assert fake.refresh_token != REFRESH_TOKEN
    assert fake.refresh_token not in repr(result)


async def test_access_token_is_cached_until_expiry_then_refreshed_with_the_newest_token() -> None:
    fake, clock = _fake(), Clock()
    api = _api(fake, clock)
    first = await api.fetch(REF, [SECRETS])
    assert first.rotated_secrets is not None
    stored = {**SECRETS, **first.rotated_secrets}
    second = await api.fetch(REF, [stored])
    assert second.rotated_secrets is None
    lagging = await api.fetch(REF, [SECRETS])  # the caller has not stored it yet
    assert lagging.rotated_secrets == first.rotated_secrets
    assert fake.refreshes == 1
    clock.now += 1800 - 60 - 1
    await api.fetch(REF, [SECRETS])
    assert fake.refreshes == 1
    clock.now += 2
    # Refreshing with the revoked REFRESH_TOKEN would be invalid_grant: the cache uses ~1.
    third = await api.fetch(REF, [SECRETS])
    assert fake.refreshes == 2
    assert third.rotated_secrets == {"refresh_token": fake.refresh_token}


async def test_concurrent_fetches_refresh_once() -> None:
    fake = _fake()
    api = _api(fake)
    results = await asyncio.gather(*(api.fetch(REF, [SECRETS]) for _ in range(5)))
    assert fake.refreshes == 1 and all(r.status == 200 for r in results)


async def test_on_rotated_is_awaited_before_the_resource_request() -> None:
    fake = _fake()
    fake.resources[PATH] = (503, b"")
    stored: list[dict[str, str]] = []

    async def store(values: dict[str, str]) -> None:
        stored.append(values)

    with pytest.raises(Retryable):
        await _api(fake).fetch(REF, [SECRETS], on_rotated=store)
    assert stored == [{"refresh_token": fake.refresh_token}]


async def test_401_refreshes_once_and_retries() -> None:
    fake = _fake()
    api = _api(fake)
    await api.fetch(REF, [SECRETS])
    fake.revoke_tokens()
    fake.requests.clear()
    result = await api.fetch(REF, [SECRETS])
    assert result.status == 200
    assert _calls(fake) == [f"GET {URL}", f"POST {XERO_TOKEN_URL}", f"GET {URL}"]
    assert fake.requests[-1].headers["authorization"] == "Bearer access-2"


async def test_401_after_the_refresh_is_a_verification_error() -> None:
    fake = _fake()

    def handler(request: httpx.Request) -> httpx.Response:
        answer = fake(request)
        return answer if request.method == "POST" else httpx.Response(401)

    with pytest.raises(VerificationError, match="refreshed access token"):
        await _api(handler).fetch(REF, [SECRETS])
    assert fake.refreshes == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retryable(status: int) -> None:
    fake = _fake()
    fake.resources[PATH] = (status, b"<html>down</html>")
    with pytest.raises(Retryable, match=str(status)):
        await _api(fake).fetch(REF, [SECRETS])


async def test_429_is_rate_limited_with_retry_after() -> None:
    fake = _fake()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return fake(request)
        return httpx.Response(429, headers={"retry-after": "37"})

    with pytest.raises(RateLimited) as info:
        await _api(handler).fetch(REF, [SECRETS])
    assert info.value.retry_after == 37.0 and isinstance(info.value, Retryable)


@pytest.mark.parametrize("error", [httpx.ConnectError("down"), httpx.ReadTimeout("slow")])
async def test_network_failures_are_retryable(error: httpx.TransportError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(Retryable, match="unreachable"):
        await _api(handler).fetch(REF, [SECRETS])


async def test_token_endpoint_outage_is_retryable() -> None:
    with pytest.raises(Retryable, match="OAuth server answered HTTP 503"):
        await _api(lambda r: httpx.Response(503)).fetch(REF, [SECRETS])


async def test_refused_refresh_token_is_a_verification_error_without_secrets() -> None:
    fake = _fake()
    fake.refresh_token = "someone-else-rotated-it"
    with pytest.raises(VerificationError, match=r"\(invalid_grant\)") as info:
        await _api(fake).fetch(REF, [SECRETS])
    for secret in (CLIENT_SECRET, REFRESH_TOKEN, WEBHOOK_KEY):
        assert secret not in str(info.value)


async def test_an_older_secret_set_is_tried_when_the_newest_is_refused() -> None:
    fake = _fake()
    newest = {**SECRETS, "refresh_token": "typo"}
    result = await _api(fake).fetch(REF, [newest, SECRETS])
    assert result.status == 200
    assert result.rotated_secrets == {"refresh_token": fake.refresh_token}


@pytest.mark.parametrize(
    "secrets",
    [[], [{"webhook_key": WEBHOOK_KEY}], [{**SECRETS, "refresh_token": ""}]],
)
async def test_missing_oauth_credentials_are_a_verification_error(
    secrets: list[dict[str, str]],
) -> None:
    fake = _fake()
    with pytest.raises(VerificationError, match="no xero OAuth credentials"):
        await _api(fake).fetch(REF, secrets)
    assert fake.requests == []


async def test_404_is_recorded_not_raised() -> None:
    fake = _fake()
    del fake.resources[PATH]
    result = await _api(fake).fetch(REF, [SECRETS])
    assert (result.status, result.document) == (404, b"")
    assert xero.normalize_fetched("acme", REF, result.document, ("f", 0, 1), status=404) == []


async def test_other_client_errors_are_recorded_with_their_status() -> None:
    fake = _fake()
    fake.resources[PATH] = (400, b'{"Type":"ValidationException"}')
    result = await _api(fake).fetch(REF, [SECRETS])
    assert result.status == 400


async def test_403_is_a_verification_error() -> None:
    fake = _fake()
    fake.resources[PATH] = (403, b'{"Title":"Forbidden"}')
    with pytest.raises(VerificationError, match="403"):
        await _api(fake).fetch(REF, [SECRETS])


async def test_redirects_are_not_followed() -> None:
    fake = _fake()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return fake(request)
        return httpx.Response(302, headers={"location": "https://evil.example/steal"})

    with pytest.raises(VerificationError, match="redirected"):
        await _api(handler).fetch(REF, [SECRETS])


async def test_api_base_secret_and_token_url_option_point_at_a_sandbox() -> None:
    fake = FakeLedgerApi(token_url="http://127.0.0.1:9/token")
    fake.resources[f"/xero/Invoices/{INVOICE_ID}"] = (200, DOCUMENT)
    secrets = {**SECRETS, "api_base": "http://127.0.0.1:9/xero/"}
    result = await _api(fake, token_url="http://127.0.0.1:9/token").fetch(REF, [secrets])
    assert result.status == 200
    assert _calls(fake)[-1] == f"GET http://127.0.0.1:9/xero/Invoices/{INVOICE_ID}"


async def test_bad_api_base_is_a_verification_error() -> None:
    with pytest.raises(VerificationError, match="api_base"):
        await _api(_fake()).fetch(REF, [{**SECRETS, "api_base": "file:///etc/passwd"}])


async def test_oversized_documents_are_refused() -> None:
    fake = _fake()
    with pytest.raises(PayloadError, match="larger than 100 bytes"):
        await _api(fake, max_bytes=100).fetch(REF, [SECRETS])


async def test_documents_with_a_card_number_are_refused() -> None:
    fake = _fake()
    fake.resources[PATH] = (
        200,
        DOCUMENT.replace(b"Subscription June", b"card 4242 4242 4242 4242"),
    )
    with pytest.raises(CardDataError):
        await _api(fake).fetch(REF, [SECRETS])


async def test_references_of_another_provider_are_refused() -> None:
    with pytest.raises(ValueError, match="quickbooks"):
        await _api(_fake()).fetch(REF.model_copy(update={"provider": "quickbooks"}), [SECRETS])
