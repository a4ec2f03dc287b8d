"""PayPal's transmission-id replay guard (pure part) and which mode a delivery verified in."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from functools import cache

import httpx
import pytest

from paywatch.errors import VerificationError
from paywatch.providers.paypal import PayPalProvider
from paywatch.providers.paypal.replay import (
    REPLAY_MARGIN,
    Mode,
    TransmissionReplayed,
    Verified,
    body_digest,
    check_first_body,
    replay_retention,
)
from paywatch.providers.paypal.signature import MAX_CLOCK_SKEW
from tests.builders.paypal import (
    TRANSMISSION_ID,
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
API_SET = {
    "webhook_id": WEBHOOK_ID,
    "api_base": "https://api-m.sandbox.paypal.com",
    "client_id": "test-client",
    "client_secret": "test-secret",
}


@cache
def pki() -> SamplePki:
    return make_test_pki(NOW)


def test_digest_is_sha256_of_the_exact_bytes() -> None:
    assert body_digest(BODY) == hashlib.sha256(BODY).digest()
    assert body_digest(BODY + b" ") != body_digest(BODY)


def test_same_bytes_pass_other_bytes_are_a_replay_and_a_verification_error() -> None:
    check_first_body(body_digest(BODY), body_digest(BODY))
    with pytest.raises(TransmissionReplayed, match="different body") as info:
        check_first_body(body_digest(BODY), body_digest(BODY + b" "))
    assert isinstance(info.value, VerificationError)  # so the ingest answers 401


def test_ids_are_kept_past_the_last_moment_their_transmission_is_fresh() -> None:
    window = timedelta(days=4)
    kept = replay_retention(window)
    assert kept == window + MAX_CLOCK_SKEW + REPLAY_MARGIN
    assert replay_retention(timedelta(minutes=1)) == timedelta(minutes=2) + REPLAY_MARGIN
    assert replay_retention(None) is None  # no window: a seen id stays usable forever


def test_only_certificate_mode_needs_the_guard() -> None:
    assert Verified("t", "cert").needs_replay_guard
    assert not Verified("t", "api").needs_replay_guard


@pytest.mark.parametrize(
    ("secrets", "mode"),
    [([{"webhook_id": WEBHOOK_ID}], "cert"), ([API_SET], "api")],
)
async def test_verify_delivery_says_which_mode_verified(
    secrets: list[dict[str, str]], mode: Mode
) -> None:
    headers = sign_paypal(BODY, WEBHOOK_ID, pki().leaf_key)
    transport = httpx.MockTransport(mock_paypal(pki().bundle, now=NOW))
    async with httpx.AsyncClient(transport=transport) as client:
        verified = await PayPalProvider(client).verify_delivery(BODY, headers, secrets, NOW)
    assert verified == Verified(TRANSMISSION_ID, mode)
