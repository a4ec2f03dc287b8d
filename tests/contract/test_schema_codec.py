"""Codec contract: round trips, the single-object header, old writers, garbage in -> CodecError."""

from __future__ import annotations

import io
import json
import types
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo

from paywatch.errors import CodecError
from paywatch.schemas import codec
from paywatch.schemas.codec import TOPIC_VALUE_MODELS, SingleObjectCodec
from paywatch.schemas.models import (
    MAX_YEAR,
    MIN_YEAR,
    Alert,
    Decline,
    DeclineCategory,
    EventType,
    Frozen,
    PaymentEvent,
    PolicyChanged,
    RawRef,
    RiskScore,
)

M = TypeVar("M", bound=Frozen)
NAMES = [m.__name__ for m in TOPIC_VALUE_MODELS]
TEXT = st.text(max_size=12)
LONGS = st.integers(-(2**63), 2**63 - 1)
# timestamp-millis keeps milliseconds: generate exactly what survives a round trip.
DATETIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2300, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


def floats_for(info: FieldInfo | None) -> st.SearchStrategy[float]:
    bounds = {
        k: getattr(m, k)
        for m in (info.metadata if info else ())
        for k in ("ge", "le")
        if hasattr(m, k)
    }
    return st.floats(min_value=bounds.get("ge"), max_value=bounds.get("le"), allow_nan=False)


def _bounds(metadata: Any) -> dict[str, Any]:
    """ge/le/max_length/pattern and validators from a field's metadata (schemas.models bounds)."""
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found.update(_bounds(item.metadata))
        elif isinstance(item, AfterValidator):
            found["years"] = (MIN_YEAR, MAX_YEAR)
        for key in ("ge", "le", "max_length", "pattern"):
            if getattr(item, key, None) is not None:
                found[key] = getattr(item, key)
    return found


def bounded(base: Any, limits: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a bounded type (Ref, Text, Minor, Attempt, Instant, Body, ...)."""
    if base is str:
        size = min(12, limits.get("max_length", 12))
        return no_nul_text(size) if "pattern" in limits else st.text(max_size=size)
    if base is int:
        return st.integers(limits.get("ge", -(2**63)), limits.get("le", 2**63 - 1))
    if base is bytes:
        return st.binary(max_size=min(40, limits.get("max_length", 40)))
    if base is datetime and "years" in limits:
        low, high = limits["years"]
        return DATETIMES.filter(lambda d: low <= d.year <= high)
    return values(base)


def no_nul_text(size: int) -> st.SearchStrategy[str]:
    chars = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
    return st.text(alphabet=chars, max_size=size)


def values(annotation: Any, info: FieldInfo | None = None) -> st.SearchStrategy[Any]:
    """Valid values for one pydantic annotation (recursing into nested models)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return bounded(args[0], _bounds(args[1:]))
    if info is not None and _bounds(info.metadata) and annotation in (str, int, bytes, datetime):
        return bounded(annotation, _bounds(info.metadata))
    if origin in (Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return st.none() | values(inner, info)
    if origin is dict:
        return st.dictionaries(values(args[0]), values(args[1]), max_size=3)
    if origin is list:
        return st.lists(values(args[0]), max_size=3)
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return st.sampled_from(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return instances(annotation)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: TEXT,
        int: LONGS,
        bool: st.booleans(),
        bytes: st.binary(max_size=40),
        datetime: DATETIMES,
    }
    return floats_for(info) if annotation is float else simple[annotation]


# Text fields whose format the model checks: generated valid, not as any text.
NO_NUL = st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=12)
FORMATTED: dict[tuple[type[BaseModel], str], st.SearchStrategy[Any]] = {
    (PolicyChanged, "policy_json"): st.dictionaries(NO_NUL, NO_NUL | LONGS, max_size=3).map(
        json.dumps
    ),
}


def instances(model: type[M]) -> st.SearchStrategy[M]:
    """Valid instances of a model, derived from its fields."""
    fields = {
        n: FORMATTED[(model, n)] if (model, n) in FORMATTED else values(f.annotation, f)
        for n, f in model.model_fields.items()
    }
    return st.builds(model, **fields)


NOW = datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
EVENT = PaymentEvent(
    event_id="9b0c",
    type=EventType.PAYMENT_FAILED,
    tenant="acme",
    provider="stripe",
    source_type="invoice.payment_failed",
    occurred_at=NOW,
    invoice_ref="in_1",
    amount_minor=4500,
    currency="usd",
    decline=Decline(code="insufficient_funds", category=DeclineCategory.SOFT),
    raw=RawRef(topic="webhooks.raw", partition=3, offset=42, provider_event_id="evt_1"),
)


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("model", TOPIC_VALUE_MODELS, ids=NAMES)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_model_round_trips(model: type[Frozen], data: st.DataObject) -> None:
    original = data.draw(instances(model))
    decoded = codec.decode(codec.encode(original), model)
    assert decoded == original
    assert type(decoded) is model


@settings(max_examples=300)
@given(event=instances(PaymentEvent))
def test_payment_events_round_trip_with_aware_utc_datetimes(event: PaymentEvent) -> None:
    decoded = codec.decode(codec.encode(event), PaymentEvent)
    assert decoded == event
    assert decoded.occurred_at.utcoffset() is not None
    assert isinstance(decoded.type, EventType)


def test_encoding_is_single_object_header_plus_plain_avro_body() -> None:
    data = codec.encode(EVENT)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.fingerprint(PaymentEvent)
    # The body is what any Avro library reads with the published schema alone.
    schema = fastavro.parse_schema(json.loads(codec.schema_text(PaymentEvent)))
    record: Any = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema, None)
    assert record["invoice_ref"] == "in_1" and record["type"] == "PAYMENT_FAILED"


