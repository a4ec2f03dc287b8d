"""PayPal offline signature check (pure): the reliability.md §2.3 matrix plus certificate rules."""

from __future__ import annotations

import base64
import json
import zlib
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import VerificationError
from paywatch.providers.paypal import PayPalProvider, verify_signature
from paywatch.providers.paypal.signature import (
    DEFAULT_TOLERANCE,
    crc32_decimal,
    read_transmission,
)
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
TX_ID = "69cd13f0-d67a-11e5-baa3-778b53f4ae55"
TX_TIME = "2025-06-15T15:06:40Z"


@cache
def pki() -> SamplePki:
    return make_test_pki(NOW)


def _headers(
    body: bytes,
    webhook_id: str = WEBHOOK_ID,
    key: rsa.RSAPrivateKey | None = None,
    algo: str = "SHA256withRSA",
    time: str = TX_TIME,
) -> dict[str, str]:
    # Written from the documented algorithm (reference §2.2), independently of sign_paypal.
    crc = zlib.crc32(body) & 0xFFFFFFFF
    message = f"{TX_ID}|{time}|{webhook_id}|{crc}".encode()
    signature = (key or pki().leaf_key).sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {
        "content-type": "application/json",
        "paypal-transmission-id": TX_ID,
        "paypal-transmission-time": time,
        "paypal-transmission-sig": base64.b64encode(signature).decode(),
        "paypal-cert-url": CERT_URL,
        "paypal-auth-algo": algo,
    }


def _verify(
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    webhook_id: str = WEBHOOK_ID,
    bundle: bytes | None = None,
    now: datetime = NOW,
    **kwargs: object,
) -> None:
    verify_signature(
        body,
        _headers(body) if headers is None else headers,
        webhook_id,
        pki().bundle if bundle is None else bundle,
        now,
        **kwargs,  # type: ignore[arg-type]
    )


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def test_good_signature_is_accepted() -> None:
    _verify()


def test_sample_signer_matches_the_documented_algorithm() -> None:
    signed = sign_paypal(BODY, WEBHOOK_ID, pki().leaf_key, transmission_time=TX_TIME)
    _verify(headers=signed)
    assert signed["paypal-transmission-sig"] == _headers(BODY)["paypal-transmission-sig"]


def test_crc_is_unsigned_decimal() -> None:
    body = b"\xff" * 7  # crc32 with the high bit set: a signed implementation goes negative
    assert zlib.crc32(body) > 2**31 and crc32_decimal(body) == str(zlib.crc32(body))
    _verify(body, _headers(body))


def test_wrong_webhook_id_is_rejected_without_leaking_it() -> None:
    with pytest.raises(VerificationError, match="does not match") as info:
        _verify(webhook_id="WH-OTHER-WEBHOOK")
    assert WEBHOOK_ID not in str(info.value) and "WH-OTHER-WEBHOOK" not in str(info.value)


def test_signature_for_another_webhook_is_rejected() -> None:
    with pytest.raises(VerificationError, match="does not match"):
        _verify(headers=_headers(BODY, webhook_id="3XY12345AB678901C"))


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
def test_one_tampered_byte_is_rejected(position: int) -> None:
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01
    with pytest.raises(VerificationError, match="does not match"):
        _verify(bytes(tampered), _headers(BODY))


def test_reserialized_json_body_is_rejected() -> None:
    reserialized = json.dumps(json.loads(BODY)).encode()
    assert reserialized != BODY and json.loads(reserialized) == json.loads(BODY)
    with pytest.raises(VerificationError, match="does not match"):
        _verify(reserialized, _headers(BODY))


def test_signature_by_another_key_is_rejected() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(VerificationError, match="does not match"):
        _verify(headers=_headers(BODY, key=other))


@pytest.mark.parametrize(
    "header",
    [
        "paypal-transmission-id",
        "paypal-transmission-time",
        "paypal-transmission-sig",
        "paypal-cert-url",
        "paypal-auth-algo",
    ],
)
def test_missing_header_is_rejected(header: str) -> None:
    headers = _headers(BODY)
    del headers[header]
    with pytest.raises(VerificationError, match=f"missing {header}"):
        _verify(headers=headers)


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("paypal-transmission-sig", "not base64!", "not base64"),
        ("paypal-transmission-sig", "", "malformed"),
        ("paypal-transmission-sig", "=", "not base64|empty"),
        ("paypal-transmission-id", "a|b", "malformed"),
        ("paypal-transmission-time", "2025|06", "malformed"),
        ("paypal-transmission-id", "x" * 3_000, "malformed"),
        ("paypal-transmission-id", "caf\u00e9", "malformed"),
        ("paypal-transmission-id", "a\nb", "malformed"),
        ("paypal-auth-algo", "SHA1withRSA", "only SHA256withRSA"),
        ("paypal-auth-algo", "sha256", "only SHA256withRSA"),
    ],
)
def test_malformed_headers_are_rejected(header: str, value: str, message: str) -> None:
    headers = {**_headers(BODY), header: value}
    with pytest.raises(VerificationError, match=message):
        _verify(headers=headers)


