"""Adyen per-item hmacSignature verification: the reliability §2.3 matrix, adapted.

Adyen signs eight fields of each item, not the raw bytes and not a time: re-serialized
bodies stay valid, edits to unsigned fields stay valid, and there is no replay window.
The tests below pin those facts down as well as the rejections.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import CardDataError, PayloadError, VerificationError
from paywatch.providers.adyen import AdyenProvider, adyen
from paywatch.providers.adyen.signature import signing_string
from tests.builders.adyen import (
    adyen_body,
    adyen_failure,
    adyen_headers,
    adyen_item,
    adyen_notification,
    sign_adyen,
    sign_adyen_item,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "adyen"
KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
OLD_KEY = "0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1F0"
SECRETS = [{"hmac_key": KEY}]
NOW = datetime(2026, 6, 15, 9, 31, tzinfo=UTC)
SIGNED = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
)


def _expected(item: dict[str, Any], key: str) -> str:
    # Written from the documented algorithm (webhooks.md §2.7), independently of the module.
    amount = item.get("amount", {})
    values = {**item, "value": amount.get("value", ""), "currency": amount.get("currency", "")}
    # null is signed as "" (Node library; Python's util.py would write "None") [U].
    texts = ("" if values.get(name) is None else str(values[name]) for name in SIGNED)
    message = ":".join(texts)
    digest = hmac.new(bytes.fromhex(key), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _sign(doc: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    signed = copy.deepcopy(doc)
    for entry in signed["notificationItems"]:
        item = entry["NotificationRequestItem"]
        item.setdefault("additionalData", {})["hmacSignature"] = _expected(item, key)
    return signed


def _fixture(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return doc


def _body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2).encode()


def _verify(body: bytes, secrets: list[dict[str, str]] = SECRETS, now: datetime = NOW) -> None:
    adyen.verify(body, {"content-type": "application/json"}, secrets, now)


REFUSED = _fixture("authorisation.refused.json")
BODY = _body(_sign(REFUSED))


def _first(doc: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = doc["notificationItems"][0]["NotificationRequestItem"]
    return item


# --- accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_verifies_once_signed(name: str) -> None:
    _verify(_body(_sign(_fixture(name))))


def test_signing_string_is_the_documented_colon_join_with_empty_missing_fields() -> None:
    item = _first(REFUSED)
    assert signing_string(item) == (
        "QFQTPCQ8HXSKGK82::PaywatchDemoECOM:INV-2026-0615:4900:EUR:AUTHORISATION:false"
    )


def test_colons_and_backslashes_are_not_escaped() -> None:
    item = {**_first(REFUSED), "merchantReference": r"INV:7\x"}
    assert r":INV:7\x:4900:" in signing_string(item)
    doc = adyen_notification(item)
    _verify(_body(_sign(doc)))


def test_missing_amount_signs_empty_value_and_currency() -> None:
    item = {k: v for k, v in _first(REFUSED).items() if k != "amount"}
    assert signing_string(item).endswith("INV-2026-0615:::AUTHORISATION:false")
    _verify(_body(_sign(adyen_notification(item))))


def test_sample_signer_matches_the_documented_algorithm() -> None:
    item = adyen_item()
    assert sign_adyen_item(item, KEY) == _expected(item, KEY)
    assert sign_adyen(adyen_notification(item), KEY) == _sign(adyen_notification(item))
    assert adyen_headers(BODY) == {"content-type": "application/json"}


def test_sample_failure_is_signed_with_the_sample_key() -> None:
    from tests.builders.adyen import HMAC_KEY

    adyen.verify(adyen_body(adyen_failure()), {}, [{"hmac_key": HMAC_KEY}], NOW)


def test_lower_case_hex_key_is_the_same_key() -> None:
    _verify(BODY, [{"hmac_key": KEY.lower()}])


def test_rotation_any_secret_set_verifies() -> None:
    body = _body(_sign(REFUSED, OLD_KEY))
    _verify(body, [{"hmac_key": KEY}, {"hmac_key": OLD_KEY}])
    with pytest.raises(VerificationError):
        _verify(body, [{"hmac_key": KEY}])


def test_reserialized_body_still_verifies_because_adyen_signs_fields_not_bytes() -> None:
    reserialized = json.dumps(json.loads(BODY), separators=(",", ":"), sort_keys=True).encode()
    assert reserialized != BODY
    _verify(reserialized)


def test_unsigned_fields_are_not_covered_by_adyens_signature() -> None:
    # A known limit of Adyen's scheme: reason, eventDate and additionalData are unsigned.
    doc = json.loads(BODY)
    _first(doc)["reason"] = "FRAUD"
    _first(doc)["eventDate"] = "2020-01-01T00:00:00+00:00"
    _verify(_body(doc))


@pytest.mark.parametrize("skew", [timedelta(days=-400), timedelta(days=400)])
def test_no_replay_window_because_adyen_signs_no_time(skew: timedelta) -> None:
    _verify(BODY, now=NOW + skew)


# --- rejected ----------------------------------------------------------------------------


def test_wrong_secret_is_rejected_without_leaking_secret_or_expected_signature() -> None:
    with pytest.raises(VerificationError, match="not signed by any configured") as info:
        _verify(BODY, [{"hmac_key": OLD_KEY}])
    message = str(info.value)
    assert KEY not in message and OLD_KEY not in message
    assert _expected(_first(REFUSED), OLD_KEY) not in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pspReference", "QFQTPCQ8HXSKGK83"),
        ("originalReference", "X"),
        ("merchantAccountCode", "PaywatchDemoECON"),
        ("merchantReference", "INV-2026-0616"),
        ("eventCode", "AUTHORISATIOM"),
        ("success", "true"),
    ],
)
def test_each_signed_field_is_covered(field: str, value: str) -> None:
    doc = json.loads(BODY)
    _first(doc)[field] = value
    with pytest.raises(VerificationError):
        _verify(_body(doc))


@pytest.mark.parametrize(("field", "value"), [("value", 4901), ("currency", "EUS")])
def test_amount_is_covered(field: str, value: object) -> None:
    doc = json.loads(BODY)
    _first(doc)["amount"][field] = value
    with pytest.raises(VerificationError):
        _verify(_body(doc))


def test_one_tampered_byte_in_a_signed_value_is_rejected() -> None:
    tampered = BODY.replace(b'"value": 4900', b'"value": 4800')
    assert tampered != BODY
    with pytest.raises(VerificationError):
        _verify(tampered)


def test_one_bad_item_rejects_the_whole_batch() -> None:
    batch = _sign(_fixture("batch.json"))
    _verify(_body(batch))
    batch["notificationItems"][2]["NotificationRequestItem"]["amount"]["value"] = 1
    with pytest.raises(VerificationError, match="item 2"):
        _verify(_body(batch))


@pytest.mark.parametrize("signature", [None, "", 5, "not base64 at all", "\u00e9t\u00e9"])
def test_missing_or_malformed_signature_is_rejected(signature: object) -> None:
    doc = json.loads(BODY)
    if signature is None:
        del _first(doc)["additionalData"]["hmacSignature"]
    else:
        _first(doc)["additionalData"]["hmacSignature"] = signature
    with pytest.raises(VerificationError, match="item 0"):
        _verify(_body(doc))


def test_item_without_additional_data_is_rejected() -> None:
    doc = json.loads(BODY)
    del _first(doc)["additionalData"]
    with pytest.raises(VerificationError, match=r"no additionalData\.hmacSignature"):
        _verify(_body(doc))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not strict JSON"),
        (b"\xff\xfe garbage", "not UTF-8"),
        (b"[]", "JSON object"),
        (b'{"notificationItems": []}', "no 'notificationItems'"),
        (b'{"notificationItems": [1]}', "no NotificationRequestItem"),
        (b'{"notificationItems": [{"NotificationRequestItem": []}]}', "no NotificationRequestItem"),
        (b'{"live": NaN, "notificationItems": []}', "not strict JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply|JSON object"),
    ],
)
def test_unreadable_bodies_are_rejected_as_unverifiable(body: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        _verify(body)


def test_duplicate_keys_are_rejected_so_no_reader_sees_other_values() -> None:
    signed = BODY.decode()
    duplicated = signed.replace('"success": "false"', '"success": "false", "success": "true"')
    assert duplicated != signed
    with pytest.raises(VerificationError, match="duplicate key"):
        _verify(duplicated.encode())


def test_item_and_size_limits_are_enforced() -> None:
    batch = _body(_sign(adyen_notification(*([_first(REFUSED)] * 3))))
    AdyenProvider(max_items=3).verify(batch, {}, SECRETS, NOW)
    with pytest.raises(VerificationError, match="more than 2 items"):
        AdyenProvider(max_items=2).verify(batch, {}, SECRETS, NOW)
    with pytest.raises(VerificationError, match="larger than 100 bytes"):
        AdyenProvider(max_body=100).verify(batch, {}, SECRETS, NOW)


@pytest.mark.parametrize(
    "secrets",
    [[], [{"hmac_key": ""}], [{"hmac_key": "not hex"}], [{"signature_key": KEY}]],
)
def test_no_usable_key_configured_is_rejected(secrets: list[dict[str, str]]) -> None:
    with pytest.raises(VerificationError, match="no usable Adyen hmac_key"):
        _verify(BODY, secrets)


def test_malformed_key_in_one_set_does_not_hide_a_good_one() -> None:
    _verify(BODY, [{"hmac_key": "zz"}, {"hmac_key": KEY}])


@pytest.mark.parametrize("value", [49.0, [4900], {"v": 1}])
def test_signed_fields_of_other_types_are_rejected(value: object) -> None:
    doc = json.loads(BODY)
    _first(doc)["amount"]["value"] = value
    with pytest.raises(VerificationError, match=r"amount\.value"):
        _verify(_body(doc))


def test_boolean_success_is_signed_as_lower_case_text() -> None:
    item = {**_first(REFUSED), "success": False}
    assert signing_string(item).endswith(":AUTHORISATION:false")


def test_lone_surrogates_are_rejected_not_crashing() -> None:
    doc = json.loads(BODY)
    _first(doc)["merchantReference"] = "\ud800"
    with pytest.raises(VerificationError, match="unencodable"):
        _verify(json.dumps(doc).encode())


def test_invalid_construction_is_refused() -> None:
    with pytest.raises(ValueError, match="scope"):
        AdyenProvider(scope="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        AdyenProvider(max_items=0)


# --- properties --------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_TEXT = st.one_of(st.none(), st.text(max_size=20))
_ITEMS = st.fixed_dictionaries(
    {
        "pspReference": st.text(min_size=1, max_size=20),
        "eventCode": st.sampled_from(["AUTHORISATION", "CAPTURE_FAILED", "CHARGEBACK", "X"]),
        "success": st.sampled_from(["true", "false"]),
    },
    optional={
        "originalReference": _TEXT,
        "merchantReference": _TEXT,
        "merchantAccountCode": _TEXT,
        "amount": st.fixed_dictionaries(
            {},
            optional={
                "value": st.integers(-(10**12), 10**12),
                "currency": st.text(max_size=4),
            },
        ),
        "eventDate": st.one_of(st.text(max_size=30), st.just("2026-06-15T11:30:12+02:00")),
        "reason": _TEXT,
        "paymentMethod": _TEXT,
        "additionalData": st.dictionaries(st.text(max_size=30), st.text(max_size=30)),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(st.binary(max_size=2_048), _JSON.map(lambda d: json.dumps(d).encode())),
    headers=st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5),
)
def test_random_requests_are_only_ever_rejected_with_verification_error(
    body: bytes, headers: dict[str, str]
) -> None:
    with pytest.raises(VerificationError):
        adyen.verify(body, headers, SECRETS, NOW)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(_ITEMS, min_size=1, max_size=3))
def test_random_items_are_accepted_only_with_their_own_signatures(
    items: list[dict[str, Any]],
) -> None:
    try:
        doc = _sign(adyen_notification(*items))
        body = json.dumps(doc).encode("utf-8")
    except UnicodeEncodeError:
        return  # surrogates: not signable text, covered above
    _verify(body)
    with pytest.raises(VerificationError):
        _verify(body, [{"hmac_key": OLD_KEY}])
    try:
        adyen.normalize(_raw(body), "webhooks.raw", 0, 1)
    except (PayloadError, CardDataError):
        pass


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_changed_byte_is_accepted_only_when_no_signed_field_changed(
    data: st.DataObject,
) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(BODY) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(BODY)
    tampered[position] ^= flip
    try:
        _verify(bytes(tampered))
    except VerificationError:
        return
    before = json.loads(BODY)["notificationItems"]
    after = json.loads(bytes(tampered))["notificationItems"]
    assert [signing_string(e["NotificationRequestItem"]) for e in after] == [
        signing_string(e["NotificationRequestItem"]) for e in before
    ]


def _raw(body: bytes) -> Any:
    from paywatch.schemas.models import RawWebhook

    return RawWebhook(
        ingest_id="ing-1", tenant="acme", provider="adyen", received_at=NOW, body=body
    )
