"""QuickBooks deliveries (legacy and CloudEvents) -> references, dedupe keys, subjects (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import PayloadError
from paywatch.providers.quickbooks import QuickBooksProvider, quickbooks
from paywatch.providers.thin import ResourceRef
from tests.builders.quickbooks import (
    INVOICE_ID,
    PAYMENT_ID,
    REALM_ID,
    qbo_body,
    qbo_cloudevent,
    qbo_entity,
    qbo_legacy,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "quickbooks"
AT = datetime(2026, 6, 15, 9, 30, 12, 123000, tzinfo=UTC)
OTHER_REALM = "4620816365257778219"


def _doc(name: str) -> dict[str, Any]:
    return quickbooks.parse((FIXTURES / name).read_bytes())


def _parse(doc: Any) -> dict[str, Any]:
    return quickbooks.parse(qbo_body(doc))


def _summary(refs: list[ResourceRef]) -> list[tuple[str, str, str, int, bool]]:
    return [(r.kind, r.resource_id, r.event_type, r.index, r.fetch) for r in refs]


# --- both formats -------------------------------------------------------------------------------


def test_legacy_invoice_update_gives_one_reference() -> None:
    (ref,) = quickbooks.references(_doc("legacy.invoice.update.json"))
    assert ref == ResourceRef(
        provider="quickbooks",
        tenant_ref=REALM_ID,
        kind="invoice",
        resource_id=INVOICE_ID,
        event_type="Invoice.Update",
        event_time=AT,
        index=0,
        fetch=True,
    )
    assert ref.dedupe_key == f"{REALM_ID}/invoice/130/Invoice.Update/2026-06-15T09:30:12.123+00:00"


def test_cloudevent_of_the_same_change_gives_the_same_reference_and_key() -> None:
    (legacy,) = quickbooks.references(_doc("legacy.invoice.update.json"))
    (cloud,) = quickbooks.references(_doc("cloudevents.invoice.updated.json"))
    assert cloud == legacy
    assert cloud.dedupe_key == legacy.dedupe_key


def test_parsed_cloudevents_are_wrapped_and_legacy_kept_as_is() -> None:
    body = (FIXTURES / "cloudevents.invoice.updated.json").read_bytes()
    assert quickbooks.parse(body) == {"cloudevents": json.loads(body)}
    legacy = (FIXTURES / "legacy.invoice.update.json").read_bytes()
    assert quickbooks.parse(legacy) == json.loads(legacy)


@pytest.mark.parametrize(
    "time",
    [
        "2026-06-15T09:30:12.123Z",
        "2026-06-15T02:30:12.123-07:00",
        "2026-06-15T11:30:12.123+0200",
        "2026-06-15T09:30:12.123",  # no offset: UTC
        "1781515812123",  # epoch milliseconds, as a string ...
        1781515812123,  # ... or a number
    ],
)
def test_event_times_of_any_offset_or_epoch_millis_are_utc(time: Any) -> None:
    (ref,) = quickbooks.references(_parse(qbo_legacy(qbo_entity(last_updated=time))))
    assert ref.event_time == AT
    assert ref.event_time.utcoffset() is not None
    assert ref.event_time.utcoffset() == UTC.utcoffset(None)


def test_legacy_mixed_delivery_keeps_invoices_and_payments_in_delivery_order() -> None:
    refs = quickbooks.references(_doc("legacy.mixed.json"))
    # Customer Update (0), Payment Delete (6) and Customer Merge (7) are not fetched.
    assert _summary(refs) == [
        ("invoice", "130", "Invoice.Update", 1, True),
        ("payment", "171", "Payment.Create", 2, True),
        ("invoice", "131", "Invoice.Void", 3, True),
        ("invoice", "132", "Invoice.Delete", 4, False),  # a deletion needs no fetch
        ("invoice", "130", "Invoice.Emailed", 5, True),  # another event type: kept apart
    ]
    assert {r.tenant_ref for r in refs} == {REALM_ID}
    assert refs[0].event_time == AT  # "-07:00" read as UTC


def test_cloudevents_batch_skips_customers_and_spells_operations_the_legacy_way() -> None:
    refs = quickbooks.references(_doc("cloudevents.batch.json"))
    assert _summary(refs) == [
        ("invoice", "130", "Invoice.Update", 1, True),
        ("invoice", "131", "Invoice.Void", 2, True),
        ("invoice", "132", "Invoice.Delete", 3, False),
    ]
    assert refs[2].event_time == datetime(2026, 6, 15, 9, 33, tzinfo=UTC)


@pytest.mark.parametrize(
    ("type_", "event_type", "fetch"),
    [
        ("qbo.invoice.created.v1", "Invoice.Create", True),
        ("qbo.invoice.updated.v1", "Invoice.Update", True),
        ("qbo.invoice.emailed.v1", "Invoice.Emailed", True),
        ("qbo.invoice.voided.v1", "Invoice.Void", True),
        ("qbo.invoice.deleted.v1", "Invoice.Delete", False),
        ("qbo.Invoice.Updated.v1", "Invoice.Update", True),
        ("qbo.payment.created.v1", "Payment.Create", True),
        ("qbo.payment.updated.v1", "Payment.Update", True),
    ],
)
def test_cloudevent_types_map_to_legacy_event_types(
    type_: str, event_type: str, fetch: bool
) -> None:
    event = {**qbo_cloudevent(), "type": type_}
    (ref,) = quickbooks.references(_parse([event]))
    assert (ref.event_type, ref.fetch) == (event_type, fetch)
    assert ref.kind == event_type.split(".")[0].lower()


@pytest.mark.parametrize(
    "type_",
    [
        "qbo.invoice.merged.v1",
        "qbo.payment.deleted.v1",
        "qbo.payment.voided.v1",
        "qbo.customer.updated.v1",
        "qbo.account.created.v1",
        "com.intuit.invoice.updated.v1",
        "qbo",
        "",
    ],
)
def test_other_cloudevents_are_ignored(type_: str) -> None:
    assert quickbooks.references(_parse([{**qbo_cloudevent(), "type": type_}])) == []


@pytest.mark.parametrize(
    ("name", "operation"),
    [("Invoice", "Merge"), ("Payment", "Delete"), ("Payment", "Void"), ("Customer", "Update")],
)
def test_other_legacy_changes_are_ignored_and_not_validated(name: str, operation: str) -> None:
    entity = {"name": name, "id": None, "operation": operation, "lastUpdated": "never"}
    assert quickbooks.references(_parse(qbo_legacy(entity))) == []


# --- collapsing ---------------------------------------------------------------------------------


def test_repeats_of_one_change_collapse_to_the_latest_even_out_of_order() -> None:
    later = qbo_entity(last_updated="2026-06-15T09:40:00Z")
    doc = _parse(qbo_legacy(later, qbo_entity(), qbo_entity("Payment", PAYMENT_ID)))
    refs = quickbooks.references(doc)
    assert _summary(refs) == [
        ("invoice", "130", "Invoice.Update", 0, True),  # the later time wins, not position 1
        ("payment", PAYMENT_ID, "Payment.Update", 2, True),
    ]
    assert refs[0].event_time == datetime(2026, 6, 15, 9, 40, tzinfo=UTC)
    unfolded = QuickBooksProvider(collapse_repeats=False).references(doc)
    assert [r.index for r in unfolded] == [0, 1, 2]


def test_cloudevent_repeats_collapse_but_different_realms_do_not() -> None:
    a = qbo_cloudevent(event_id="a")
    b = qbo_cloudevent(time="2026-06-15T09:31:00Z", event_id="b")
    c = qbo_cloudevent(event_id="c", realm_id=OTHER_REALM)
    refs = quickbooks.references(_parse([a, b, c]))
    assert [(r.tenant_ref, r.index) for r in refs] == [(REALM_ID, 1), (OTHER_REALM, 2)]


def test_references_are_deterministic() -> None:
    doc = _doc("legacy.mixed.json")
    assert quickbooks.references(doc) == quickbooks.references(json.loads(json.dumps(doc)))


# --- dedupe keys --------------------------------------------------------------------------------


def test_one_cloudevent_delivery_is_keyed_by_its_id() -> None:
    doc = _doc("cloudevents.invoice.updated.json")
    assert quickbooks.provider_event_id(doc) == "3f5a2c4e-8b1d-4e6f-9a7c-2d4b6e8f0a1c"


def test_several_cloudevents_are_keyed_by_a_hash_of_their_ids_in_any_order() -> None:
    a, b = qbo_cloudevent(event_id="a1"), qbo_cloudevent(PAYMENT_ID, "payment", event_id="a2")
    key = quickbooks.provider_event_id(_parse([a, b]))
    assert key.startswith("qbo-ce:") and len(key) == len("qbo-ce:") + 64
    assert quickbooks.provider_event_id(_parse([b, a])) == key
    c = {**b, "id": "a3"}
    assert quickbooks.provider_event_id(_parse([a, c])) != key


def test_an_overlong_cloudevent_id_is_hashed() -> None:
    key = quickbooks.provider_event_id(_parse([qbo_cloudevent(event_id="x" * 201)]))
    assert key.startswith("qbo-ce:") and len(key) == len("qbo-ce:") + 64


def test_legacy_deliveries_are_keyed_by_content_not_bytes_or_order() -> None:
    body = (FIXTURES / "legacy.mixed.json").read_bytes()
    key = quickbooks.provider_event_id(quickbooks.parse(body))
    assert key.startswith("qbo:") and len(key) == len("qbo:") + 64
    assert quickbooks.provider_event_id(quickbooks.parse(body)) == key  # identical redelivery
    compact = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert quickbooks.provider_event_id(quickbooks.parse(compact)) == key
    doc = json.loads(body)
    doc["eventNotifications"][0]["dataChangeEvent"]["entities"].reverse()
    assert quickbooks.provider_event_id(_parse(doc)) == key


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lastUpdated", "2026-06-15T09:30:12.124Z"),
        ("operation", "Create"),
        ("id", "131"),
        ("name", "Payment"),
    ],
)
def test_legacy_key_changes_with_any_part_of_a_change(field: str, value: str) -> None:
    key = quickbooks.provider_event_id(_parse(qbo_legacy(qbo_entity())))
    changed = {**qbo_entity(), field: value}
    assert quickbooks.provider_event_id(_parse(qbo_legacy(changed))) != key
    other_realm = qbo_legacy(qbo_entity(), realm_id=OTHER_REALM)
    assert quickbooks.provider_event_id(_parse(other_realm)) != key


# --- subject ------------------------------------------------------------------------------------


def test_subject_is_the_one_entity_else_the_one_realm_else_none() -> None:
    assert quickbooks.subject(_doc("legacy.invoice.update.json")) == INVOICE_ID
    assert quickbooks.subject(_doc("cloudevents.payment.created.json")) == PAYMENT_ID
    assert quickbooks.subject(_doc("legacy.mixed.json")) == REALM_ID
    assert quickbooks.subject(_doc("cloudevents.batch.json")) == REALM_ID
    two_realms = [qbo_cloudevent(), qbo_cloudevent("invoice", "131", realm_id=OTHER_REALM)]
    assert quickbooks.subject(_parse(two_realms)) is None
    assert quickbooks.subject(_parse(qbo_legacy(qbo_entity("Customer", "58")))) is None
    assert quickbooks.subject(_parse([])) is None


# --- malformed deliveries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff", "QuickBooks webhook body is not UTF-8"),
        (b"{", "QuickBooks webhook body is not JSON"),
        (b"[" * 5000, "QuickBooks webhook body: JSON nested too deeply"),
        (b"null", "a QuickBooks webhook is a JSON object or array"),
        (b'"x"', "a QuickBooks webhook is a JSON object or array"),
        (b"[1]", "a QuickBooks CloudEvents delivery is an array of objects"),
        (b"[{}, []]", "a QuickBooks CloudEvents delivery is an array of objects"),
        (b"{}", "QuickBooks webhook has no 'eventNotifications' list"),
        (b'{"eventNotifications": {}}', "QuickBooks webhook has no 'eventNotifications' list"),
        (b'{"eventNotifications": [1]}', "QuickBooks webhook has no 'eventNotifications' list"),
        (
            b'{"eventNotifications": [{"realmId": "1"}]}',
            "QuickBooks notification has no 'dataChangeEvent.entities' list",
        ),
        (
            b'{"eventNotifications": [{"dataChangeEvent": {"entities": ["x"]}}]}',
            "QuickBooks notification has no 'dataChangeEvent.entities' list",
        ),
    ],
)
def test_malformed_deliveries_are_payload_errors(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        quickbooks.parse(body)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("id", None, "QuickBooks change 1 has no usable entity id"),
        ("id", 130, "QuickBooks change 1 has no usable entity id"),
        ("id", "", "QuickBooks change 1 has no usable entity id"),
        ("id", "../company/1/invoice/2", "QuickBooks change 1 has no usable entity id"),
        ("lastUpdated", None, "QuickBooks change 1 has no readable time"),
        ("lastUpdated", "yesterday", "QuickBooks change 1 has no readable time"),
        ("lastUpdated", -1, "QuickBooks change 1 has no readable time"),
        ("lastUpdated", 253402300800000, "QuickBooks change 1 has no readable time"),  # > 9999
        ("lastUpdated", "999999999999999", "QuickBooks change 1 has no readable time"),
        ("lastUpdated", "\u00b2", "QuickBooks change 1 has no readable time"),  # "²".isdigit()
        ("lastUpdated", "0001-01-01T00:00:00+01:00", "QuickBooks change 1 has no readable time"),
        ("lastUpdated", True, "QuickBooks change 1 has no readable time"),
        ("lastUpdated", 1.5e12, "QuickBooks change 1 has no readable time"),
    ],
)
def test_malformed_legacy_changes_name_their_position(field: str, value: Any, message: str) -> None:
    bad = {**qbo_entity(), field: value}
    with pytest.raises(PayloadError) as info:
        _parse(qbo_legacy(qbo_entity("Customer", "58"), bad))
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("realm", "message"),
    [(None, "realm id"), ("", "realm id"), ("93 41", "realm id"), (9341455322581846, "realm id")],
)
def test_legacy_realm_must_be_an_id(realm: Any, message: str) -> None:
    with pytest.raises(PayloadError, match=f"^QuickBooks change 0 has no usable {message}$"):
        _parse(qbo_legacy(qbo_entity(), realm_id=realm))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("intuitaccountid", None, "QuickBooks change 0 has no usable realm id"),
        ("intuitaccountid", "a/b", "QuickBooks change 0 has no usable realm id"),
        ("intuitentityid", None, "QuickBooks change 0 has no usable entity id"),
        ("intuitentityid", "x" * 65, "QuickBooks change 0 has no usable entity id"),
        ("time", None, "QuickBooks change 0 has no readable time"),
        ("time", "2026-13-01T00:00:00Z", "QuickBooks change 0 has no readable time"),
    ],
)
def test_malformed_cloudevents_are_payload_errors(field: str, value: Any, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        _parse([{**qbo_cloudevent(), field: value}])
    assert str(info.value) == message


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"eventNotifications": "abc"},
        {"eventNotifications": [{"dataChangeEvent": "x"}]},
        {"eventNotifications": [{"dataChangeEvent": {"entities": [7]}}]},
        {"cloudevents": [1, "x"]},
    ],
)
def test_references_of_unparsed_documents_are_payload_errors(doc: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        quickbooks.references(doc)


# --- properties ---------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
_TIMES = st.sampled_from(
    [
        "2026-06-15T09:30:12.123Z",
        "2015-10-05T14:42:19-0700",
        "1781515812123",
        "9999-12-31T23:59-01:00",
        "\u00b2",
        "999999999999999",
        253402300800000,
    ]
)
_ENTITY = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["Invoice", "Payment", "Customer"]) | _JSON,
        "id": st.sampled_from(["130", "171", "", "../x"]) | _JSON,
        "operation": st.sampled_from(["Create", "Update", "Delete", "Void", "Emailed"]) | _JSON,
        "lastUpdated": _TIMES | st.integers() | st.text(max_size=20) | _JSON,
    },
)
_LEGACY = st.builds(
    lambda realm, entities: {
        "eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": entities}}]
    },
    st.sampled_from([REALM_ID, ""]) | _JSON,
    st.lists(_ENTITY, max_size=4),
)
_CLOUD = st.lists(
    st.fixed_dictionaries(
        {"specversion": st.just("1.0")},
        optional={
            "id": st.text(max_size=10) | _JSON,
            "type": st.sampled_from(
                ["qbo.invoice.updated.v1", "qbo.invoice.deleted.v1", "qbo.payment.created.v1"]
            )
            | st.text(max_size=24)
            | _JSON,
            "time": _TIMES | st.integers() | _JSON,
            "intuitentityid": st.sampled_from(["130", "a b"]) | _JSON,
            "intuitaccountid": st.sampled_from([REALM_ID]) | _JSON,
        },
    ),
    max_size=4,
)


def _check(body: bytes) -> None:
    try:
        doc = quickbooks.parse(body)
    except PayloadError:
        return
    refs = quickbooks.references(doc)
    assert all(r.provider == "quickbooks" and r.kind in ("invoice", "payment") for r in refs)
    assert [r.index for r in refs] == sorted(r.index for r in refs)
    assert quickbooks.provider_event_id(doc) == quickbooks.provider_event_id(doc)
    quickbooks.subject(doc)


@settings(max_examples=200, deadline=None)
@given(doc=_JSON | _LEGACY | _CLOUD)
def test_random_json_deliveries_only_raise_payload_errors(doc: Any) -> None:
    _check(json.dumps(doc).encode())
    if isinstance(doc, dict):
        try:
            quickbooks.references(doc)  # an unparsed document, too
        except PayloadError:
            pass


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=512))
def test_random_bytes_only_raise_payload_errors(body: bytes) -> None:
    _check(body)


_OFFSETS = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
_ANY_TIME = (
    _TIMES
    | st.integers()
    | st.text(max_size=30)
    | st.builds(
        lambda at, off: at.replace(tzinfo=timezone(off)).isoformat(), st.datetimes(), _OFFSETS
    )
)


@settings(max_examples=200, deadline=None)
@given(time=_ANY_TIME, cloud=st.booleans())
def test_random_times_of_relevant_changes_are_utc_or_payload_errors(time: Any, cloud: bool) -> None:
    entity = {**qbo_entity(), "lastUpdated": time}
    doc: Any = [{**qbo_cloudevent(), "time": time}] if cloud else qbo_legacy(entity)
    try:
        (ref,) = quickbooks.references(_parse(doc))
    except PayloadError:
        return
    assert ref.event_time.utcoffset() == timedelta(0)