def test_header_keys_are_read_lowercase_with_a_case_insensitive_fallback() -> None:
    headers = {k.upper(): v for k, v in _headers(BODY).items()}
    _verify(headers=headers)


def test_empty_webhook_id_is_refused() -> None:
    with pytest.raises(VerificationError, match="no PayPal webhook_id"):
        _verify(webhook_id="")


# --- certificate rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "message"),
    [(NOW + timedelta(days=400), "has expired"), (NOW - timedelta(days=2), "not valid yet")],
)
def test_certificate_must_be_valid_now(now: datetime, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        _verify(now=now)


def test_expired_certificate_is_rejected_even_with_a_good_signature() -> None:
    short = make_test_pki(NOW - timedelta(days=30), valid_for=timedelta(days=10))
    headers = _headers(BODY, key=short.leaf_key)
    with pytest.raises(VerificationError, match="has expired"):
        _verify(headers=headers, bundle=short.bundle)
    earlier = NOW - timedelta(days=25)  # inside the leaf's validity, sent then
    sent = _headers(BODY, key=short.leaf_key, time=earlier.isoformat())
    _verify(headers=sent, bundle=short.bundle, now=earlier)


@pytest.mark.parametrize(
    "cn", ["evil.example.com", "paypal.com.evil.example", "www.paypal.com", "api.paypal.com"]
)
def test_certificate_must_carry_a_paypal_signing_name(cn: str) -> None:
    other = make_test_pki(NOW, cn=cn)
    with pytest.raises(VerificationError, match="not a PayPal signing name"):
        _verify(headers=_headers(BODY, key=other.leaf_key), bundle=other.bundle)


def test_accepted_names_are_configurable_and_case_insensitive() -> None:
    live = make_test_pki(NOW, cn="MessageVerificationCerts.PayPal.com")
    _verify(headers=_headers(BODY, key=live.leaf_key), bundle=live.bundle)
    with pytest.raises(VerificationError, match="not a PayPal signing name"):
        _verify(
            headers=_headers(BODY, key=live.leaf_key),
            bundle=live.bundle,
            accepted_cns={"messageverificationcerts.sandbox.paypal.com"},
        )


def test_leaf_not_signed_by_the_bundled_issuer_is_rejected() -> None:
    rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = make_test_pki(NOW, issuer_key=rogue)  # names the CA, signed by another key
    with pytest.raises(VerificationError, match="not signed by an issuer in its bundle"):
        _verify(headers=_headers(BODY, key=forged.leaf_key), bundle=forged.bundle)


def test_leaf_alone_without_its_issuer_is_rejected() -> None:
    with pytest.raises(VerificationError, match="not signed by an issuer in its bundle"):
        _verify(bundle=_pem(pki().leaf_cert))


def test_issuer_that_is_not_a_ca_is_rejected() -> None:
    # A bundle whose "issuer" is the leaf's own twin without CA rights: re-sign a cert
    # with the leaf key and bundle the leaf as its issuer.
    leaf = pki().leaf_cert
    child = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.subject)
        .public_key(pki().leaf_key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(pki().leaf_key, hashes.SHA256())
    )
    with pytest.raises(VerificationError, match="not signed by an issuer"):
        _verify(bundle=_pem(child, leaf))


def test_pinned_roots_must_be_reached() -> None:
    _verify(trust_roots=[pki().ca_cert])
    other = make_test_pki(NOW)
    with pytest.raises(VerificationError, match="does not reach a pinned root"):
        _verify(trust_roots=[other.ca_cert])


def test_pinned_issuer_allows_a_leaf_only_bundle() -> None:
    # PayPal's SDKs ship the issuer themselves; a leaf-only response then still verifies.
    _verify(bundle=_pem(pki().leaf_cert), trust_roots=[pki().ca_cert])


@pytest.mark.parametrize(
    "bundle",
    [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
)
def test_unreadable_bundles_are_rejected(bundle: bytes) -> None:
    with pytest.raises(VerificationError, match="PEM certificates"):
        _verify(bundle=bundle)


def test_oversize_bundle_is_rejected() -> None:
    with pytest.raises(VerificationError, match="too large"):
        _verify(bundle=pki().bundle + b"\n" * 70_000)


def test_non_rsa_leaf_is_rejected() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "messageverificationcerts.paypal.com")]
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(pki().ca_cert.subject)
        .public_key(ec_key.public_key())
        .serial_number(9)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(pki().ca_key, hashes.SHA256())
    )
    with pytest.raises(VerificationError, match="RSA key"):
        _verify(bundle=_pem(leaf, pki().ca_cert))


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _verify(now=NOW.replace(tzinfo=None))


