"""The Avro body of a ``RawWebhook``, written by hand: the one record on ingest's hot path.

fastavro's ``schemaless_writer`` behind ``model_dump`` costs ~5.4 µs for a 2.9 KB Stripe
delivery, most of it walking the schema and the dumped dict; the record has seven fields
of four kinds, so writing them directly costs ~1 µs (bench/RESULTS.md, "Ingest, fourth
engine session"). The bytes are the same as fastavro's for every ``RawWebhook``:
tests/unit/test_raw_avro.py compares the two on generated records, so a change to
``RawWebhook.avsc`` that this writer does not follow fails there.

Avro binary encoding (specification §"Binary Encoding"): ``long`` is a zig-zag varint,
``string`` and ``bytes`` a long length then the bytes (UTF-8 for strings), a ``map`` blocks
of a long count then the pairs, ended by a zero count, a union the long index of its
branch then the value; ``timestamp-millis`` is the long count of milliseconds since the
epoch, computed as fastavro computes it for an aware datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime

from paywatch.schemas.models import RawWebhook

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SMALL = tuple(bytes((n,)) for n in range(0x80))
"""Varints of one byte (zig-zag values 0-127: longs -64..63)."""
_EMPTY_MAP = b"\x00"
_NULL_BRANCH = b"\x00"
_STRING_BRANCH = b"\x02"


def _long(value: int) -> bytes:
    """A zig-zag varint; ``value`` within Avro's long range."""
    n = (value << 1) ^ (value >> 63)
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def raw_webhook_body(raw: RawWebhook, prefix: bytes = b"") -> bytes | None:
    """``prefix`` + the schemaless Avro body of ``raw`` (one copy of the body: the codec's
    header goes in front here), or None when it has a naive ``received_at`` (fastavro
    reads those in local time; the generic writer keeps that behaviour).

    Raises UnicodeEncodeError for a string UTF-8 cannot carry (a lone surrogate), as
    fastavro does; the codec turns it into a CodecError.
    """
    when = raw.received_at
    if when.tzinfo is None:
        return None
    delta = when - _EPOCH
    millis = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    ingest_id = raw.ingest_id.encode()
    tenant = raw.tenant.encode()
    provider = raw.provider.encode()
    parts = [
        prefix,
        _long(len(ingest_id)), ingest_id,
        _long(len(tenant)), tenant,
        _long(len(provider)), provider,
        _long(millis),
    ]  # fmt: skip
    headers = raw.headers
    if headers:
        parts.append(_long(len(headers)))
        for name, value in headers.items():
            key, text = name.encode(), value.encode()
            parts += (_long(len(key)), key, _long(len(text)), text)
    parts.append(_EMPTY_MAP)
    body = raw.body
    parts += (_long(len(body)), body)
    subject = raw.subject
    if subject is None:
        parts.append(_NULL_BRANCH)
    else:
        encoded = subject.encode()
        parts += (_STRING_BRANCH, _long(len(encoded)), encoded)
    return b"".join(parts)