def test_fingerprint_is_the_specs_crc64_avro_little_endian() -> None:
    # Avro spec test vector: "int" -> 0x7275d51a3f395c8f, written little-endian.
    canonical_int = fastavro.schema.to_parsing_canonical_form("int")
    fp = fastavro.schema.fingerprint(canonical_int, "CRC-64-AVRO")
    assert bytes.fromhex(fp) == (0x7275D51A3F395C8F).to_bytes(8, "little")
    canonical = fastavro.schema.to_parsing_canonical_form(json.loads(codec.schema_text(Alert)))
    expected = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    assert codec.fingerprint(Alert) == expected
    assert len({codec.fingerprint(m) for m in TOPIC_VALUE_MODELS}) == len(TOPIC_VALUE_MODELS)


# -- older and newer writers ------------------------------------------------------------


def single_object(schema_json: Any, record: dict[str, Any]) -> bytes:
    canonical = fastavro.schema.to_parsing_canonical_form(schema_json)
    fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    buf = io.BytesIO(b"\xc3\x01" + fp)
    buf.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema_json), record)
    return buf.getvalue()


def old_payment_event_schema() -> Any:
    """An older PaymentEvent without the two retry fields (both have reader defaults)."""
    schema = json.loads(codec.schema_text(PaymentEvent))
    schema["fields"] = [
        f for f in schema["fields"] if f["name"] not in ("provider_retry_at", "paywatch_retry")
    ]
    return schema


OLD_RECORD = {
    "event_id": "e1",
    "type": "PAYMENT_SUCCEEDED",
    "tenant": "acme",
    "provider": "paypal",
    "source_type": "PAYMENT.SALE.COMPLETED",
    "occurred_at": NOW,
    "invoice_ref": "in_9",
}


def test_a_record_from_a_known_older_schema_decodes_with_defaults() -> None:
    old = old_payment_event_schema()
    data = single_object(old, OLD_RECORD)
    reader = SingleObjectCodec(extra_writer_schemas=[json.dumps(old)])
    event = reader.decode(data, PaymentEvent)
    assert event.invoice_ref == "in_9" and event.type is EventType.PAYMENT_SUCCEEDED
    assert event.paywatch_retry is False and event.provider_retry_at is None
    # Without that schema the fingerprint is unknown: refused, never guessed.
    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        codec.decode(data, PaymentEvent)


