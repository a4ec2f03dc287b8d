"""RegistryCodec: Confluent wire format against confluent-kafka's in-memory mock registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from paywatch.errors import CodecError, ConfigError, Retryable
from paywatch.kafka.codec import make_codec
from paywatch.kafka.registry import RegistryCodec
from paywatch.schemas import codec
from paywatch.schemas.codec import SingleObjectCodec
from paywatch.schemas.models import (
    Alert,
    AlertWindow,
    EventType,
    PaymentEvent,
    Severity,
)
from paywatch.settings import Settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENT = PaymentEvent(
    event_id="e1",
    type=EventType.PAYMENT_FAILED,
    tenant="acme",
    provider="stripe",
    source_type="invoice.payment_failed",
    occurred_at=NOW,
    invoice_ref="in_1",
)
TOPIC = "payments.events"


@pytest.fixture
def client() -> SchemaRegistryClient:
    # new_client (not the constructor) is what returns the mock for mock:// URLs.
    return SchemaRegistryClient.new_client({"url": "mock://paywatch-tests"})


def test_round_trip_in_confluent_wire_format(client: SchemaRegistryClient) -> None:
    registry = RegistryCodec(client)
    data = registry.encode(EVENT, topic=TOPIC)
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert client.get_latest_version(f"{TOPIC}-value").schema_id == schema_id
    assert registry.decode(data, PaymentEvent, topic=TOPIC) == EVENT
    # A fresh codec on the same registry learns the writer schema from its id.
    assert RegistryCodec(client).decode(data, PaymentEvent) == EVENT


def test_confluents_own_deserializer_reads_our_bytes(client: SchemaRegistryClient) -> None:
    data = RegistryCodec(client).encode(EVENT, topic=TOPIC)
    reader = AvroDeserializer(client)
    record = reader(data, SerializationContext(TOPIC, MessageField.VALUE))
    assert record["event_id"] == "e1" and record["type"] == "PAYMENT_FAILED"


def test_subject_is_topic_value_per_topic(client: SchemaRegistryClient) -> None:
    registry = RegistryCodec(client)
    alert = Alert(
        tenant="acme",
        kind="failure_rate_spike",
        severity=Severity.WARNING,
        window=AlertWindow(start=NOW, end=NOW),
        observed=0.4,
        baseline=0.1,
    )
    registry.encode(alert, topic="staging.alerts")
    registry.encode(EVENT, topic=TOPIC)
    assert set(client.get_subjects()) == {"staging.alerts-value", f"{TOPIC}-value"}
    with pytest.raises(ValueError, match="topic"):
        registry.encode(EVENT)


def test_single_object_records_written_before_the_registry_still_decode(
    client: SchemaRegistryClient,
) -> None:
    assert RegistryCodec(client).decode(codec.encode(EVENT), PaymentEvent) == EVENT


def test_unknown_ids_and_garbage_raise_codec_error(client: SchemaRegistryClient) -> None:
    registry = RegistryCodec(client)
    with pytest.raises(CodecError, match="refused"):
        registry.decode(b"\x00\x00\x00\x03\xe7" + b"\x02", PaymentEvent)
    for garbage in (b"", b"\x00\x00", b"\x07junk", b"{}"):
        with pytest.raises(CodecError):
            registry.decode(garbage, PaymentEvent)
    truncated = registry.encode(EVENT, topic=TOPIC)[:-1]
    with pytest.raises(CodecError):
        registry.decode(truncated, PaymentEvent)


def test_a_non_avro_schema_id_is_refused(client: SchemaRegistryClient) -> None:
    schema_id = client.register_schema(
        "other-value", Schema(json.dumps({"type": "object"}), "JSON")
    )
    with pytest.raises(CodecError, match="not Avro"):
        RegistryCodec(client).decode(b"\x00" + schema_id.to_bytes(4, "big"), PaymentEvent)


def test_an_unreachable_registry_is_retryable_not_malformed() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    client = SchemaRegistryClient({"url": "http://127.0.0.1:9", "max.retries": 0})
    registry = RegistryCodec(client)
    with pytest.raises(Retryable):
        registry.encode(EVENT, topic=TOPIC)


class FailingRegistry:
    """A registry client whose every call fails with one HTTP status."""

    def __init__(self, status: int) -> None:
        self.status = status

    def get_schema(self, schema_id: int) -> Schema:
        raise SchemaRegistryError(self.status, -1, "nope")


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, CodecError), (422, CodecError), (401, ConfigError), (429, Retryable), (503, Retryable)],
)
def test_registry_errors_are_translated_by_status(status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        RegistryCodec(FailingRegistry(status)).decode(b"\x00\x00\x00\x00\x01\x02", PaymentEvent)


def test_make_codec_picks_the_registry_only_when_configured() -> None:
    assert isinstance(make_codec(Settings(schema_registry_url=None)), SingleObjectCodec)
    assert isinstance(make_codec(Settings(schema_registry_url="mock://x")), RegistryCodec)
