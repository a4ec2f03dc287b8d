"""Checkout.com Cko-Signature verification: the reliability §2.3 matrix (no signed time)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import CardDataError, PayloadError, VerificationError
from paywatch.providers.checkout import checkout
from paywatch.schemas.models import RawWebhook
from tests.builders.checkout import (
    checkout_body,
    checkout_failure,
    checkout_headers,
    sign_checkout,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "checkout"
KEY = "c5d1a7e2-93b4-4f08-8a6d-2e7f1b3c9d40"
OLD_KEY = "0b9e8d7c-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
SECRETS = [{"signature_key": KEY}]
NOW = datetime(2026, 6, 15, 9, 31, tzinfo=UTC)
BODY = (FIXTURES / "payment_declined.json").read_bytes()


def _sig(body: bytes, key: str) -> str:
    # Written from the documented algorithm (webhooks.md §2.8), independently of the module.
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def _verify(
    body: bytes,
    signature: str | None,
    secrets: list[dict[str, str]] = SECRETS,
    now: datetime = NOW,
) -> None:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["cko-signature"] = signature
    checkout.verify(body, headers, secrets, now)


def test_good_signature_is_accepted() -> None:
    _verify(BODY, _sig(BODY, KEY))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_verifies(name: str) -> None:
    body = (FIXTURES / name).read_bytes()
    _verify(body, _sig(body, KEY))


def test_sample_signer_and_headers_match_the_documented_algorithm() -> None:
    assert sign_checkout(BODY, KEY) == _sig(BODY, KEY)
    assert checkout_headers(BODY, KEY)["cko-signature"] == _sig(BODY, KEY)
    sample = checkout_body(checkout_failure())
    checkout.verify(
        sample,
        checkout_headers(sample),
        [{"signature_key": "8f3b2c1d-5e6a-4b7c-9d0e-1f2a3b4c5d6e"}],
        NOW,
    )


def test_upper_case_hex_and_surrounding_spaces_are_tolerated() -> None:
    _verify(BODY, f" {_sig(BODY, KEY).upper()} ")


def test_header_lookup_expects_lowercase_keys_but_tolerates_other_cases() -> None:
    checkout.verify(BODY, {"Cko-Signature": _sig(BODY, KEY)}, SECRETS, NOW)


def test_rotation_any_secret_set_verifies() -> None:
    _verify(BODY, _sig(BODY, OLD_KEY), [{"signature_key": KEY}, {"signature_key": OLD_KEY}])


def test_wrong_secret_is_rejected_without_leaking_secret_or_expected_signature() -> None:
    with pytest.raises(VerificationError, match="does not match") as info:
        _verify(BODY, _sig(BODY, "attacker"))
    message = str(info.value)
    assert KEY not in message and _sig(BODY, KEY) not in message


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 2])
def test_one_tampered_byte_is_rejected(position: int) -> None:
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01
    with pytest.raises(VerificationError):
        _verify(bytes(tampered), _sig(BODY, KEY))


def test_reserialized_json_body_is_rejected() -> None:
    reserialized = json.dumps(json.loads(BODY)).encode()
    assert reserialized != BODY and json.loads(reserialized) == json.loads(BODY)
    with pytest.raises(VerificationError):
        _verify(reserialized, _sig(BODY, KEY))


@pytest.mark.parametrize("skew", [timedelta(days=-30), timedelta(days=30)])
def test_no_replay_window_because_no_time_is_signed(skew: timedelta) -> None:
    _verify(BODY, _sig(BODY, KEY), now=NOW + skew)


def test_missing_header_is_rejected() -> None:
    with pytest.raises(VerificationError, match="missing Cko-Signature"):
        _verify(BODY, None)


@pytest.mark.parametrize(
    "signature",
    ["", "garbage", "a" * 63, "a" * 65, "g" * 64, f"sha256={'a' * 64}", "\u00e9" * 64],
)
def test_malformed_headers_are_rejected(signature: str) -> None:
    with pytest.raises(VerificationError, match="malformed Cko-Signature"):
        _verify(BODY, signature)


@pytest.mark.parametrize("secrets", [[], [{"signature_key": ""}], [{"hmac_key": KEY}]])
def test_no_secret_configured_is_rejected(secrets: list[dict[str, str]]) -> None:
    with pytest.raises(VerificationError, match=r"no Checkout\.com signature_key configured"):
        _verify(BODY, _sig(BODY, KEY), secrets)


def test_garbage_body_with_valid_signature_verifies_then_fails_to_parse() -> None:
    garbage = b"\xff\xfe\x00not json"
    _verify(garbage, _sig(garbage, KEY))
    with pytest.raises(PayloadError):
        checkout.parse(garbage)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_HEX64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(st.binary(max_size=2_048), _JSON.map(lambda d: json.dumps(d).encode())),
    extra=st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5),
    signature=st.one_of(st.none(), st.text(max_size=80), _HEX64),
)
def test_random_requests_are_only_ever_rejected_with_verification_error(
    body: bytes, extra: dict[str, str], signature: str | None
) -> None:
    headers = {k: v for k, v in extra.items() if k.lower() != "cko-signature"}
    if signature is not None:
        headers["cko-signature"] = signature
    with pytest.raises(VerificationError):
        checkout.verify(body, headers, SECRETS, NOW)


@settings(max_examples=200, deadline=None)
@given(doc=_JSON)
def test_random_json_is_accepted_only_with_its_own_signature(doc: object) -> None:
    body = json.dumps(doc).encode()
    _verify(body, _sig(body, KEY))
    with pytest.raises(VerificationError):
        _verify(body + b" ", _sig(body, KEY))
    raw = RawWebhook(ingest_id="i", tenant="acme", provider="checkout", received_at=NOW, body=body)
    try:
        checkout.normalize(raw, "webhooks.raw", 0, 1)
    except (PayloadError, CardDataError):
        pass


_DATA = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=10), st.integers()),
        "reference": st.one_of(st.none(), st.text(max_size=10), st.integers()),
        "amount": st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=False)),
        "currency": st.text(max_size=4),
        "processed_on": st.one_of(st.text(max_size=30), st.just("2026-06-15T09:30:12Z")),
        "response_code": st.one_of(
            st.text(max_size=6), st.integers(), st.sampled_from(["20051", "40101"])
        ),
        "processing": st.dictionaries(
            st.sampled_from(
                ["partner_response_code", "partner_merchant_advice_code", "recommendation_code"]
            ),
            st.one_of(st.text(max_size=4), st.integers(), st.none()),
        ),
        "source": st.dictionaries(
            st.sampled_from(["scheme", "last_4", "expiry_month", "expiry_year", "fingerprint"]),
            st.one_of(st.text(max_size=6), st.integers(), st.none()),
        ),
        "retry": st.dictionaries(
            st.sampled_from(["attempts_made", "next_attempt_on"]),
            st.one_of(st.text(max_size=30), st.integers(), st.none()),
        ),
        "metadata": _JSON,
        "customer": _JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    event_type=st.sampled_from(["payment_declined", "payment_captured", "payment_approved"]),
    data=_DATA,
    created_on=st.one_of(st.none(), st.text(max_size=30)),
)
def test_random_events_normalize_or_raise_payload_errors_only(
    event_type: str, data: dict[str, object], created_on: str | None
) -> None:
    doc = {"id": "evt_1", "type": event_type, "created_on": created_on, "data": data}
    raw = RawWebhook(
        ingest_id="i",
        tenant="acme",
        provider="checkout",
        received_at=NOW,
        body=json.dumps(doc).encode(),
    )
    try:
        checkout.normalize(raw, "webhooks.raw", 0, 1)
    except (PayloadError, CardDataError):
        pass


@settings(max_examples=200, deadline=None)
@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_single_byte_change_breaks_the_signature(body: bytes, data: st.DataObject) -> None:
    signature = _sig(body, KEY)
    _verify(body, signature)
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(body)
    tampered[position] ^= flip
    with pytest.raises(VerificationError):
        _verify(bytes(tampered), signature)
