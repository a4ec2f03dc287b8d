"""Xero x-xero-signature verification (reliability §2.3 matrix) and intent-to-receive."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import CardDataError, PayloadError, VerificationError
from paywatch.providers.xero import XeroProvider, xero
from paywatch.schemas.models import RawWebhook
from tests.builders.xero import WEBHOOK_KEY, sign_xero, xero_headers

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xero"
NOW = datetime(2026, 6, 15, 9, 31, tzinfo=UTC)
OLD_KEY = "previous-xero-webhook-key"
BODY = (FIXTURES / "invoice.update.json").read_bytes()
ITR = (FIXTURES / "itr.json").read_bytes()
SECRETS = [{"webhook_key": WEBHOOK_KEY}]


def _sig(body: bytes, key: str) -> str:
    # The documented algorithm (§2.5), written independently of the module under test.
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def _verify(
    body: bytes, signature: str | None, secrets: list[dict[str, str]] = SECRETS
) -> None:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-xero-signature"] = signature
    xero.verify(body, headers, secrets, NOW)


GOOD = _sig(BODY, WEBHOOK_KEY)


def test_good_signature_is_accepted() -> None:
    _verify(BODY, GOOD)


def test_sample_signer_matches_the_documented_algorithm() -> None:
    assert sign_xero(BODY) == GOOD
    assert xero_headers(BODY)["x-xero-signature"] == GOOD


def test_rotation_any_secret_set_verifies() -> None:
    old = _sig(BODY, OLD_KEY)
    _verify(BODY, old, [{"webhook_key": WEBHOOK_KEY}, {"webhook_key": OLD_KEY}])
    with pytest.raises(VerificationError, match="does not match"):
        _verify(BODY, old)


def test_wrong_key_is_rejected_without_leaking_secrets() -> None:
    with pytest.raises(VerificationError, match="does not match") as info:
        _verify(BODY, _sig(BODY, "attacker"))
    assert WEBHOOK_KEY not in str(info.value) and GOOD not in str(info.value)


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 2])
def test_one_tampered_byte_is_rejected(position: int) -> None:
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01
    with pytest.raises(VerificationError, match="does not match"):
        _verify(bytes(tampered), GOOD)


def test_reserialized_body_is_rejected() -> None:
    reserialized = json.dumps(json.loads(BODY)).encode()
    assert reserialized != BODY and json.loads(reserialized) == json.loads(BODY)
    with pytest.raises(VerificationError, match="does not match"):
        _verify(reserialized, GOOD)


def test_no_time_is_signed_so_now_does_not_matter() -> None:
    xero.verify(BODY, {"x-xero-signature": GOOD}, SECRETS, datetime(2040, 1, 1, tzinfo=UTC))


def test_missing_header_is_rejected() -> None:
    with pytest.raises(VerificationError, match="missing x-xero-signature"):
        _verify(BODY, None)


def test_header_name_is_expected_lowercase_but_other_cases_work() -> None:
    xero.verify(BODY, {"X-Xero-Signature": GOOD}, SECRETS, NOW)


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!", GOOD[:-4], GOOD + "AAAA", base64.b64encode(b"short").decode(), "é" * 44],
)
def test_malformed_headers_are_rejected(signature: str) -> None:
    with pytest.raises(VerificationError, match="malformed x-xero-signature"):
        _verify(BODY, signature)


def test_hex_signature_is_not_accepted() -> None:
    hexdigest = hmac.new(WEBHOOK_KEY.encode(), BODY, hashlib.sha256).hexdigest()
    with pytest.raises(VerificationError):
        _verify(BODY, hexdigest)


@pytest.mark.parametrize("secrets", [[], [{"webhook_key": ""}], [{"verifier_token": WEBHOOK_KEY}]])
def test_no_key_configured_is_rejected(secrets: list[dict[str, str]]) -> None:
    with pytest.raises(VerificationError, match="no Xero webhook_key"):
        _verify(BODY, GOOD, secrets)


def test_garbage_bytes_verify_only_with_their_own_signature_then_fail_to_parse() -> None:
    garbage = b"\xff\xfe\x00not json"
    with pytest.raises(VerificationError):
        _verify(garbage, GOOD)
    _verify(garbage, _sig(garbage, WEBHOOK_KEY))
    with pytest.raises(PayloadError):
        xero.parse(garbage)


# --- intent to receive (§2.5): 200 + empty body when signed well, 401 + empty body if not ---


def test_intent_to_receive_well_signed_is_a_handshake_with_nothing_to_fetch() -> None:
    _verify(ITR, _sig(ITR, WEBHOOK_KEY))
    doc = xero.parse(ITR)
    assert doc["events"] == [] and doc["firstEventSequence"] == 0
    assert xero.handshake(doc) is True
    assert xero.references(doc) == []
    assert xero.subject(doc) is None
    assert xero.provider_event_id(doc).startswith("xero-itr:")
    raw = RawWebhook(ingest_id="i", tenant="t", provider="xero", received_at=NOW, body=ITR)
    assert xero.normalize(raw, "webhooks.raw", 0, 0) == []


def test_intent_to_receive_badly_signed_is_rejected() -> None:
    with pytest.raises(VerificationError):
        _verify(ITR, _sig(ITR, "not-the-key"))
    with pytest.raises(VerificationError):
        _verify(ITR, _sig(ITR + b" ", WEBHOOK_KEY))


def test_xero_answers_without_body_and_is_thin() -> None:
    assert (xero.empty_ack, xero.thin) == (True, True)
    assert (xero.name, xero.secret_names) == ("xero", ("webhook_key",))
    assert xero.optional_secret_names == ("client_id", "client_secret", "refresh_token", "api_base")
    assert xero.handshake(xero.parse(BODY)) is False


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=2_048),
    extra=st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=5),
    signature=st.one_of(
        st.none(),
        st.text(max_size=80),
        st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()),
    ),
)
def test_random_requests_are_only_ever_rejected_with_verification_error(
    body: bytes, extra: dict[str, str], signature: str | None
) -> None:
    headers = {k: v for k, v in extra.items() if k.lower() != "x-xero-signature"}
    if signature is not None:
        headers["x-xero-signature"] = signature
    with pytest.raises(VerificationError):
        xero.verify(body, headers, SECRETS, NOW)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "resourceId": st.sampled_from(["243216c5-369e-4056-ac67-05388f86dc81", "", "../x"])
        | st.text(max_size=40),
        "eventDateUtc": st.sampled_from(["2026-06-15T09:30:12.123", "bad"]) | st.text(max_size=30),
        "eventType": st.sampled_from(["UPDATE", "CREATE", "update"]) | st.text(max_size=10),
        "eventCategory": st.sampled_from(["INVOICE", "CONTACT", "CREDITNOTE"]) | _JSON,
        "tenantId": st.sampled_from(["c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"]) | _JSON,
    },
)
_BATCHES = st.builds(
    lambda events, entropy: {"events": events, "firstEventSequence": 1, "entropy": entropy},
    st.lists(_EVENTS | _JSON, max_size=4),
    _JSON,
)


@settings(max_examples=300, deadline=None)
@given(doc=_JSON | _BATCHES)
def test_random_json_is_accepted_only_with_its_own_signature(doc: object) -> None:
    body = json.dumps(doc).encode()
    _verify(body, _sig(body, WEBHOOK_KEY))
    with pytest.raises(VerificationError):
        _verify(body + b" ", _sig(body, WEBHOOK_KEY))
    try:
        parsed = xero.parse(body)
        xero.subject(parsed)
        xero.provider_event_id(parsed)
        xero.handshake(parsed)
        refs = xero.references(parsed)
        raw = RawWebhook(ingest_id="i", tenant="t", provider="xero", received_at=NOW, body=body)
        assert xero.normalize(raw, "webhooks.raw", 0, 0) == []
    except (PayloadError, CardDataError):
        return
    assert all(r.provider == "xero" and r.kind == "invoice" for r in refs)
    assert [r.index for r in refs] == sorted(r.index for r in refs)


def test_custom_provider_keeps_the_same_verification() -> None:
    XeroProvider(grace_days=3).verify(BODY, {"x-xero-signature": GOOD}, SECRETS, NOW)
