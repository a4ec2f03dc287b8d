"""Avro codecs for topic values (ARCHITECTURE §7).

Two wire formats, one body (fastavro's schemaless encoding of the ``.avsc`` next
to this module):

* ``SingleObjectCodec`` (default): Avro single-object encoding,
  ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint + body. A reader finds
  the writer schema among the published ``.avsc`` files (current and
  ``history/``) by fingerprint and resolves it to the current model.
* ``RegistryCodec`` (when ``PAYWATCH_SCHEMA_REGISTRY_URL`` is set): Confluent
  wire format, ``00`` + 4-byte big-endian schema id + body, subject
  ``<topic>-value``. It still decodes single-object records, so topics written
  before the registry was switched on keep replaying. It lives in
  :mod:`paywatch.kafka.registry` and is re-exported here, imported on first use.

Malformed bytes raise :class:`~paywatch.errors.CodecError`, never anything else.
With a registry, also :class:`~paywatch.errors.Retryable` when it cannot be reached
and :class:`~paywatch.errors.ConfigError` when it denies access.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, to_parsing_canonical_form
from fastavro.schema import fingerprint as _fastavro_fingerprint
from pydantic import ValidationError

from paywatch.errors import CodecError
from paywatch.schemas.models import DeadLetter, Frozen, RawWebhook
from paywatch.schemas.raw_avro import raw_webhook_body
from paywatch.schemas.topics import TOPIC_MODELS

if TYPE_CHECKING:
    pass

M = TypeVar("M", bound=Frozen)

MAGIC = b"\xc3\x01"
"""Marker of Avro single-object encoding."""
HEADER_LEN = len(MAGIC) + 8

TOPIC_VALUE_MODELS: tuple[type[Frozen], ...] = (*TOPIC_MODELS.values(), DeadLetter)
"""Every model that is a topic value; each has ``<Name>.avsc`` in this package."""

# fastavro raises these (and nothing else we know of) on malformed bodies or failed
# schema resolution; pydantic's ValidationError is a ValueError.
_DECODE_ERRORS: tuple[type[Exception], ...] = (EOFError, ValueError, IndexError, KeyError)
_DECODE_ERRORS += (TypeError, OverflowError, struct.error, SchemaResolutionError)
_ENCODE_ERRORS = (ValueError, TypeError, OverflowError, struct.error)
_SCHEMA_ERRORS = (ValueError, KeyError, TypeError, SchemaParseException)


@dataclass(frozen=True)
class AvroSchema:
    """One parsed Avro record schema and its identity."""

    name: str
    """Full name, e.g. ``dev.paywatch.PaymentEvent``."""
    text: str
    parsed: Any
    fingerprint: bytes
    tags: _Tags
    """Which fields ``_to_avro`` tags with their union branch."""

    @classmethod
    def from_text(cls, text: str) -> AvroSchema:
        """Parse ``.avsc`` text; raises CodecError when it is not a record schema."""
        try:
            raw = json.loads(text)
            canonical = to_parsing_canonical_form(raw)
            parsed: Any = fastavro.parse_schema(raw)
            name = parsed["name"]
        except _SCHEMA_ERRORS as exc:
            raise CodecError(f"invalid Avro schema: {exc}") from exc
        digest = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
        return cls(name, text, parsed, digest, _tags(parsed))


_Tags = tuple[tuple[str, "str | None", "_Tags"], ...]
"""Per field: the branch of its ``["null", X]`` union (or None) and tags inside a record."""


def _tags(record_schema: Any) -> _Tags:
    found = []
    for field in record_schema["fields"]:
        branch, inner = None, field["type"]
        if isinstance(inner, list) and len(inner) == 2 and inner[0] == "null":
            inner = inner[1]
            branch = inner if isinstance(inner, str) else inner.get("name", inner["type"])
        nested = _tags(inner) if isinstance(inner, dict) and inner["type"] == "record" else ()
        if branch or nested:
            found.append((field["name"], branch, nested))
    return tuple(found)


def _tag(record: dict[str, Any], tags: _Tags) -> dict[str, Any]:
    # Naming the union branch, ("string", "x") instead of "x", spares fastavro
    # validating the value against each branch in turn (a whole record, for
    # decline/payment_method/raw): ~1.4x faster encode of a full PaymentEvent.
    for name, branch, nested in tags:
        value = record[name]
        if value is not None:
            value = _tag(value, nested) if nested else value
            record[name] = (branch, value) if branch else value
    return record


def _history_texts() -> Iterator[str]:
    folder = resources.files(__package__).joinpath("history")
    entries = sorted(folder.iterdir(), key=lambda e: e.name) if folder.is_dir() else []
    for entry in entries:
        if entry.name.endswith(".avsc"):
            yield entry.read_text(encoding="utf-8")


@cache
def current_schema(model_type: type[Frozen]) -> AvroSchema:
    """The published schema of a topic value model (cached)."""
    if model_type not in TOPIC_VALUE_MODELS:
        raise TypeError(f"{model_type.__name__} is not a topic value model")
    text = resources.files(__package__).joinpath(f"{model_type.__name__}.avsc")
    return AvroSchema.from_text(text.read_text(encoding="utf-8"))


@cache
def _published_writers() -> dict[bytes, AvroSchema]:
    schemas = [AvroSchema.from_text(text) for text in _history_texts()]
    schemas += [current_schema(model_type) for model_type in TOPIC_VALUE_MODELS]
    return {schema.fingerprint: schema for schema in schemas}


def load_schema(model_type: type[Frozen]) -> Any:
    """The parsed fastavro schema of a topic value model (cached)."""
    return current_schema(model_type).parsed


def schema_text(model_type: type[Frozen]) -> str:
    """The ``.avsc`` text of a topic value model, as published."""
    return current_schema(model_type).text


def fingerprint(model_type: type[Frozen]) -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of the model's canonical schema."""
    return current_schema(model_type).fingerprint


