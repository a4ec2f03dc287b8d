"""Stripe-Signature verification: the matrix of reference/reliability.md §2.3 plus extras."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import PayloadError, VerificationError
from paywatch.providers.stripe import StripeProvider, stripe
from tests.builders.stripe import sign_stripe, stripe_body, stripe_event, stripe_invoice

SECRET = "whsec_test_primary_0123456789abcdef"
OLD_SECRET = "whsec_test_previous_fedcba9876543210"
T = 1_750_000_000
NOW = datetime.fromtimestamp(T, UTC)
BODY = stripe_body(stripe_event("invoice.payment_failed", stripe_invoice(basil=True)))
SECRETS = [{"signing_secret": SECRET}]


def _sig(body: bytes, secret: str, t: int) -> str:
    # Written from the documented algorithm, independently of samples.sign_stripe.
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def _headers(value: str) -> dict[str, str]:
    return {"content-type": "application/json", "stripe-signature": value}


def _verify(
    body: bytes, header: str, secrets: list[dict[str, str]] = SECRETS, now: datetime = NOW
) -> None:
    stripe.verify(body, _headers(header), secrets, now)


def test_good_signature_is_accepted() -> None:
    _verify(BODY, f"t={T},v1={_sig(BODY, SECRET, T)}")


def test_sample_signer_matches_the_documented_algorithm() -> None:
    assert sign_stripe(BODY, SECRET, T) == f"t={T},v1={_sig(BODY, SECRET, T)}"


def test_rotation_any_of_several_v1_values_matches() -> None:
    header = f"t={T},v1={_sig(BODY, OLD_SECRET, T)},v1={_sig(BODY, SECRET, T)}"
    _verify(BODY, header)


def test_rotation_any_of_several_secret_sets_matches() -> None:
    header = f"t={T},v1={_sig(BODY, OLD_SECRET, T)}"
    _verify(BODY, header, [{"signing_secret": SECRET}, {"signing_secret": OLD_SECRET}])


def test_wrong_secret_is_rejected_without_leaking_secret_or_expected_signature() -> None:
    header = f"t={T},v1={_sig(BODY, 'whsec_attacker', T)}"
    with pytest.raises(VerificationError, match="no v1 signature matches") as info:
        _verify(BODY, header)
    message = str(info.value)
    assert SECRET not in message
    assert _sig(BODY, SECRET, T) not in message


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
def test_one_tampered_byte_is_rejected(position: int) -> None:
    header = f"t={T},v1={_sig(BODY, SECRET, T)}"
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01
    with pytest.raises(VerificationError):
        _verify(bytes(tampered), header)


def test_reserialized_json_body_is_rejected() -> None:
    header = f"t={T},v1={_sig(BODY, SECRET, T)}"
    reserialized = json.dumps(json.loads(BODY)).encode()
    assert reserialized != BODY and json.loads(reserialized) == json.loads(BODY)
    with pytest.raises(VerificationError):
        _verify(reserialized, header)


@pytest.mark.parametrize(
    ("skew", "accepted"),
    [(-300, True), (-301, False), (300, True), (301, False), (-86_400, False)],
)
def test_replay_window_is_300_seconds_both_ways(skew: int, accepted: bool) -> None:
    t = T + skew
    header = f"t={t},v1={_sig(BODY, SECRET, t)}"
    if accepted:
        _verify(BODY, header)
    else:
        with pytest.raises(VerificationError, match=r"s old|in the future"):
            _verify(BODY, header)


def test_expired_message_and_future_message_differ() -> None:
    old, future = T - 1_000, T + 1_000
    with pytest.raises(VerificationError, match="300 s old"):
        _verify(BODY, f"t={old},v1={_sig(BODY, SECRET, old)}")
    with pytest.raises(VerificationError, match="300 s in the future"):
        _verify(BODY, f"t={future},v1={_sig(BODY, SECRET, future)}")


def test_tolerance_is_a_constructor_argument() -> None:
    t = T - 11
    header = _headers(f"t={t},v1={_sig(BODY, SECRET, t)}")
    StripeProvider(tolerance=20).verify(BODY, header, SECRETS, NOW)
    with pytest.raises(VerificationError, match="10 s old"):
        StripeProvider(tolerance=10).verify(BODY, header, SECRETS, NOW)


def test_signature_is_checked_before_the_timestamp() -> None:
    old = T - 1_000
    with pytest.raises(VerificationError, match="no v1 signature matches"):
        _verify(BODY, f"t={old},v1={_sig(BODY, 'whsec_other', old)}")


def test_missing_header_is_rejected() -> None:
    with pytest.raises(VerificationError, match="missing Stripe-Signature header"):
        stripe.verify(BODY, {"content-type": "application/json"}, SECRETS, NOW)


def test_header_lookup_expects_lowercase_keys_but_tolerates_other_cases() -> None:
    value = f"t={T},v1={_sig(BODY, SECRET, T)}"
    stripe.verify(BODY, {"stripe-signature": value}, SECRETS, NOW)
    stripe.verify(BODY, {"Stripe-Signature": value}, SECRETS, NOW)


def test_spaces_after_commas_are_tolerated() -> None:
    _verify(BODY, f"t={T}, v1={_sig(BODY, SECRET, T)}")


GOOD = "a" * 64


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "malformed"),
        ("garbage", "malformed"),
        (f"t={T};v1={GOOD}", "not an integer"),
        (f"t={T},,v1={GOOD}", "malformed"),
        (f"=1,t={T},v1={GOOD}", "malformed"),
        (f"v1={GOOD}", "no t= timestamp"),
        (f"t=abc,v1={GOOD}", "not an integer"),
        (f"t=-5,v1={GOOD}", "not an integer"),
        (f"t=1.5,v1={GOOD}", "not an integer"),
        (f"t=\u0661\u0662\u0663,v1={GOOD}", "not an integer"),
        (f"t={'9' * 40},v1={GOOD}", "not an integer"),
        (f"t={T},t={T},v1={GOOD}", "more than one t="),
        (f"t={T}", "no v1 signature"),
        (f"t={T},v0={GOOD}", "no v1 signature"),
    ],
)
def test_malformed_headers_are_rejected_precisely(header: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        _verify(BODY, header)


def test_v0_signatures_are_ignored_even_when_they_would_match() -> None:
    with pytest.raises(VerificationError, match="no v1 signature"):
        _verify(BODY, f"t={T},v0={_sig(BODY, SECRET, T)}")
    _verify(BODY, f"t={T},v0={GOOD},v1={_sig(BODY, SECRET, T)}")


@pytest.mark.parametrize(
    "secrets",
    [[], [{"signing_secret": ""}], [{"webhook_id": "WH-1"}]],
)
def test_no_secret_configured_is_rejected(secrets: list[dict[str, str]]) -> None:
    with pytest.raises(VerificationError, match="no Stripe signing_secret configured"):
        _verify(BODY, f"t={T},v1={_sig(BODY, SECRET, T)}", secrets)


def test_non_ascii_signature_values_are_rejected_not_crashing() -> None:
    with pytest.raises(VerificationError, match="no v1 signature matches"):
        _verify(BODY, f"t={T},v1=\u00e9\u00e9\u00e9")


def test_garbage_body_with_valid_signature_verifies_then_fails_to_parse() -> None:
    garbage = b"\xff\xfe\x00not json"
    _verify(garbage, f"t={T},v1={_sig(garbage, SECRET, T)}")
    with pytest.raises(PayloadError):
        stripe.parse(garbage)


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        StripeProvider(tolerance=-1)


_HEX64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_SIGNATURE_HEADERS = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda t, sigs: ",".join([f"t={t}", *(f"v1={s}" for s in sigs)]),
        st.integers(min_value=T - 1_000, max_value=T + 1_000),
        st.lists(_HEX64, max_size=4),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=2_048),
    extra=st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5),
    signature=st.one_of(st.none(), _SIGNATURE_HEADERS),
)
def test_random_requests_are_only_ever_rejected_with_verification_error(
    body: bytes, extra: dict[str, str], signature: str | None
) -> None:
    headers = {k: v for k, v in extra.items() if k.lower() != "stripe-signature"}
    if signature is not None:
        headers["stripe-signature"] = signature
    with pytest.raises(VerificationError):
        stripe.verify(body, headers, SECRETS, NOW)


@settings(max_examples=200, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=20,
    ),
    t=st.integers(min_value=T - 300, max_value=T + 300),
)
def test_random_json_is_accepted_only_with_its_own_signature(doc: object, t: int) -> None:
    body = json.dumps(doc).encode()
    _verify(body, f"t={t},v1={_sig(body, SECRET, t)}")
    with pytest.raises(VerificationError):
        _verify(body + b" ", f"t={t},v1={_sig(body, SECRET, t)}")
    try:
        stripe.parse(body)
    except PayloadError:
        pass


@settings(max_examples=200, deadline=None)
@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_single_byte_change_breaks_the_signature(body: bytes, data: st.DataObject) -> None:
    header = f"t={T},v1={_sig(body, SECRET, T)}"
    _verify(body, header)
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(body)
    tampered[position] ^= flip
    with pytest.raises(VerificationError):
        _verify(bytes(tampered), header)
