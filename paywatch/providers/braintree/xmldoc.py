"""``bt_payload`` -> document: base64, size cap, card-number check, DTD-free XML, dict.

Safety without defusedxml (not installed): entity expansion and external entities need a
document type declaration, so any ``<!`` followed by a letter (``<!DOCTYPE``, ``<!ENTITY``,
``<!ELEMENT``...) is refused before parsing; the bytes must be UTF-8 without NUL (so no
UTF-16/32 can hide a declaration from that check) and the parser is told the encoding is
UTF-8, overriding any ``encoding=`` in the XML declaration. Comments and CDATA stay allowed.

The tree becomes a dict the way braintree_python's ``XmlUtil.dict_from_xml`` does it: tag
dashes become underscores, ``type="array"`` gives a list, ``nil="true"`` gives None, leaves
give their stripped text (typed values stay strings; normalization converts them).
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from typing import Any

from paywatch.errors import CardDataError, PayloadError
from paywatch.providers.braintree.signature import PAYLOAD_CHARS
from paywatch.providers.pan import contains_pan

MAX_XML_BYTES = 256 * 1024
"""Default cap on the decoded XML (the ingest caps the whole body at 256 KiB anyway)."""
MAX_DEPTH = 32
"""Nesting a notification may have (Braintree's are under 10 levels deep)."""

_DECLARATION = re.compile(rb"<!\s*[A-Za-z]")


def decode_payload(payload: str, max_bytes: int = MAX_XML_BYTES) -> dict[str, Any]:
    """The ``<notification>`` of a ``bt_payload`` as a dict; PayloadError/CardDataError."""
    xml = _base64(payload, max_bytes)
    # The ingest's PAN check sees only base64, so the decoded XML is checked here.
    if contains_pan(xml):
        raise CardDataError("bt_payload contains a card number")
    root = _parse(xml)
    doc = _value(root, 0)
    if contains_pan("\n".join(_texts(root)).encode("utf-8")):  # e.g. digits as &#52;
        raise CardDataError("bt_payload contains a card number")
    if root.tag != "notification" or not isinstance(doc, dict):
        raise PayloadError("bt_payload is not a <notification>")
    return doc


def _base64(payload: str, max_bytes: int) -> bytes:
    if not PAYLOAD_CHARS.fullmatch(payload):
        raise PayloadError("bt_payload has characters outside MIME base64")
    compact = payload.replace("\n", "")
    if len(compact) // 4 * 3 > max_bytes:
        raise PayloadError(f"decoded bt_payload exceeds {max_bytes} bytes")
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise PayloadError("bt_payload is not valid base64") from exc


def _parse(xml: bytes) -> ET.Element:
    if b"\x00" in xml:
        raise PayloadError("bt_payload XML contains a NUL byte")
    try:
        xml.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("bt_payload XML is not UTF-8") from exc
    if _DECLARATION.search(xml):
        raise PayloadError("bt_payload XML has a DOCTYPE/ENTITY declaration; refused")
    parser = ET.XMLParser(encoding="utf-8")  # noqa: S314 - DTD-free UTF-8 only (module doc)
    try:
        parser.feed(xml)
        return parser.close()
    except ET.ParseError as exc:
        raise PayloadError(f"bt_payload is not well-formed XML: {exc}") from exc


def _key(tag: str) -> str:
    return tag.replace("-", "_")


def _value(node: ET.Element, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise PayloadError(f"bt_payload XML nests deeper than {MAX_DEPTH} levels")
    if node.get("nil") == "true":
        return None
    children = list(node)
    if node.get("type") == "array":
        return [_value(child, depth + 1) for child in children]
    if not children:
        return (node.text or "").strip()
    return {_key(child.tag): _value(child, depth + 1) for child in children}


def _texts(root: ET.Element) -> list[str]:
    texts: list[str] = []
    for node in root.iter():
        texts.extend(t for t in (node.text, node.tail) if t and not t.isspace())
        texts.extend(node.attrib.values())
    return texts