def test_a_newer_event_type_symbol_reads_as_other() -> None:
    newer = json.loads(codec.schema_text(PaymentEvent))
    newer["fields"][1]["type"]["symbols"].insert(0, "PAYMENT_DISPUTED")
    data = single_object(newer, {**OLD_RECORD, "type": "PAYMENT_DISPUTED"})
    event = SingleObjectCodec([json.dumps(newer)]).decode(data, PaymentEvent)
    assert event.type is EventType.OTHER


def test_packaged_history_schemas_are_known_writers() -> None:
    history = json.loads(
        resources.files("paywatch.schemas").joinpath("history", "PaymentEvent.v1.avsc").read_text()
    )
    record = {**OLD_RECORD, "paywatch_retry": True}
    event = codec.decode(single_object(history, record), PaymentEvent)
    assert event.paywatch_retry is True


# -- malformed input -> CodecError, nothing else ------------------------------------------


def decode_or_codec_error(data: bytes, model: type[M]) -> None:
    try:
        decoded = codec.decode(data, model)
    except CodecError:
        return
    assert isinstance(decoded, model)


@settings(max_examples=400)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(data, PaymentEvent)


@pytest.mark.parametrize("model", TOPIC_VALUE_MODELS, ids=NAMES)
@settings(max_examples=150)
@given(body=st.binary(max_size=200))
def test_random_bodies_behind_a_valid_header_raise_codec_error_or_decode(
    model: type[Frozen], body: bytes
) -> None:
    decode_or_codec_error(b"\xc3\x01" + codec.fingerprint(model) + body, model)


@settings(max_examples=200)
@given(event=instances(PaymentEvent), position=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_corrupted_bytes_raise_codec_error_or_decode(
    event: PaymentEvent, position: int, byte: int
) -> None:
    data = bytearray(codec.encode(event))
    data[position % len(data)] = byte
    decode_or_codec_error(bytes(data), PaymentEvent)


def test_every_truncation_raises_codec_error() -> None:
    data = codec.encode(EVENT)
    for end in range(len(data)):
        with pytest.raises(CodecError):
            codec.decode(data[:end], PaymentEvent)


def test_trailing_bytes_wrong_fingerprint_and_wrong_model_raise_codec_error() -> None:
    data = codec.encode(EVENT)
    with pytest.raises(CodecError, match="trailing"):
        codec.decode(data + b"\x00", PaymentEvent)
    with pytest.raises(CodecError, match="fingerprint"):
        codec.decode(data[:2] + bytes(8) + data[10:], PaymentEvent)
    with pytest.raises(CodecError, match=r"not a dev\.paywatch\.Alert"):
        codec.decode(data, Alert)


def test_an_out_of_range_value_is_a_codec_error_naming_no_input() -> None:
    # RiskScore.score must stay within 0..1: a body that says otherwise is refused.
    schema = json.loads(codec.schema_text(RiskScore))
    record = {
        "tenant": "t",
        "customer_ref": "c",
        "score": 7.5,
        "band": "LOW",
        "model_version": "v1",
        "as_of": NOW,
    }
    with pytest.raises(CodecError, match="score") as caught:
        codec.decode(single_object(schema, record), RiskScore)
    assert "7.5" not in str(caught.value)


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"a": NaN}', '{"a": "\\u0000"}'])
def test_a_policy_change_whose_policy_is_no_jsonb_object_is_a_codec_error(text: str) -> None:
    # Projections store policy_json as jsonb: anything Postgres would refuse is refused here.
    schema = json.loads(codec.schema_text(PolicyChanged))
    record = {
        "tenant": "t",
        "revision": "r",
        "policy_json": text,
        "previous_revision": None,
        "changed_at": NOW,
        "changed_by": "cli",
        "reason": None,
    }
    with pytest.raises(CodecError, match="policy_json"):
        codec.decode(single_object(schema, record), PolicyChanged)


def test_a_model_that_cannot_be_encoded_raises_codec_error() -> None:
    too_big = EVENT.model_copy(update={"amount_minor": 2**64})
    with pytest.raises(CodecError):
        codec.encode(too_big)


def test_only_topic_value_models_have_schemas() -> None:
    with pytest.raises(TypeError):
        codec.load_schema(Decline)
    assert codec.load_schema(PaymentEvent)["name"] == "dev.paywatch.PaymentEvent"
