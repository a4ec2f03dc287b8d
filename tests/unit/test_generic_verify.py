"""Standard Webhooks verification: the standardwebhooks/svix test matrix plus reliability §2.3."""

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
from paywatch.providers.generic import GenericProvider, generic
from paywatch.schemas.models import RawWebhook
from tests.builders.generic import (
    generic_body,
    generic_failure,
    generic_headers,
    sign_generic,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "generic"
RAW_KEY = b"paywatch-generic-test-key-32byte"
SECRET = "whsec_" + base64.b64encode(RAW_KEY).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"previous-generic-test-key-32byte").decode()
SECRETS = [{"signing_secret": SECRET}]
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
T = 1_781_515_812
NOW = datetime.fromtimestamp(T, UTC)
BODY = (FIXTURES / "payment.failed.json").read_bytes()


def _sig(body: bytes, key: bytes = RAW_KEY, msg_id: str = MSG_ID, t: int = T) -> str:
    # Written from the spec (id.timestamp.body, HMAC-SHA256, base64), independently.
    mac = hmac.new(key, f"{msg_id}.{t}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _headers(
    signature: str | None, msg_id: str | None = MSG_ID, t: str | None = str(T)
) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    for name, value in (
        ("webhook-id", msg_id),
        ("webhook-timestamp", t),
        ("webhook-signature", signature),
    ):
        if value is not None:
            headers[name] = value
    return headers


def _verify(
    body: bytes,
    headers: dict[str, str],
    secrets: list[dict[str, str]] = SECRETS,
    now: datetime = NOW,
) -> None:
    generic.verify(body, headers, secrets, now)


def test_good_signature_is_accepted() -> None:
    _verify(BODY, _headers(_sig(BODY)))