def test_sync_verify_cannot_be_misused() -> None:
    provider = PayPalProvider()
    with pytest.raises(VerificationError, match="needs verify_async"):
        provider.verify(BODY, _headers(BODY), [{"webhook_id": WEBHOOK_ID}], NOW)


@pytest.mark.parametrize(
    ("skew", "accepted"),
    [
        (timedelta(0), True),
        (-timedelta(days=3), True),
        (-timedelta(days=3, seconds=1), False),
        (timedelta(minutes=5), True),  # clock skew
        (timedelta(minutes=5, seconds=1), False),  # a future time is no retry: no 3 days
    ],
)
def test_tolerance_bounds_the_transmission_time(skew: timedelta, accepted: bool) -> None:
    window = timedelta(days=3)
    headers = _headers(BODY, time=(NOW + skew).isoformat().replace("+00:00", "Z"))
    _verify(headers=headers, tolerance=None)  # no window: any transmission time passes
    if accepted:
        _verify(headers=headers, tolerance=window)
    else:
        with pytest.raises(VerificationError, match=r"older than|in the future"):
            _verify(headers=headers, tolerance=window)


def test_a_window_under_the_clock_skew_bounds_the_future_too() -> None:
    ahead = _headers(BODY, time=(NOW + timedelta(seconds=61)).isoformat())
    _verify(headers=ahead, tolerance=timedelta(minutes=2))
    with pytest.raises(VerificationError, match="in the future"):
        _verify(headers=ahead, tolerance=timedelta(minutes=1))


@pytest.mark.parametrize(
    ("age", "accepted"),
    [
        (timedelta(days=3, hours=23), True),  # PayPal's last retries (3 days) keep the time
        (timedelta(days=4), True),
        (timedelta(days=4, seconds=1), False),
    ],
)
def test_freshness_is_on_by_default_and_covers_the_retry_days(
    age: timedelta, accepted: bool
) -> None:
    assert DEFAULT_TOLERANCE == timedelta(days=4)
    headers = _headers(BODY, time=(NOW - age).isoformat())
    if accepted:
        _verify(headers=headers)
    else:
        with pytest.raises(VerificationError, match="older than"):
            _verify(headers=headers)


def test_tolerance_needs_a_readable_transmission_time() -> None:
    headers = _headers(BODY, time="yesterday")
    _verify(headers=headers, tolerance=None)  # what PayPal signed is opaque without a window
    with pytest.raises(VerificationError, match="not an RFC 3339 time"):
        _verify(headers=headers)


def test_read_transmission_keeps_header_values_verbatim() -> None:
    transmission = read_transmission(_headers(BODY))
    assert (transmission.transmission_id, transmission.transmission_time) == (TX_ID, TX_TIME)
    assert transmission.cert_url == CERT_URL and transmission.auth_algo == "SHA256withRSA"


# --- properties ----------------------------------------------------------------------------

_PAYPAL_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "paypal-transmission-id": st.text(max_size=60),
        "paypal-transmission-time": st.text(max_size=40),
        "paypal-transmission-sig": st.one_of(
            st.text(max_size=80),
            st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
        ),
        "paypal-cert-url": st.just(CERT_URL),
        "paypal-auth-algo": st.sampled_from(["SHA256withRSA", "SHA1withRSA", ""]),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=2_048),
    headers=_PAYPAL_HEADERS,
    extra=st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=4),
)
def test_random_requests_are_only_ever_rejected_with_verification_error(
    body: bytes, headers: dict[str, str], extra: dict[str, str]
) -> None:
    merged = {**{k: v for k, v in extra.items() if not k.lower().startswith("paypal-")}, **headers}
    with pytest.raises(VerificationError):
        _verify(body, merged)


@settings(max_examples=100, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=20,
    )
)
def test_random_json_is_accepted_only_with_its_own_signature(doc: object) -> None:
    body = json.dumps(doc).encode()
    headers = _headers(body)
    _verify(body, headers)
    with pytest.raises(VerificationError):
        _verify(body + b" ", headers)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_single_byte_change_breaks_the_signature(body: bytes, data: st.DataObject) -> None:
    headers = _headers(body)
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(body)
    tampered[position] ^= flip
    with pytest.raises(VerificationError):
        _verify(bytes(tampered), headers)
