"""QuickBooks intuit-signature verification (reliability §2.3 matrix), both payload formats."""

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
from paywatch.providers.pan import contains_pan
from paywatch.providers.quickbooks import QuickBooksProvider, quickbooks
from paywatch.schemas.models import RawWebhook
from tests.builders.quickbooks import (
    VERIFIER_TOKEN,
    qbo_body,
    qbo_cloudevent,
    qbo_entity,
    qbo_legacy,
    quickbooks_headers,
    sign_quickbooks,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "quickbooks"
NOW = datetime(2026, 6, 15, 9, 31, tzinfo=UTC)
OLD_TOKEN = "previous-verifier-token"
LEGACY = (FIXTURES / "legacy.invoice.update.json").read_bytes()
CLOUD = (FIXTURES / "cloudevents.invoice.updated.json").read_bytes()
SECRETS = [{"verifier_token": VERIFIER_TOKEN}]


def _sig(body: bytes, key: str) -> str:
    # The documented algorithm (§2.6, WebhooksService.verifyPayload), written independently.
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def _verify(body: bytes, signature: str | None, secrets: list[dict[str, str]] = SECRETS) -> None:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["intuit-signature"] = signature
    quickbooks.verify(body, headers, secrets, NOW)


@pytest.mark.parametrize("body", [LEGACY, CLOUD])
def test_good_signature_is_accepted_for_both_formats(body: bytes) -> None:
    _verify(body, _sig(body, VERIFIER_TOKEN))


def test_sample_signer_matches_the_documented_algorithm() -> None:
    assert sign_quickbooks(LEGACY) == _sig(LEGACY, VERIFIER_TOKEN)
    assert quickbooks_headers(LEGACY)["intuit-signature"] == _sig(LEGACY, VERIFIER_TOKEN)


def test_rotation_any_secret_set_verifies() -> None:
    old = _sig(LEGACY, OLD_TOKEN)
    _verify(LEGACY, old, [{"verifier_token": VERIFIER_TOKEN}, {"verifier_token": OLD_TOKEN}])
    with pytest.raises(VerificationError, match="does not match"):
        _verify(LEGACY, old)


def test_wrong_token_is_rejected_without_leaking_secrets() -> None:
    with pytest.raises(VerificationError, match="does not match") as info:
        _verify(LEGACY, _sig(LEGACY, "client-secret-is-not-the-verifier"))
    assert VERIFIER_TOKEN not in str(info.value)
    assert _sig(LEGACY, VERIFIER_TOKEN) not in str(info.value)


@pytest.mark.parametrize("position", [0, len(LEGACY) // 2, len(LEGACY) - 2])
def test_one_tampered_byte_is_rejected(position: int) -> None:
    tampered = bytearray(LEGACY)
    tampered[position] ^= 0x01
    with pytest.raises(VerificationError, match="does not match"):
        _verify(bytes(tampered), _sig(LEGACY, VERIFIER_TOKEN))


@pytest.mark.parametrize("body", [LEGACY, CLOUD])
def test_reserialized_body_is_rejected(body: bytes) -> None:
    reserialized = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert reserialized != body
    with pytest.raises(VerificationError, match="does not match"):
        _verify(reserialized, _sig(body, VERIFIER_TOKEN))


def test_no_time_is_signed_so_now_does_not_matter() -> None:
    headers = {"intuit-signature": _sig(LEGACY, VERIFIER_TOKEN)}
    quickbooks.verify(LEGACY, headers, SECRETS, datetime(2001, 1, 1, tzinfo=UTC))


def test_missing_header_is_rejected() -> None:
    with pytest.raises(VerificationError, match="missing intuit-signature"):
        _verify(LEGACY, None)


@pytest.mark.parametrize("signature", ["", "%%%", "YWJj", _sig(LEGACY, VERIFIER_TOKEN)[:-2]])
def test_malformed_headers_are_rejected(signature: str) -> None:
    with pytest.raises(VerificationError, match="malformed intuit-signature"):
        _verify(LEGACY, signature)


@pytest.mark.parametrize(
    "secrets", [[], [{"verifier_token": ""}], [{"client_secret": VERIFIER_TOKEN}]]
)
def test_no_token_configured_is_rejected(secrets: list[dict[str, str]]) -> None:
    with pytest.raises(VerificationError, match="no QuickBooks verifier_token"):
        _verify(LEGACY, _sig(LEGACY, VERIFIER_TOKEN), secrets)


def test_garbage_bytes_verify_only_with_their_own_signature_then_fail_to_parse() -> None:
    garbage = b"\x00\x01garbage"
    with pytest.raises(VerificationError):
        _verify(garbage, _sig(LEGACY, VERIFIER_TOKEN))
    _verify(garbage, _sig(garbage, VERIFIER_TOKEN))
    with pytest.raises(PayloadError):
        quickbooks.parse(garbage)


def test_provider_attributes() -> None:
    assert (quickbooks.name, quickbooks.secret_names) == ("quickbooks", ("verifier_token",))
    assert (quickbooks.thin, quickbooks.empty_ack) == (True, False)
    assert quickbooks.handshake(quickbooks.parse(LEGACY)) is False
    with pytest.raises(ValueError, match="default_currency"):
        QuickBooksProvider(default_currency="dollars")


# --- card-number check that ignores realm ids ---------------------------------------------

LUHN_REALM = "4620816365257778219"  # sandbox-style realm id that passes the Luhn check


@pytest.mark.parametrize(
    "doc",
    [
        qbo_legacy(qbo_entity(), realm_id=LUHN_REALM),
        [qbo_cloudevent(realm_id=LUHN_REALM)],
    ],
)
def test_realm_ids_are_not_card_numbers(doc: object) -> None:
    body = qbo_body(doc)
    assert contains_pan(body)  # the generic byte scan would reject the delivery
    assert not quickbooks.contains_pan(body)


def test_card_numbers_elsewhere_are_still_found() -> None:
    entity = {**qbo_entity(), "id": "4242424242424242"}
    assert quickbooks.contains_pan(qbo_body(qbo_legacy(entity)))
    assert quickbooks.contains_pan(b"not json 4242 4242 4242 4242")
    assert not quickbooks.contains_pan(LEGACY)


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
    headers = {k: v for k, v in extra.items() if k.lower() != "intuit-signature"}
    if signature is not None:
        headers["intuit-signature"] = signature
    with pytest.raises(VerificationError):
        quickbooks.verify(body, headers, SECRETS, NOW)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
_TIMES = st.sampled_from(["2026-06-15T09:30:12.123Z", "2015-10-05T14:42:19-0700", "1781515812123"])
_ENTITIES = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["Invoice", "Payment", "Customer"]) | _JSON,
        "id": st.sampled_from(["130", "", "../x"]) | _JSON,
        "operation": st.sampled_from(["Create", "Update", "Delete", "Void", "Merge"]) | _JSON,
        "lastUpdated": _TIMES | st.integers() | _JSON,
    },
)
_LEGACY = st.builds(
    lambda realm, entities: {
        "eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": entities}}]
    },
    st.sampled_from(["9341455322581846", ""]) | _JSON,
    st.lists(_ENTITIES, max_size=4),
)
_CLOUD = st.lists(
    st.fixed_dictionaries(
        {"specversion": st.just("1.0")},
        optional={
            "id": st.text(max_size=10) | _JSON,
            "type": st.sampled_from(["qbo.invoice.updated.v1", "qbo.payment.created.v1", "qbo"])
            | _JSON,
            "time": _TIMES | _JSON,
            "intuitentityid": st.sampled_from(["130"]) | _JSON,
            "intuitaccountid": st.sampled_from(["9341455322581846"]) | _JSON,
        },
    ),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(doc=_JSON | _LEGACY | _CLOUD)
def test_random_json_is_accepted_only_with_its_own_signature(doc: object) -> None:
    body = json.dumps(doc).encode()
    _verify(body, _sig(body, VERIFIER_TOKEN))
    with pytest.raises(VerificationError):
        _verify(body + b"\n", _sig(body, VERIFIER_TOKEN))
    quickbooks.contains_pan(body)
    try:
        parsed = quickbooks.parse(body)
        quickbooks.subject(parsed)
        quickbooks.provider_event_id(parsed)
        refs = quickbooks.references(parsed)
        raw = RawWebhook(
            ingest_id="i", tenant="t", provider="quickbooks", received_at=NOW, body=body
        )
        assert quickbooks.normalize(raw, "webhooks.raw", 0, 0) == []
    except (PayloadError, CardDataError):
        return
    assert all(r.provider == "quickbooks" and r.kind in ("invoice", "payment") for r in refs)
