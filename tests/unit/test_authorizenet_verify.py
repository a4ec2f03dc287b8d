"""Authorize.Net X-ANET-Signature verification (reliability §2.3 matrix, both key forms)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import CardDataError, PayloadError, VerificationError
from paywatch.providers.authorizenet import AuthorizeNetProvider, authorizenet
from paywatch.schemas.models import RawWebhook
from tests.builders.authorizenet import (
    authorizenet_body,
    authorizenet_failure,
    authorizenet_headers,
    sign_authorizenet,
)

KEY = "A1B2C3D4E5F60718293A4B5C6D7E8F90" * 4
OLD_KEY = "0F1E2D3C4B5A69788796A5B4C3D2E1F0" * 4
NOW = datetime(2026, 6, 15, 9, 31, tzinfo=UTC)
BODY = authorizenet_body(authorizenet_failure())
SECRETS = [{"signature_key": KEY}]
HEX_KEYED = AuthorizeNetProvider(key_form="hex")
BOTH = AuthorizeNetProvider(key_form="both")


def _sig(body: bytes, key: bytes) -> str:
    # Written from the documented algorithm, independently of the module under test.
    return hmac.new(key, body, hashlib.sha512).hexdigest().upper()


def _verify(
    body: bytes,
    header: str | None,
    secrets: list[dict[str, str]] = SECRETS,
    provider: AuthorizeNetProvider = authorizenet,
) -> None:
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["x-anet-signature"] = header
    provider.verify(body, headers, secrets, NOW)


GOOD = f"sha512={_sig(BODY, KEY.encode())}"


def test_good_signature_is_accepted() -> None:
    _verify(BODY, GOOD)


def test_sample_signer_and_headers_match_the_documented_algorithm() -> None:
    assert sign_authorizenet(BODY, KEY) == GOOD
    assert authorizenet_headers(BODY, KEY)["x-anet-signature"] == GOOD
    assert sign_authorizenet(BODY, KEY, hex_key=True) == f"sha512={_sig(BODY, bytes.fromhex(KEY))}"


def test_hex_and_prefix_compare_case_insensitively() -> None:
    _verify(BODY, GOOD.lower())
    _verify(BODY, "SHA512=" + GOOD.removeprefix("sha512="))
    _verify(BODY, f"  {GOOD}  ")


def test_header_name_lookup_expects_lowercase_but_tolerates_other_cases() -> None:
    authorizenet.verify(BODY, {"X-ANET-Signature": GOOD}, SECRETS, NOW)


def test_rotation_any_secret_set_verifies() -> None:
    header = f"sha512={_sig(BODY, OLD_KEY.encode())}"
    _verify(BODY, header, [{"signature_key": KEY}, {"signature_key": OLD_KEY}])
    with pytest.raises(VerificationError):
        _verify(BODY, header)


def test_wrong_key_is_rejected_without_leaking_secrets() -> None:
    with pytest.raises(VerificationError, match="does not match") as info:
        _verify(BODY, f"sha512={_sig(BODY, b'attacker')}")
    message = str(info.value)
    assert KEY not in message and GOOD.removeprefix("sha512=") not in message


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
def test_one_tampered_byte_is_rejected(position: int) -> None:
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01
    with pytest.raises(VerificationError, match="does not match"):
        _verify(bytes(tampered), GOOD)


def test_reserialized_json_body_is_rejected() -> None:
    reserialized = json.dumps(json.loads(BODY)).encode()
    assert reserialized != BODY and json.loads(reserialized) == json.loads(BODY)
    with pytest.raises(VerificationError, match="does not match"):
        _verify(reserialized, GOOD)


def test_now_is_not_checked_authorizenet_signs_no_time() -> None:
    authorizenet.verify(BODY, {"x-anet-signature": GOOD}, SECRETS, datetime(2040, 1, 1, tzinfo=UTC))


def test_missing_header_is_rejected() -> None:
    with pytest.raises(VerificationError, match="missing X-ANET-Signature"):
        _verify(BODY, None)


HEX = GOOD.removeprefix("sha512=")


@pytest.mark.parametrize(
    "header",
    [
        "",
        HEX,
        f"sha256={HEX}",
        f"sha512:{HEX}",
        "sha512=",
        f"sha512={HEX[:-1]}",
        f"sha512={HEX}0",
        f"sha512={HEX[:-1]}G",
        f"sha512={HEX[:-1]}\u0663",
        f"sha512={HEX},sha512={HEX}",
    ],
)
def test_malformed_headers_are_rejected(header: str) -> None:
    with pytest.raises(VerificationError, match="malformed X-ANET-Signature"):
        _verify(BODY, header)


@pytest.mark.parametrize("secrets", [[], [{"signature_key": ""}], [{"signing_secret": KEY}]])
def test_no_key_configured_is_rejected(secrets: list[dict[str, str]]) -> None:
    with pytest.raises(VerificationError, match=r"no usable Authorize\.Net signature_key"):
        _verify(BODY, GOOD, secrets)


# --- key forms [U] ------------------------------------------------------------------------------

ASCII_SIGNED = f"sha512={_sig(BODY, KEY.encode())}"
HEX_SIGNED = f"sha512={_sig(BODY, bytes.fromhex(KEY))}"


def test_default_ascii_form_rejects_a_hex_keyed_signature() -> None:
    with pytest.raises(VerificationError, match="does not match"):
        _verify(BODY, HEX_SIGNED)


def test_hex_form_accepts_hex_keyed_and_rejects_ascii_keyed() -> None:
    _verify(BODY, HEX_SIGNED, provider=HEX_KEYED)
    with pytest.raises(VerificationError, match="does not match"):
        _verify(BODY, ASCII_SIGNED, provider=HEX_KEYED)


def test_both_form_accepts_either() -> None:
    _verify(BODY, HEX_SIGNED, provider=BOTH)
    _verify(BODY, ASCII_SIGNED, provider=BOTH)
    with pytest.raises(VerificationError, match="does not match"):
        _verify(BODY, f"sha512={_sig(BODY, b'other')}", provider=BOTH)


def test_hex_form_with_a_non_hex_key_has_no_usable_key() -> None:
    with pytest.raises(VerificationError, match="no usable"):
        _verify(BODY, HEX_SIGNED, [{"signature_key": "not-hex"}], provider=HEX_KEYED)
    _verify(
        BODY,
        f"sha512={_sig(BODY, b'not-hex')}",
        [{"signature_key": "not-hex"}],
        provider=BOTH,
    )


def test_key_form_and_currency_are_validated() -> None:
    with pytest.raises(ValueError, match="key_form"):
        AuthorizeNetProvider(key_form="base64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="default_currency"):
        AuthorizeNetProvider(default_currency="dollars")
    assert (authorizenet.key_form, authorizenet.default_currency) == ("ascii", "USD")
    assert (authorizenet.name, authorizenet.secret_names) == ("authorizenet", ("signature_key",))


def test_garbage_body_with_valid_signature_verifies_then_fails_to_parse() -> None:
    garbage = b"\xff\xfe\x00not json"
    _verify(garbage, f"sha512={_sig(garbage, KEY.encode())}")
    with pytest.raises(PayloadError):
        authorizenet.parse(garbage)


# --- properties --------------------------------------------------------------------------------

_HEX128 = st.text(alphabet="0123456789abcdefABCDEF", min_size=128, max_size=128)
_HEADER_VALUES = st.one_of(st.text(max_size=200), st.builds(lambda h: f"sha512={h}", _HEX128))


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=2_048),
    extra=st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5),
    signature=st.one_of(st.none(), _HEADER_VALUES),
    provider=st.sampled_from([authorizenet, HEX_KEYED, BOTH]),
)
def test_random_requests_are_only_ever_rejected_with_verification_error(
    body: bytes,
    extra: dict[str, str],
    signature: str | None,
    provider: AuthorizeNetProvider,
) -> None:
    headers = {k: v for k, v in extra.items() if k.lower() != "x-anet-signature"}
    if signature is not None:
        headers["x-anet-signature"] = signature
    with pytest.raises(VerificationError):
        provider.verify(body, headers, SECRETS, NOW)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_NOTIFICATIONS = st.builds(
    lambda event_type, payload, date: {
        "notificationId": "n-1",
        "eventType": event_type,
        "eventDate": date,
        "payload": payload,
    },
    st.sampled_from(
        [
            "net.authorize.payment.authcapture.created",
            "net.authorize.payment.fraud.declined",
            "net.authorize.customer.subscription.suspended",
        ]
    )
    | st.text(max_size=30),
    st.dictionaries(
        st.sampled_from(["responseCode", "id", "authAmount", "amount", "responseReasonCode"]),
        _JSON,
    ),
    st.sampled_from(["2026-06-15T09:30:12.0080095Z", "bad"]) | st.text(max_size=30),
)


def _raw(body: bytes) -> RawWebhook:
    return RawWebhook(
        ingest_id="i", tenant="t", provider="authorizenet", received_at=NOW, body=body
    )


@settings(max_examples=300, deadline=None)
@given(doc=_JSON | _NOTIFICATIONS)
def test_random_json_is_accepted_only_with_its_own_signature(doc: object) -> None:
    body = json.dumps(doc).encode()
    header = f"sha512={_sig(body, KEY.encode())}"
    _verify(body, header)
    with pytest.raises(VerificationError):
        _verify(body + b" ", header)
    try:
        parsed = authorizenet.parse(body)
        authorizenet.subject(parsed)
        authorizenet.provider_event_id(parsed)
        authorizenet.normalize(_raw(body), "webhooks.raw", 0, 0)
    except (PayloadError, CardDataError):
        pass


@settings(max_examples=200, deadline=None)
@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_single_byte_change_breaks_the_signature(body: bytes, data: st.DataObject) -> None:
    header = f"sha512={_sig(body, KEY.encode())}"
    _verify(body, header)
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(body)
    tampered[position] ^= flip
    with pytest.raises(VerificationError):
        _verify(bytes(tampered), header)