def _to_avro(model: Frozen, schema: AvroSchema) -> dict[str, Any]:
    # model_dump keeps datetimes, bytes and (str-valued) enums as fastavro wants them.
    return _tag(model.model_dump(mode="python"), schema.tags)


def body_bytes(schema: AvroSchema, model: Frozen, header: bytes = b"") -> bytes:
    """``header`` + the schemaless Avro body of ``model``; raises CodecError when it cannot
    be written.

    A ``RawWebhook`` (ingest's hot path) is written by ``raw_avro``, same bytes.
    """
    try:
        if type(model) is RawWebhook:
            written = raw_webhook_body(model, header)
            if written is not None:
                return written
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, schema.parsed, _to_avro(model, schema))
        return buf.getvalue()
    except _ENCODE_ERRORS as exc:
        raise CodecError(f"cannot encode {schema.name}: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        # Only locations and error types: pydantic's message quotes input values.
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors())
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def read_body(body: memoryview, writer: AvroSchema, model_type: type[M]) -> M:
    """Read a body written with ``writer``, resolved to ``model_type``'s current schema."""
    reader = current_schema(model_type)
    if writer.name != reader.name:
        raise CodecError(f"record is a {writer.name}, not a {reader.name}")
    resolve = None if writer.fingerprint == reader.fingerprint else reader.parsed
    buf = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(buf, writer.parsed, resolve)
        if buf.tell() != len(body):
            raise CodecError(f"{len(body) - buf.tell()} trailing bytes after a {reader.name}")
        return model_type.model_validate(record)
    except _DECODE_ERRORS as exc:
        raise CodecError(f"malformed {reader.name}: {_describe(exc)}") from exc


class Codec(Protocol):
    """Turns topic values into bytes and back."""

    def encode(self, model: Frozen, topic: str | None = None) -> bytes:
        """Encode one topic value (``topic`` is the full Kafka topic name)."""
        ...

    def decode(self, data: bytes, model_type: type[M], topic: str | None = None) -> M:
        """Decode one topic value as ``model_type``; raise CodecError when malformed."""
        ...


class SingleObjectCodec:
    """Avro single-object encoding; knows every published schema by fingerprint."""

    def __init__(self, extra_writer_schemas: Iterable[str] = ()) -> None:
        self._writers = dict(_published_writers())
        for text in extra_writer_schemas:
            schema = AvroSchema.from_text(text)
            self._writers.setdefault(schema.fingerprint, schema)

    def encode(self, model: Frozen, topic: str | None = None) -> bytes:
        """``C3 01`` + fingerprint + body."""
        schema = current_schema(type(model))
        return body_bytes(schema, model, MAGIC + schema.fingerprint)

    def decode(self, data: bytes, model_type: type[M], topic: str | None = None) -> M:
        """Check marker and fingerprint, resolve the writer schema to ``model_type``."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise CodecError("not Avro single-object encoding (no C3 01 marker)")
        key = bytes(data[2:HEADER_LEN])
        writer = self._writers.get(key)
        if writer is None:
            raise CodecError(f"unknown schema fingerprint {key.hex()}")
        return read_body(memoryview(data)[HEADER_LEN:], writer, model_type)


@cache
def default_codec() -> SingleObjectCodec:
    """The shared SingleObjectCodec of the published schemas."""
    # Built on first use, not at import: it reads the packaged .avsc files.
    return SingleObjectCodec()


def encode(model: Frozen) -> bytes:
    """Encode with Avro single-object encoding."""
    return default_codec().encode(model)


def decode(data: bytes, model_type: type[M]) -> M:
    """Decode Avro single-object encoded bytes as ``model_type``."""
    return default_codec().decode(data, model_type)
