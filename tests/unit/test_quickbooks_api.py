"""QuickBooksApi against a fake Intuit (httpx.MockTransport): URLs, tokens, rotation, statuses."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from paywatch.errors import CardDataError, Retryable, VerificationError
from paywatch.providers.quickbooks import (
    MINOR_VERSION,
    QBO_API_BASE,
    QBO_TOKEN_URL,
    QuickBooksApi,
    quickbooks,
)
from paywatch.providers.thin import NOT_FETCHED, RateLimited, ResourceRef
from tests.builders.quickbooks import (
    CLIENT_ID,
    CLIENT_SECRET,
    INVOICE_ID,
    PAYMENT_ID,
    REALM_ID,
    REFRESH_TOKEN,
    VERIFIER_TOKEN,
    fake_quickbooks,
    qbo_path,
)
from tests.builders.xero import FakeLedgerApi

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "quickbooks"
DOCUMENT = (FIXTURES / "invoice.overdue.json").read_bytes()
PAYMENT = (FIXTURES / "payment.json").read_bytes()
FAULT_610 = (FIXTURES / "fault.object_not_found.json").read_bytes()
PATH = qbo_path("invoice", INVOICE_ID)
URL = f"{QBO_API_BASE}/v3/company/{REALM_ID}/invoice/{INVOICE_ID}?minorversion=75"
SECRETS = {
    "verifier_token": VERIFIER_TOKEN,
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "refresh_token": REFRESH_TOKEN,
}
REF = ResourceRef(
    provider="quickbooks",
    tenant_ref=REALM_ID,
    kind="invoice",
    resource_id=INVOICE_ID,
    event_type="Invoice.Update",
    event_time=datetime(2026, 6, 15, 9, 30, 12, tzinfo=UTC),
    index=0,
)
COORDS = ("webhooks.fetched", 0, 1)
Handler = Callable[[httpx.Request], httpx.Response]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def _fake(*, rotate: bool = False) -> FakeLedgerApi:
    fake = fake_quickbooks(rotate=rotate)
    fake.resources[PATH] = (200, DOCUMENT)
    fake.resources[qbo_path("payment", PAYMENT_ID)] = (200, PAYMENT)
    return fake


def _api(handler: Handler, clock: Clock | None = None, **options: object) -> QuickBooksApi:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return quickbooks.api(client, clock=clock or Clock(), **options)


def _calls(fake: FakeLedgerApi) -> list[str]:
    return [f"{r.method} {r.url}" for r in fake.requests]


def _token_then(
    status: int, headers: dict[str, str] | None = None
) -> tuple[FakeLedgerApi, Handler]:
    fake = _fake()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return fake(request)
        fake.requests.append(request)
        return httpx.Response(status, headers=headers)

    return fake, handler


# --- the request --------------------------------------------------------------------------------


async def test_first_fetch_refreshes_then_gets_the_invoice_of_the_realm() -> None:
    fake = _fake()
    result = await _api(fake).fetch(REF, [SECRETS])
    assert _calls(fake) == [f"POST {QBO_TOKEN_URL}", f"GET {URL}"]
    token, get = fake.requests
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token.headers["authorization"] == f"Basic {basic}"
    assert parse_qs(token.content.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": [REFRESH_TOKEN],
    }
    assert get.headers["authorization"] == "Bearer access-1"
    assert get.headers["accept"] == "application/json"  # QBO answers XML otherwise
    assert "xero-tenant-id" not in get.headers
    assert (result.document, result.status, result.fetched) == (DOCUMENT, 200, True)
    assert result.content_type == "application/json"
    assert (MINOR_VERSION, QuickBooksApi.default_api_base) == (75, QBO_API_BASE)


async def test_payments_are_fetched_from_the_payment_endpoint() -> None:
    fake = _fake()
    ref = REF.model_copy(
        update={"kind": "payment", "resource_id": PAYMENT_ID, "event_type": "Payment.Create"}
    )
    result = await _api(fake).fetch(ref, [SECRETS])
    assert _calls(fake)[-1] == (
        f"GET {QBO_API_BASE}/v3/company/{REALM_ID}/payment/{PAYMENT_ID}?minorversion=75"
    )
    assert result.document == PAYMENT
    assert [r.resource_id for r in quickbooks.follow_ups(ref, result.document)] == ["129", "130"]


async def test_minor_version_is_an_option() -> None:
    fake = _fake()
    fake.resources[qbo_path("invoice", INVOICE_ID, minor_version=80)] = (200, DOCUMENT)
    result = await _api(fake, minor_version=80).fetch(REF, [SECRETS])
    assert result.status == 200
    assert fake.requests[-1].url.params["minorversion"] == "80"


async def test_path_segments_are_percent_encoded() -> None:
    fake = _fake()
    ref = REF.model_copy(update={"tenant_ref": "93 41/x", "resource_id": "../1?a=b#c"})
    result = await _api(fake).fetch(ref, [SECRETS])
    assert result.status == 404  # nothing there: the ids did not escape their segments
    assert fake.requests[-1].url.raw_path == (
        b"/v3/company/93%2041%2Fx/invoice/..%2F1%3Fa%3Db%23c?minorversion=75"
    )


async def test_api_base_secret_and_token_url_option_point_at_the_sandbox() -> None:
    token_url = "https://sandbox.example/oauth2/v1/tokens/bearer"
    fake = FakeLedgerApi(
        token_url=token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=REFRESH_TOKEN,
        rotate=False,
    )
    fake.resources[PATH] = (200, DOCUMENT)
    sandbox = "https://sandbox-quickbooks.api.intuit.com"
    secrets = {**SECRETS, "api_base": f" {sandbox}/ "}
    result = await _api(fake, token_url=token_url).fetch(REF, [secrets])
    assert result.status == 200
    assert _calls(fake) == [
        f"POST {token_url}",
        f"GET {sandbox}/v3/company/{REALM_ID}/invoice/{INVOICE_ID}?minorversion=75",
    ]


async def test_bad_api_base_is_a_verification_error() -> None:
    fake = _fake()
    with pytest.raises(VerificationError, match="api_base"):
        await _api(fake).fetch(REF, [{**SECRETS, "api_base": "ftp://quickbooks.example"}])


async def test_deletions_are_not_fetched() -> None:
    fake = _fake()
    ref = REF.model_copy(update={"event_type": "Invoice.Delete", "fetch": False})
    result = await _api(fake).fetch(ref, [SECRETS])
    assert (result.document, result.status, result.fetched) == (b"", NOT_FETCHED, False)
    assert fake.requests == []


# --- tokens and rotation ------------------------------------------------------------------------


async def test_without_rotation_nothing_is_reported_and_the_token_is_cached() -> None:
    fake, clock = _fake(), Clock()
    api = _api(fake, clock)
    stored: list[dict[str, str]] = []

    async def store(values: dict[str, str]) -> None:
        stored.append(values)

    first = await api.fetch(REF, [SECRETS], on_rotated=store)
    second = await api.fetch(REF, [SECRETS], on_rotated=store)
    assert (first.rotated_secrets, second.rotated_secrets, stored) == (None, None, [])
    assert fake.refresh_token == REFRESH_TOKEN and fake.refreshes == 1
    clock.now += 3600 - 60 - 1  # Intuit access tokens live an hour; refreshed 60 s early
    await api.fetch(REF, [SECRETS])
    assert fake.refreshes == 1
    clock.now += 2
    await api.fetch(REF, [SECRETS])
    assert fake.refreshes == 2
    assert fake.requests[-1].headers["authorization"] == "Bearer access-2"


async def test_a_rotated_refresh_token_is_returned_stored_and_hidden() -> None:
    fake = _fake(rotate=True)
    api = _api(fake)
    stored: list[dict[str, str]] = []

    async def store(values: dict[str, str]) -> None:
        stored.append(values)

    result = await api.fetch(REF, [SECRETS], on_rotated=store)
    assert fake.refresh_token != REFRESH_TOKEN
    assert result.rotated_secrets == {"refresh_token": fake.refresh_token}
    assert stored == [{"refresh_token": fake.refresh_token}]
    assert fake.refresh_token not in repr(result)
    # Reported until the caller's secrets catch up, without another refresh.
    lagging = await api.fetch(REF, [SECRETS])
    assert lagging.rotated_secrets == result.rotated_secrets and fake.refreshes == 1
    caught_up = await api.fetch(REF, [{**SECRETS, **result.rotated_secrets}])
    assert caught_up.rotated_secrets is None


async def test_rotation_is_stored_even_when_the_resource_request_fails() -> None:
    fake = _fake(rotate=True)
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
    assert _calls(fake) == [f"GET {URL}", f"POST {QBO_TOKEN_URL}", f"GET {URL}"]
    assert fake.requests[-1].headers["authorization"] == "Bearer access-2"


async def test_401_after_the_refresh_is_a_verification_error() -> None:
    fake, handler = _token_then(401)
    with pytest.raises(VerificationError, match="quickbooks API refused a freshly refreshed"):
        await _api(handler).fetch(REF, [SECRETS])
    assert fake.refreshes == 2
    assert [r.method for r in fake.requests] == ["POST", "GET", "POST", "GET"]


@pytest.mark.parametrize(
    "secrets",
    [
        [],
        [{"verifier_token": VERIFIER_TOKEN}],
        [{**SECRETS, "refresh_token": ""}],
        [{k: v for k, v in SECRETS.items() if k != "client_secret"}],
    ],
)
async def test_missing_oauth_credentials_are_a_verification_error(
    secrets: list[dict[str, str]],
) -> None:
    fake = _fake()
    with pytest.raises(VerificationError, match="no quickbooks OAuth credentials"):
        await _api(fake).fetch(REF, secrets)
    assert fake.requests == []


async def test_refused_refresh_token_is_a_verification_error_without_secrets() -> None:
    fake = _fake()
    fake.refresh_token = "reconnected-elsewhere"
    with pytest.raises(VerificationError, match=r"\(invalid_grant\)") as info:
        await _api(fake).fetch(REF, [SECRETS])
    for secret in (CLIENT_SECRET, REFRESH_TOKEN, VERIFIER_TOKEN):
        assert secret not in str(info.value)


async def test_an_older_secret_set_is_tried_when_the_newest_is_refused() -> None:
    fake = _fake()
    result = await _api(fake).fetch(REF, [{**SECRETS, "refresh_token": "typo"}, SECRETS])
    assert result.status == 200


# --- statuses -----------------------------------------------------------------------------------


async def test_fault_610_object_not_found_is_recorded_as_gone() -> None:
    fake = _fake()
    fake.resources[PATH] = (400, FAULT_610)
    result = await _api(fake).fetch(REF, [SECRETS])
    assert (result.status, result.document) == (404, FAULT_610)
    assert quickbooks.normalize_fetched("acme", REF, result.document, COORDS, status=404) == []
    voided = REF.model_copy(update={"event_type": "Invoice.Void"})
    (event,) = quickbooks.normalize_fetched("acme", voided, result.document, COORDS, status=404)
    assert event.type == "INVOICE_VOIDED"


async def test_a_plain_404_is_recorded_not_raised() -> None:
    fake = _fake()
    del fake.resources[PATH]
    result = await _api(fake).fetch(REF, [SECRETS])
    assert (result.status, result.document) == (404, b"")


@pytest.mark.parametrize(
    "body",
    [
        b'{"Fault":{"Error":[{"Message":"Stale Object Error","code":"5010"}]}}',
        b'{"Fault":{"Error":"610"}}',
        b'<IntuitResponse><Fault><Error code="610"/></Fault></IntuitResponse>',
        b"",
    ],
)
async def test_other_400_answers_keep_their_status(body: bytes) -> None:
    fake = _fake()
    fake.resources[PATH] = (400, body)
    result = await _api(fake).fetch(REF, [SECRETS])
    assert (result.status, result.document) == (400, body)


async def test_fault_610_with_another_status_is_not_gone() -> None:
    fake = _fake()
    fake.resources[PATH] = (409, FAULT_610)
    assert (await _api(fake).fetch(REF, [SECRETS])).status == 409


async def test_429_is_rate_limited_with_retry_after() -> None:
    _, handler = _token_then(429, {"retry-after": "12"})
    with pytest.raises(RateLimited, match="quickbooks API rate limit") as info:
        await _api(handler).fetch(REF, [SECRETS])
    assert info.value.retry_after == 12.0 and isinstance(info.value, Retryable)


async def test_429_without_retry_after() -> None:
    _, handler = _token_then(429)
    with pytest.raises(RateLimited) as info:
        await _api(handler).fetch(REF, [SECRETS])
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retryable(status: int) -> None:
    fake = _fake()
    fake.resources[PATH] = (status, b"<html>down</html>")
    with pytest.raises(Retryable, match=f"quickbooks API answered HTTP {status}"):
        await _api(fake).fetch(REF, [SECRETS])


@pytest.mark.parametrize("error", [httpx.ConnectError("down"), httpx.ReadTimeout("slow")])
async def test_network_failures_are_retryable(error: httpx.TransportError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(Retryable, match="unreachable"):
        await _api(handler).fetch(REF, [SECRETS])


async def test_token_endpoint_outage_is_retryable() -> None:
    with pytest.raises(Retryable, match="quickbooks OAuth server answered HTTP 503"):
        await _api(lambda r: httpx.Response(503)).fetch(REF, [SECRETS])


async def test_403_and_redirects_are_verification_errors() -> None:
    _, forbidden = _token_then(403)
    with pytest.raises(VerificationError, match="HTTP 403"):
        await _api(forbidden).fetch(REF, [SECRETS])
    _, redirect = _token_then(302, {"location": "https://evil.example/"})
    with pytest.raises(VerificationError, match="redirected"):
        await _api(redirect).fetch(REF, [SECRETS])


async def test_documents_with_a_card_number_are_refused() -> None:
    fake = _fake()
    fake.resources[PATH] = (200, DOCUMENT.replace(b"Ridgeway Bikes", b"4242 4242 4242 4242"))
    with pytest.raises(CardDataError, match="quickbooks invoice"):
        await _api(fake).fetch(REF, [SECRETS])


async def test_references_of_another_provider_are_refused() -> None:
    with pytest.raises(ValueError, match="xero"):
        await _api(_fake()).fetch(REF.model_copy(update={"provider": "xero"}), [SECRETS])
