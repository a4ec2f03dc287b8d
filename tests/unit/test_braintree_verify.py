"""Braintree bt_signature verification and the bt_challenge handshake (reliability §2.3 matrix)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import CardDataError, PayloadError, VerificationError
from paywatch.providers.braintree import BraintreeProvider, braintree, challenge_response
from paywatch.schemas.models import RawWebhook
from tests.builders.braintree import (
    braintree_body,
    braintree_failure,
    braintree_notification_xml,
    braintree_payload,
    sign_braintree,
)

PUBLIC = "pk_primary_3d7f"
PRIVATE = "sk_primary_9a8b7c6d5e4f3a2b"
OLD_PUBLIC = "pk_previous_1c2d"
OLD_PRIVATE = "sk_previous_0f1e2d3c4b5a6978"
NOW = datetime(2026, 6, 15, 9, 30, 30, tzinfo=UTC)
SECRETS = [{"public_key": PUBLIC, "private_key": PRIVATE}]
XML = braintree_failure()
PAYLOAD = braintree_payload(XML)


def _sig(payload: str, private_key: str) -> str:
    # Written from the documented algorithm, independently of the module under test.
    key = hashlib.sha1(private_key.encode()).digest()
    return hmac.new(key, payload.encode(), hashlib.sha1).hexdigest()


def _form(signature: str, payload: str = PAYLOAD) -> bytes:
    return urlencode({"bt_signature": signature, "bt_payload": payload}).encode()


def _verify(body: bytes, secrets: list[dict[str, str]] = SECRETS, now: datetime = NOW) -> None:
    braintree.verify(body, {"content-type": "application/x-www-form-urlencoded"}, secrets, now)


def test_good_signature_is_accepted() -> None:
    _verify(_form(f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}"))


def test_payload_is_mime_base64_with_newlines() -> None:
    assert "\n" in PAYLOAD
    assert PAYLOAD == base64.encodebytes(XML.encode()).decode()


def test_sample_signer_matches_the_documented_algorithm() -> None:
    assert sign_braintree(PAYLOAD, PUBLIC, PRIVATE) == f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}"
    assert braintree_body(XML, PUBLIC, PRIVATE) == _form(f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}")


def test_signature_over_payload_plus_trailing_newline_is_accepted() -> None:
    _verify(_form(f"{PUBLIC}|{_sig(PAYLOAD + chr(10), PRIVATE)}"))


def test_signature_over_payload_plus_other_suffix_is_rejected() -> None:
    with pytest.raises(VerificationError, match="does not match"):
        _verify(_form(f"{PUBLIC}|{_sig(PAYLOAD + ' ', PRIVATE)}"))


def test_the_pair_with_the_tenants_public_key_is_used() -> None:
    signature = f"other_pk|{_sig(PAYLOAD, 'x')}&{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}"
    _verify(_form(signature))


def test_a_valid_signature_under_another_public_key_is_not_enough() -> None:
    with pytest.raises(VerificationError, match="no pair for the tenant's public key"):
        _verify(_form(f"other_pk|{_sig(PAYLOAD, PRIVATE)}"))


def test_rotation_any_secret_set_verifies() -> None:
    rotated = [SECRETS[0], {"public_key": OLD_PUBLIC, "private_key": OLD_PRIVATE}]
    _verify(_form(f"{OLD_PUBLIC}|{_sig(PAYLOAD, OLD_PRIVATE)}"), rotated)
    _verify(_form(f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}"), rotated)


def test_rotation_same_public_key_new_private_key() -> None:
    rotated = [SECRETS[0], {"public_key": PUBLIC, "private_key": OLD_PRIVATE}]
    _verify(_form(f"{PUBLIC}|{_sig(PAYLOAD, OLD_PRIVATE)}"), rotated)


def test_wrong_private_key_is_rejected_without_leaking_secrets() -> None:
    with pytest.raises(VerificationError, match="does not match") as info:
        _verify(_form(f"{PUBLIC}|{_sig(PAYLOAD, 'sk_attacker')}"))
    message = str(info.value)
    assert PRIVATE not in message
    assert _sig(PAYLOAD, PRIVATE) not in message


def test_one_tampered_payload_character_is_rejected() -> None:
    position = len(PAYLOAD) // 2
    swapped = "B" if PAYLOAD[position] != "B" else "C"
    tampered = PAYLOAD[:position] + swapped + PAYLOAD[position + 1 :]
    with pytest.raises(VerificationError, match="does not match"):
        _verify(_form(f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}", tampered))


@pytest.mark.parametrize("position", [0, 200, -5, -1])
def test_one_flipped_body_byte_is_rejected(position: int) -> None:
    body = bytearray(_form(f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}"))
    body[position] ^= 0x01
    with pytest.raises(VerificationError):
        _verify(bytes(body))


def test_rewrapped_base64_of_the_same_xml_is_rejected() -> None:
    # The signature covers the bt_payload string: the same XML re-encoded is another string.
    rewrapped = base64.b64encode(XML.encode()).decode()
    assert base64.b64decode(rewrapped) == base64.decodebytes(PAYLOAD.encode())
    with pytest.raises(VerificationError, match="does not match"):
        _verify(_form(f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}", rewrapped))


def test_reencoded_form_with_the_same_fields_is_accepted() -> None:
    # Braintree signs the form-decoded bt_payload, not the HTTP body (reference §2.3).
    signature = f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}"
    payload = quote(PAYLOAD, safe="").replace("%0A", "%0a")
    body = f"bt_payload={payload}&bt_signature={quote(signature)}"
    assert body.encode() != _form(signature)
    _verify(body.encode())


def test_now_is_not_checked_braintree_signs_no_time() -> None:
    body = _form(f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}")
    _verify(body, now=datetime(2031, 1, 1, tzinfo=UTC))
    _verify(body, now=datetime(2001, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "bt_signature is missing"),
        (b"bt_payload=abc", "bt_signature is missing"),
        (f"bt_signature={PUBLIC}%7Cab".encode(), "bt_payload is missing"),
        (b"bt_signature=&bt_payload=abc", "bt_signature is missing, empty"),
        (b"bt_signature=a%7Cb&bt_signature=a%7Cb&bt_payload=abc", "repeated"),
        (b"bt_signature=a%7Cb&&bt_payload=abc", "not a form"),
        (b"bt_signature=a%7Cb&bt_payload=%ff", "not a form"),
        ("bt_signature=a%7Cb&bt_payload=\u00e9".encode(), "not a form"),
        (b"&".join([b"x=1"] * 20) + b"&bt_signature=a%7Cb&bt_payload=abc", "not a form"),
        (b"bt_signature=nopipe&bt_payload=abc", "malformed bt_signature"),
        (b"bt_signature=a%7Cb&bt_payload=ab%20cd", "outside MIME base64"),
        (b"bt_signature=a%7Cb&bt_payload=ab%0D%0Acd", "outside MIME base64"),
        ("bt_signature=" + "%26".join(["p%7Cs"] * 17) + "&bt_payload=abc", "more than 16"),
    ],
)
def test_malformed_forms_are_rejected_precisely(body: bytes | str, message: str) -> None:
    raw = body.encode() if isinstance(body, str) else body
    with pytest.raises(VerificationError, match=message):
        _verify(raw)


@pytest.mark.parametrize(
    "secrets",
    [
        [],
        [{"public_key": PUBLIC}],
        [{"private_key": PRIVATE}],
        [{"public_key": "", "private_key": ""}],
    ],
)
def test_no_key_pair_configured_is_rejected(secrets: list[dict[str, str]]) -> None:
    with pytest.raises(VerificationError, match="no Braintree public_key/private_key"):
        _verify(_form(f"{PUBLIC}|{_sig(PAYLOAD, PRIVATE)}"), secrets)


def test_non_ascii_signature_is_rejected_not_crashing() -> None:
    with pytest.raises(VerificationError, match="does not match"):
        _verify(_form(f"{PUBLIC}|\u00e9\u00e9"))


def test_garbage_bytes_are_rejected() -> None:
    with pytest.raises(VerificationError):
        _verify(b"\xff\xfe\x00\x01garbage")


def test_a_signed_garbage_payload_verifies_then_fails_to_parse() -> None:
    payload = "bm90IHhtbA==\n"  # "not xml"
    body = _form(f"{PUBLIC}|{_sig(payload, PRIVATE)}", payload)
    _verify(body)
    with pytest.raises(PayloadError):
        braintree.parse(body)


# --- bt_challenge --------------------------------------------------------------------------

CHALLENGE = "38a5c2f1d0e94b7a6c3f"


def test_challenge_response_is_public_key_and_hmac_of_the_challenge() -> None:
    expected = f"{PUBLIC}|{_sig(CHALLENGE, PRIVATE)}"
    assert challenge_response(CHALLENGE, SECRETS) == expected
    assert braintree.challenge_response(CHALLENGE, SECRETS) == expected


def test_challenge_response_uses_the_newest_key_pair() -> None:
    rotated = [SECRETS[0], {"public_key": OLD_PUBLIC, "private_key": OLD_PRIVATE}]
    assert challenge_response(CHALLENGE, rotated).startswith(f"{PUBLIC}|")
    skipped = [{"public_key": "", "private_key": ""}, *rotated]
    assert challenge_response(CHALLENGE, skipped) == challenge_response(CHALLENGE, SECRETS)


@pytest.mark.parametrize(
    "challenge",
    [
        "",
        "a" * 19,
        "a" * 33,
        "38A5C2F1D0E94B7A6C3F",
        CHALLENGE + "\n",
        "38a5c2f1d0e94b7a6c3g",
        "x" * 20,
    ],
)
def test_bad_challenges_are_rejected(challenge: str) -> None:
    with pytest.raises(VerificationError, match="bt_challenge must be"):
        challenge_response(challenge, SECRETS)


@pytest.mark.parametrize("length", [20, 32])
def test_challenge_length_bounds_are_accepted(length: int) -> None:
    assert challenge_response("f" * length, SECRETS).startswith(f"{PUBLIC}|")


def test_challenge_without_keys_is_rejected() -> None:
    with pytest.raises(VerificationError, match="no Braintree public_key"):
        challenge_response(CHALLENGE, [])


# --- properties --------------------------------------------------------------------------

_HEADERS = st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5)
_FIELDS = st.dictionaries(
    st.sampled_from(["bt_signature", "bt_payload", "bt_challenge", "x"]) | st.text(max_size=10),
    st.text(max_size=80),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=2_048), headers=_HEADERS)
def test_random_bytes_are_only_ever_rejected_with_verification_error(
    body: bytes, headers: dict[str, str]
) -> None:
    with pytest.raises(VerificationError):
        braintree.verify(body, headers, SECRETS, NOW)


@settings(max_examples=300, deadline=None)
@given(fields=_FIELDS, headers=_HEADERS)
def test_random_forms_are_only_ever_rejected_with_verification_error(
    fields: dict[str, str], headers: dict[str, str]
) -> None:
    with pytest.raises(VerificationError):
        braintree.verify(urlencode(fields).encode(), headers, SECRETS, NOW)


_XMLISH = st.one_of(
    st.text(min_size=1, max_size=300),
    st.builds(
        braintree_notification_xml,
        st.sampled_from(["subscription_charged_unsuccessfully", "transaction_settled", "check"])
        | st.text(max_size=20),
        st.text(max_size=200),
        timestamp=st.sampled_from(["2026-06-15T09:30:12Z", "nope", ""]) | st.text(max_size=30),
    ),
)


def _raw(body: bytes) -> RawWebhook:
    return RawWebhook(
        ingest_id="i", tenant="acme", provider="braintree", received_at=NOW, body=body
    )


@settings(max_examples=300, deadline=None)
@given(xml=_XMLISH)
def test_signed_random_payloads_verify_and_only_raise_provider_errors(xml: str) -> None:
    payload = braintree_payload(xml)
    body = _form(f"{PUBLIC}|{_sig(payload, PRIVATE)}", payload)
    _verify(body)
    try:
        doc = braintree.parse(body)
        braintree.subject(doc)
        braintree.provider_event_id(doc)
        BraintreeProvider(default_currency="EUR").normalize(_raw(body), "webhooks.raw", 0, 0)
    except (PayloadError, CardDataError):
        pass


@settings(max_examples=200, deadline=None)
@given(xml=st.text(min_size=1, max_size=200), data=st.data())
def test_any_payload_change_breaks_the_signature(xml: str, data: st.DataObject) -> None:
    payload = braintree_payload(xml)
    signature = f"{PUBLIC}|{_sig(payload, PRIVATE)}"
    position = data.draw(st.integers(min_value=0, max_value=len(payload) - 2))
    replacement = data.draw(st.sampled_from("ABab09+/="))
    tampered = payload[:position] + replacement + payload[position + 1 :]
    if tampered in (payload, payload + "\n"):
        return
    with pytest.raises(VerificationError):
        _verify(_form(signature, tampered))
