"""bt_payload decoding: DTD/entity refusal, encodings, depth and size caps, card numbers."""

from __future__ import annotations

import base64

import pytest

from paywatch.errors import CardDataError, PayloadError
from paywatch.providers.braintree import BraintreeProvider, braintree
from paywatch.providers.braintree.xmldoc import MAX_DEPTH, decode_payload
from tests.builders.braintree import (
    braintree_body,
    braintree_failure,
    braintree_form,
    braintree_notification_xml,
    braintree_payload,
    sign_braintree,
)

PAN = "4242424242424242"
HEAD = '<notification><timestamp type="datetime">2026-06-15T09:30:12Z</timestamp>'


def _parse_xml(xml: str | bytes) -> dict[str, object]:
    data = xml.encode() if isinstance(xml, str) else xml
    payload = base64.encodebytes(data).decode()
    return braintree.parse(braintree_form(sign_braintree(payload), payload))


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    f"{HEAD}<kind>&lol2;</kind><subject/></notification>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE n [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    f"{HEAD}<kind>&x;</kind><subject/></notification>"
)


@pytest.mark.parametrize(
    "xml",
    [
        BILLION_LAUGHS,
        EXTERNAL_ENTITY,
        f"<!DOCTYPE notification>{HEAD}<kind>check</kind></notification>",
        f"<! DOCTYPE notification>{HEAD}<kind>check</kind></notification>",
        f"{HEAD}<kind>check</kind></notification><!ELEMENT x ANY>",
    ],
)
def test_document_type_declarations_are_refused(xml: str) -> None:
    with pytest.raises(PayloadError, match="DOCTYPE/ENTITY declaration; refused"):
        _parse_xml(xml)


def test_utf16_cannot_smuggle_a_declaration_past_the_check() -> None:
    with pytest.raises(PayloadError, match="NUL byte"):
        _parse_xml(EXTERNAL_ENTITY.encode("utf-16-le"))
    with pytest.raises(PayloadError, match="NUL byte"):
        _parse_xml(EXTERNAL_ENTITY.encode("utf-16"))  # with a BOM
    with pytest.raises(PayloadError, match="not UTF-8"):
        _parse_xml(f"{HEAD}<kind>caf\u00e9</kind></notification>".encode("latin-1"))


def test_declared_encodings_are_overridden_by_utf8() -> None:
    xml = f'<?xml version="1.0" encoding="ISO-8859-1"?>{HEAD}<kind>caf\u00e9</kind></notification>'
    assert _parse_xml(xml.encode("utf-8"))["kind"] == "caf\u00e9"


def test_comments_cdata_and_character_references_are_fine() -> None:
    kind = "<!-- note --><kind><![CDATA[check]]></kind>"
    xml = f"{HEAD}{kind}<subject>&amp;&#65;</subject></notification>"
    doc = _parse_xml(xml)
    assert (doc["kind"], doc["subject"]) == ("check", "&A")


def test_nesting_deeper_than_the_cap_is_refused() -> None:
    deep = "<a>" * (MAX_DEPTH + 1) + "x" + "</a>" * (MAX_DEPTH + 1)
    with pytest.raises(PayloadError, match="nests deeper"):
        _parse_xml(f"{HEAD}<kind>check</kind><subject>{deep}</subject></notification>")
    very_deep = "<a>" * 100_000 + "</a>" * 100_000
    with pytest.raises(PayloadError):
        _parse_xml(f"{HEAD}<kind>check</kind><subject>{very_deep}</subject></notification>")


def test_decoded_size_is_capped() -> None:
    xml = braintree_failure()
    body = braintree_body(xml)
    BraintreeProvider(max_xml_bytes=len(xml) + 3).parse(body)
    with pytest.raises(PayloadError, match="exceeds 100 bytes"):
        BraintreeProvider(max_xml_bytes=100).parse(body)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("PG5vdGlm\naWN", "not valid base64"),  # truncated
        ("abc", "not valid base64"),  # bad padding
        ("bm90IHhtbA==", "not well-formed XML"),  # "not xml"
        ("//79", "not UTF-8"),
        (braintree_payload("<other/>"), "not a <notification>"),
        (braintree_payload("<notification>text</notification>"), "not a <notification>"),
        (braintree_payload("<notification><a></notification>"), "not well-formed"),
    ],
)
def test_undecodable_payloads_are_payload_errors(payload: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_payload(payload)


def test_parse_checks_the_payload_charset_too() -> None:
    body = b"bt_signature=a%7Cb&bt_payload=not%20base64"
    with pytest.raises(PayloadError, match="outside MIME base64"):
        braintree.parse(body)


def test_xml_becomes_a_dict_like_the_sdk_builds() -> None:
    xml = braintree_notification_xml(
        "check",
        '<subscription><id>s1</id><failure-count type="integer">2</failure-count>'
        '<next-billing-date nil="true"/><transactions type="array"><transaction><id>t1</id>'
        "</transaction></transactions><add_ons type='array'/></subscription>",
    )
    sub = _parse_xml(xml)["subject"]
    assert sub == {
        "subscription": {
            "id": "s1",
            "failure_count": "2",
            "next_billing_date": None,
            "transactions": [{"id": "t1"}],
            "add_ons": [],
        }
    }


# --- card numbers: ingest sees only base64 --------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        f"<transaction><id>t</id><note>{PAN}</note></transaction>",
        "<transaction><note>4242 4242 4242 4242</note></transaction>",
        f'<transaction note="{PAN}"><id>t</id></transaction>',
        "<transaction><note>" + "".join(f"&#{ord(d)};" for d in PAN) + "</note></transaction>",
        "<transaction><note>4242424242<![CDATA[424242]]></note></transaction>",
    ],
)
def test_card_numbers_inside_the_payload_are_card_data_errors(subject: str) -> None:
    xml = braintree_notification_xml("transaction_settled", subject)
    body = braintree_body(xml)
    assert PAN.encode() not in body  # invisible to the ingest's raw-byte check
    with pytest.raises(CardDataError):
        braintree.parse(body)


def test_masked_numbers_and_bins_are_not_card_numbers() -> None:
    doc = braintree.parse(braintree_body(braintree_failure()))
    assert doc["kind"] == "subscription_charged_unsuccessfully"