def test_the_specs_own_test_vector() -> None:
    # standard-webhooks libraries/python tests: test_sign_function.
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = _headers(expected, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330")
    secret = [{"signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}]
    generic.verify(body, headers, secret, datetime.fromtimestamp(1614265330, UTC))
    assert (
        sign_generic(body, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", MSG_ID, 1614265330) == expected
    )


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_verifies(name: str) -> None:
    body = (FIXTURES / name).read_bytes()
    _verify(body, _headers(_sig(body)))


def test_sample_signer_and_headers_match_the_spec() -> None:
    assert sign_generic(BODY, SECRET, MSG_ID, T) == _sig(BODY)
    headers = generic_headers(BODY, SECRET, MSG_ID, T)
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == (MSG_ID, str(T))
    _verify(BODY, headers)
    sample = generic_body(generic_failure())
    generic.verify(
        sample,
        generic_headers(sample),
        [{"signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}],
        NOW,
    )


@pytest.mark.parametrize(
    "secret",
    [SECRET, SECRET.removeprefix("whsec_"), SECRET.rstrip("="), f" {SECRET} "],
    ids=["prefixed", "unprefixed", "unpadded", "spaces"],
)
def test_secret_forms_accepted_by_the_reference(secret: str) -> None:
    _verify(BODY, _headers(_sig(BODY)), [{"signing_secret": secret}])


def test_rotation_several_signatures_one_valid() -> None:
    entries = ["v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", "v2,abc", _sig(BODY), "v1a,xyz"]
    _verify(BODY, _headers(" ".join(entries)))


def test_rotation_any_secret_set_verifies() -> None:
    old = base64.b64decode(OLD_SECRET.removeprefix("whsec_"))
    _verify(
        BODY,
        _headers(_sig(BODY, old)),
        [{"signing_secret": SECRET}, {"signing_secret": OLD_SECRET}],
    )


def test_wrong_secret_is_rejected_without_leaking_secret_or_expected_signature() -> None:
    with pytest.raises(VerificationError, match="no v1 signature matches") as info:
        _verify(BODY, _headers(_sig(BODY, b"attacker")))
    message = str(info.value)
    assert SECRET not in message and _sig(BODY) not in message and _sig(BODY)[3:] not in message


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 2])
def test_one_tampered_byte_is_rejected(position: int) -> None:
    tampered = bytearray(BODY)
    tampered[position] ^= 0x01
    with pytest.raises(VerificationError, match="no v1 signature matches"):
        _verify(bytes(tampered), _headers(_sig(BODY)))


def test_reserialized_json_body_is_rejected() -> None:
    reserialized = json.dumps(json.loads(BODY)).encode()
    assert reserialized != BODY
    with pytest.raises(VerificationError):
        _verify(reserialized, _headers(_sig(BODY)))


def test_id_and_timestamp_are_signed_too() -> None:
    with pytest.raises(VerificationError):
        _verify(BODY, _headers(_sig(BODY), msg_id="msg_other"))
    with pytest.raises(VerificationError):
        _verify(BODY, _headers(_sig(BODY), t=str(T + 1)), now=NOW)


@pytest.mark.parametrize(
    ("skew", "accepted"),
    [(-300, True), (-301, False), (300, True), (301, False), (-86_400, False)],
)
def test_replay_window_is_five_minutes_both_ways(skew: int, accepted: bool) -> None:
    t = T + skew
    headers = _headers(_sig(BODY, t=t), t=str(t))
    if accepted:
        _verify(BODY, headers)
    else:
        with pytest.raises(VerificationError, match=r"s old|in the future"):
            _verify(BODY, headers)


def test_tolerance_is_a_constructor_argument() -> None:
    t = T - 11
    headers = _headers(_sig(BODY, t=t), t=str(t))
    GenericProvider(tolerance=20).verify(BODY, headers, SECRETS, NOW)
    with pytest.raises(VerificationError, match="10 s old"):
        GenericProvider(tolerance=10).verify(BODY, headers, SECRETS, NOW)
    with pytest.raises(ValueError, match="tolerance"):
        GenericProvider(tolerance=-1)


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("webhook-id", "missing webhook-id"),
        ("webhook-timestamp", "missing webhook-timestamp"),
        ("webhook-signature", "missing webhook-signature"),
    ],
)
def test_missing_headers_are_rejected(drop: str, message: str) -> None:
    headers = _headers(_sig(BODY))
    del headers[drop]
    with pytest.raises(VerificationError, match=message):
        _verify(BODY, headers)


def test_header_lookup_tolerates_other_cases() -> None:
    headers = {k.title(): v for k, v in _headers(_sig(BODY)).items()}
    _verify(BODY, headers)


@pytest.mark.parametrize("t", ["hello", "1.5", "-5", "1e9", "\u0661\u0662", "9" * 40])
def test_malformed_timestamps_are_rejected(t: str) -> None:
    with pytest.raises(VerificationError, match="malformed webhook-timestamp"):
        _verify(BODY, _headers(_sig(BODY), t=t))


@pytest.mark.parametrize(
    "signature", ["garbage", "v1", "v1,", "v1,!!!", "v2," + _sig(BODY)[3:], _sig(BODY)[3:]]
)
def test_malformed_signature_headers_are_rejected(signature: str) -> None:
    with pytest.raises(VerificationError):
        _verify(BODY, _headers(signature))


@pytest.mark.parametrize(
    "secrets",
    [
        [],
        [{"signing_secret": ""}],
        [{"signing_secret": "whsec_"}],
        [{"signing_secret": "whsec_abcde"}],
        [{"hmac_key": SECRET}],
    ],
)
def test_no_usable_secret_is_rejected(secrets: list[dict[str, str]]) -> None:
    with pytest.raises(VerificationError, match="no usable generic signing_secret"):
        _verify(BODY, _headers(_sig(BODY)), secrets)


def test_garbage_body_with_valid_signature_verifies_then_fails_to_parse() -> None:
    garbage = b"\xff\xfe\x00not json"
    _verify(garbage, _headers(_sig(garbage)))
    with pytest.raises(PayloadError):
        generic.parse(garbage)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(st.binary(max_size=2_048), _JSON.map(lambda d: json.dumps(d).encode())),
    extra=st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5),
    msg_id=st.one_of(st.none(), st.text(max_size=30)),
    t=st.one_of(st.none(), st.text(max_size=20), st.integers(T - 400, T + 400).map(str)),
    signature=st.one_of(
        st.none(),
        st.text(max_size=100),
        st.builds(
            lambda b: "v1," + base64.b64encode(b).decode(), st.binary(min_size=32, max_size=32)
        ),
    ),
)
def test_random_requests_are_only_ever_rejected_with_verification_error(
    body: bytes, extra: dict[str, str], msg_id: str | None, t: str | None, signature: str | None
) -> None:
    headers = {k: v for k, v in extra.items() if not k.lower().startswith("webhook-")}
    headers.update(_headers(signature, msg_id, t))
    with pytest.raises(VerificationError):
        _verify(body, headers)


@settings(max_examples=200, deadline=None)
@given(doc=_JSON, msg_id=st.text(min_size=1, max_size=30), skew=st.integers(-300, 300))
def test_random_json_is_accepted_only_with_its_own_signature(
    doc: object, msg_id: str, skew: int
) -> None:
    body = json.dumps(doc).encode()
    t = T + skew
    headers = _headers(_sig(body, msg_id=msg_id, t=t), msg_id, str(t))
    _verify(body, headers)
    with pytest.raises(VerificationError):
        _verify(body + b" ", headers)
    raw = RawWebhook(
        ingest_id="i",
        tenant="acme",
        provider="generic",
        received_at=NOW,
        headers=headers,
        body=body,
    )
    try:
        generic.normalize(raw, "webhooks.raw", 0, 1)
    except (PayloadError, CardDataError):
        pass


@settings(max_examples=200, deadline=None)
@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_single_byte_change_breaks_the_signature(body: bytes, data: st.DataObject) -> None:
    headers = _headers(_sig(body))
    _verify(body, headers)
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(body)
    tampered[position] ^= flip
    with pytest.raises(VerificationError):
        _verify(bytes(tampered), headers)
