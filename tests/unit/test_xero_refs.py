"""Xero batches -> references, dedupe keys and subjects (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from paywatch.errors import PayloadError
from paywatch.providers.thin import ResourceRef
from paywatch.providers.xero import XeroProvider, xero
from tests.builders.xero import INVOICE_ID, TENANT_ID, xero_batch, xero_body, xero_event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xero"
OTHER = "7a9f3c21-54e8-4b1d-a0c6-3e2f1d4b5c6a"


def _doc(name: str) -> dict[str, Any]:
    return xero.parse((FIXTURES / name).read_bytes())


def test_one_invoice_update_gives_one_reference() -> None:
    (ref,) = xero.references(_doc("invoice.update.json"))
    assert ref == ResourceRef(
        provider="xero",
        tenant_ref=TENANT_ID,
        kind="invoice",
        resource_id=INVOICE_ID,
        event_type="INVOICE.UPDATE",
        event_time=datetime(2026, 6, 15, 9, 30, 12, 123000, tzinfo=UTC),
        index=0,
    )
    assert ref.fetch is True
    assert (
        ref.dedupe_key
        == f"{TENANT_ID}/invoice/{INVOICE_ID}/INVOICE.UPDATE/2026-06-15T09:30:12.123+00:00"
    )


def test_event_date_without_offset_is_utc() -> None:
    (ref,) = xero.references(_doc("invoice.update.json"))
    assert ref.event_time.utcoffset() is not None and ref.event_time.hour == 9


def test_mixed_batch_keeps_invoices_only_collapses_repeats_and_keeps_delivery_order() -> None:
    refs = xero.references(_doc("batch.mixed.json"))
    assert [(r.resource_id, r.event_type, r.index) for r in refs] == [
        (INVOICE_ID, "INVOICE.CREATE", 1),
        (INVOICE_ID, "INVOICE.UPDATE", 2),  # the latest of the two updates (index 2 vs 5)
        (OTHER, "INVOICE.UPDATE", 4),  # upper-case id read as lower case
    ]
    assert refs[1].event_time == datetime(2026, 6, 15, 9, 30, 12, 123000, tzinfo=UTC)


def test_collapsing_can_be_turned_off() -> None:
    refs = XeroProvider(collapse_repeats=False).references(_doc("batch.mixed.json"))
    assert [r.index for r in refs] == [1, 2, 4, 5]


def test_references_are_deterministic() -> None:
    doc = _doc("batch.mixed.json")
    assert xero.references(doc) == xero.references(json.loads(json.dumps(doc)))


def test_delivery_key_is_a_content_hash_independent_of_order_entropy_and_sequence() -> None:
    a, b = xero_event(), xero_event(OTHER, event_date="2026-06-15T10:00:00.000")
    key = xero.provider_event_id(xero_batch(a, b))
    assert key.startswith("xero:") and len(key) == len("xero:") + 64
    assert xero.provider_event_id(xero_batch(b, a, first_sequence=7, entropy="other")) == key
    assert xero.provider_event_id(xero_batch(a)) != key
    later = xero_event(event_date="2026-06-15T09:30:12.124")
    assert xero.provider_event_id(xero_batch(later, b)) != key


def test_delivery_key_of_the_same_bytes_redelivered_is_equal() -> None:
    body = (FIXTURES / "invoice.update.json").read_bytes()
    assert xero.provider_event_id(xero.parse(body)) == xero.provider_event_id(xero.parse(body))


def test_intent_to_receive_keys_differ_by_entropy() -> None:
    itr = _doc("itr.json")
    assert xero.provider_event_id(itr) != xero.provider_event_id({**itr, "entropy": "x"})


def test_subject_is_the_one_invoice_else_the_organisation() -> None:
    assert xero.subject(_doc("invoice.update.json")) == INVOICE_ID
    assert xero.subject(_doc("batch.mixed.json")) == TENANT_ID
    other_org = xero_event(OTHER, tenant_id="9a0b1c2d-0000-4000-8000-000000000001")
    assert xero.subject(xero_batch(xero_event(), other_org)) is None
    assert xero.subject(xero_batch(xero_event(category="CONTACT"))) is None


def test_other_categories_are_not_validated_or_fetched() -> None:
    contact = {"eventCategory": "CONTACT", "resourceId": None}
    doc = xero.parse(xero_body(xero_batch(contact)))  # type: ignore[arg-type]
    assert xero.references(doc) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tenantId", None, "tenantId"),
        ("tenantId", "a b", "tenantId"),
        ("resourceId", "", "resourceId"),
        ("resourceId", "../../Contacts/x", "resourceId"),
        ("eventType", 7, "eventType"),
        ("eventDateUtc", "yesterday", "eventDateUtc"),
        ("eventDateUtc", None, "eventDateUtc"),
    ],
)
def test_malformed_invoice_events_are_payload_errors(field: str, value: Any, message: str) -> None:
    event = {**xero_event(), field: value}
    with pytest.raises(PayloadError, match=message):
        xero.parse(xero_body(xero_batch(event)))


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"events": {}}',
        b'{"entropy": "x"}',
        b'{"events": [1]}',
        b"null",
        b"\xff",
        b"[" * 5000,
    ],
)
def test_malformed_batches_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadError):
        xero.parse(body)
