"""Confluent schema-registry wire format for topic values (ARCHITECTURE §7).

``RegistryCodec`` (when ``PAYWATCH_SCHEMA_REGISTRY_URL`` is set): ``00`` + 4-byte big-endian
schema id + the same Avro body as :mod:`paywatch.schemas.codec`, subject ``<topic>-value``.
It still decodes single-object records, so topics written before the registry was switched
on keep replaying.

Malformed bytes raise :class:`~paywatch.errors.CodecError`; also
:class:`~paywatch.errors.Retryable` when the registry cannot be reached and
:class:`~paywatch.errors.ConfigError` when it denies access.
"""

from __future__ import annotations

import struct
from typing import Any

from paywatch.errors import CodecError, ConfigError, Retryable
from paywatch.schemas.codec import (
    MAGIC,
    AvroSchema,
    M,
    SingleObjectCodec,
    body_bytes,
    current_schema,
    default_codec,
    read_body,
)
from paywatch.schemas.models import Frozen

CONFLUENT_MAGIC = 0
CONFLUENT_HEADER = struct.Struct(">bI")


class RegistryCodec:
    """Confluent wire format (``00`` + schema id) against a schema registry."""

    def __init__(self, client: Any, fallback: SingleObjectCodec | None = None) -> None:
        self._client = client
        self._fallback = fallback or default_codec()
        self._ids: dict[tuple[str, str], int] = {}
        self._writers: dict[int, AvroSchema] = {}

    @classmethod
    def from_url(cls, url: str) -> RegistryCodec:
        """Registry client for ``url`` (``mock://...`` gives confluent-kafka's in-memory one)."""
        # Imported here: the registry client stack takes ~0.5 s to import.
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return cls(SchemaRegistryClient.new_client({"url": url}))

    def encode(self, model: Frozen, topic: str | None = None) -> bytes:
        """Magic 0 + 4-byte schema id of ``<topic>-value`` + body."""
        if topic is None:
            raise ValueError("RegistryCodec.encode needs the topic (subject <topic>-value)")
        schema = current_schema(type(model))
        header = CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, self._schema_id(topic, schema))
        return body_bytes(schema, model, header)

    def decode(self, data: bytes, model_type: type[M], topic: str | None = None) -> M:
        """Decode Confluent-framed bytes (or single-object bytes written before)."""
        if data[:2] == MAGIC:
            return self._fallback.decode(data, model_type)
        if len(data) < CONFLUENT_HEADER.size or data[0] != CONFLUENT_MAGIC:
            raise CodecError("neither Confluent wire format nor single-object encoding")
        _, schema_id = CONFLUENT_HEADER.unpack_from(data)
        writer = self._writer(schema_id)
        return read_body(memoryview(data)[CONFLUENT_HEADER.size :], writer, model_type)

    def _schema_id(self, topic: str, schema: AvroSchema) -> int:
        key = (topic, schema.name)
        if key not in self._ids:
            from confluent_kafka.schema_registry import Schema

            subject = f"{topic}-value"
            self._ids[key] = _registry_call(
                self._client.register_schema, subject, Schema(schema.text, "AVRO")
            )
        return self._ids[key]

    def _writer(self, schema_id: int) -> AvroSchema:
        if schema_id not in self._writers:
            found = _registry_call(self._client.get_schema, schema_id)
            if (found.schema_type or "AVRO") != "AVRO":
                raise CodecError(f"schema id {schema_id} is {found.schema_type}, not Avro")
            self._writers[schema_id] = AvroSchema.from_text(found.schema_str)
        return self._writers[schema_id]


def _registry_call(fn: Any, *args: Any) -> Any:
    """Call the registry, translating its errors: refused -> CodecError, down -> Retryable."""
    import httpx2
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    try:
        return fn(*args)
    except SchemaRegistryError as exc:
        status = exc.http_status_code
        if status in (401, 403):
            raise ConfigError(f"schema registry denied access: {exc}") from exc
        if 400 <= status < 500 and status not in (408, 429):
            # Unknown schema id or subject, incompatible or invalid schema: permanent.
            raise CodecError(f"schema registry refused: {exc}") from exc
        raise Retryable(f"schema registry unavailable: {exc}") from exc
    except httpx2.TransportError as exc:
        raise Retryable(f"schema registry unreachable: {type(exc).__name__}") from exc
