"""Saga table entries, version 2: one compact binary value per saga, encoded once.

A value is a fixed header, readable without touching the saga, then the saga::

    b"\\x02" | partition u32 | decided (µs since the epoch, saga time) i64
             | pending timers u16 | first due (µs, wall time) i64 | first timer id (u8 len + utf-8)
             | saga: msgpack (msgspec) map {field code: value}

The header is all the timer index needs (``read_head`` parses it in about a microsecond),
so a worker finds the due timers of its partitions by reading its store's raw bytes, never
the sagas. The saga is a map from each field's code (its position in ``FIELDS``, which is
append-only) to its value, with these left out:

* a value equal to what the field holds when absent: its default, or for a timer's command
  the timer's own id and due time and the saga's tenant and invoice, and for a saga's
  attempts the saga's own card, invoice, provider, amount and currency (so no command body
  repeats what the saga already says);
* a string seen earlier in the same value (4 characters or more) is written as its index
  in the order of first appearance (rule editions, sources, event ids, the card key);
* instants are integers (µs since the epoch) when in UTC, ISO text otherwise (an offset
  is kept as it was); durations are integers (µs).

Decoding builds the models with ``model_construct`` from values this module wrote from
validated models (no validation pass); ``decode(encode(s)) == s`` for every saga
(tests/unit/test_saga_entry_codec.py).
"""

from __future__ import annotations

import struct
import types
import typing
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, NamedTuple

import msgspec
from pydantic import BaseModel

from paywatch.recovery.ledger import CardAttempt
from paywatch.recovery.rules import Verdict
from paywatch.recovery.state import Saga, Timer
from paywatch.schemas.models import RecoveryCommand, RuleRef

VERSION = 2
MAGIC = bytes([VERSION])
_HEAD = struct.Struct("<BIqHqB")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_INTERN_MIN = 4

FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    Saga: (
        "tenant",
        "invoice_ref",
        "status",
        "episode",
        "opened_at",
        "closed_at",
        "floor",
        "last_event_at",
        "provider",
        "customer_ref",
        "subscription_ref",
        "payment_ref",
        "amount_minor",
        "currency",
        "card",
        "card_known",
        "card_at",
        "network",
        "verdict",
        "verdict_at",
        "decline_category",
        "not_before",
        "not_before_rule",
        "stop",
        "needs_update",
        "update_requests",
        "provider_retry_at",
        "in_flight",
        "retries",
        "awaiting_since",
        "policy_revision",
        "attempts",
        "seen",
        "done",
        "pending",
        "ledger",
        "permit",
        "high_risk",
        "experiment",
        "arm",
    ),
    Timer: ("id", "due_at", "purpose", "command"),
    RecoveryCommand: (
        "command_id",
        "type",
        "tenant",
        "invoice_ref",
        "due_at",
        "attempt",
        "channel",
        "template",
        "reason",
        "rule",
        "cause_event_id",
        "provider",
        "customer_ref",
        "subscription_ref",
        "payment_ref",
        "amount_minor",
        "currency",
        "decline_category",
        "issued_at",
        "first_failed_at",
        "schedule_only",
        "attempts_used",
        "attempts_allowed",
        "card_retries_left",
        "card_limit",
    ),
    CardAttempt: (
        "id",
        "card",
        "invoice_ref",
        "provider",
        "source",
        "at",
        "amount_minor",
        "currency",
        "attempt",
        "counted",
        "stop",
    ),
    Verdict: ("action", "rule", "wait"),
    RuleRef: ("id", "edition", "source"),
}
"""Each stored model's fields in code order. Append-only: codes are positions."""

NOT_STORED: dict[type[BaseModel], frozenset[str]] = {Saga: frozenset({"ledger"})}
"""The shell's snapshot of the card's ledger: filled in before every decision."""

_SAGA_TO_ATTEMPT = ("card", "invoice_ref", "provider", "amount_minor", "currency")
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(dict[int, Any])


class Head(NamedTuple):
    """What the header says: enough to index the saga's next timer."""

    partition: int
    decided_us: int
    timers: int
    first_due_us: int  # wall time; meaningless when timers == 0
    first_id: str


def us(value: datetime) -> int:
    """Microseconds since the epoch (an aware instant)."""
    return (value - EPOCH) // _US


def from_us(value: int) -> datetime:
    """The UTC instant ``value`` µs after the epoch."""
    return EPOCH + timedelta(microseconds=value)


def encode(
    saga: Saga, partition: int, decided: datetime, timers: list[tuple[str, datetime]]
) -> bytes:
    """The table value of ``saga`` (``timers``: its pending (id, wall due), due order)."""
    first_id, first_due = timers[0] if timers else ("", EPOCH)
    head = pack_head(partition, us(decided), len(timers), us(first_due), first_id.encode())
    return head + _ENCODER.encode(_Writer().model(saga, {}))


def pack_head(
    partition: int, decided_us: int, timers: int, first_due_us: int, first_id: bytes
) -> bytes:
    """A value's header (see the module docstring)."""
    head = _HEAD.pack(VERSION, partition, decided_us, timers, first_due_us, len(first_id))
    return head + first_id


def body_offset(value: bytes) -> int:
    """Where the saga starts in a version-2 value."""
    return _HEAD.size + value[_HEAD.size - 1]


def is_v2(value: bytes) -> bool:
    """Is this a version-2 value (version 1 is JSON text, starting with ``{``)?"""
    return value[:1] == MAGIC


def read_head(value: bytes) -> Head:
    """The header of a version-2 value."""
    _, partition, decided, count, first_due, id_len = _HEAD.unpack_from(value)
    start = _HEAD.size
    first_id = value[start : start + id_len].decode()
    return Head(partition, decided, count, first_due, first_id)


def decode(value: bytes) -> Saga:
    """The saga of a version-2 value."""
    body = _DECODER.decode(memoryview(value)[body_offset(value) :])
    return Saga.model_validate(_Reader().model(Saga, body, {}))


# -- field kinds -----------------------------------------------------------------------


class _Kind(NamedTuple):
    name: str  # "plain", "dt", "td", "enum", "model", "tuple"
    cls: Any = None
    item: _Kind | None = None


def _kind(annotation: Any) -> _Kind:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kind(typing.get_args(annotation)[0])
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(inner)
    if origin is tuple:
        return _Kind("tuple", item=_kind(typing.get_args(annotation)[0]))
    if annotation is datetime:
        return _Kind("dt")
    if annotation is timedelta:
        return _Kind("td")
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return _Kind("enum", annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Kind("model", annotation)
    return _Kind("plain", annotation)


def _nested(kind: _Kind) -> bool:
    return kind.name == "model" or (kind.item is not None and kind.item.name == "model")


def _specs(cls: type[BaseModel]) -> list[tuple[int, str, _Kind, Any]]:
    """(code, name, kind, default) of the stored fields: plain ones first, then models
    (a child model's context refers to its parent's plain fields)."""
    names = FIELDS[cls]
    missing = set(cls.model_fields) - set(names)
    if missing:
        raise TypeError(f"{cls.__name__}: fields without a code: {sorted(missing)}")
    out = []
    for code, name in enumerate(names):
        if name in NOT_STORED.get(cls, ()):
            continue
        info = cls.model_fields[name]
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        out.append((code, name, _kind(info.annotation), default))
    return sorted(out, key=lambda spec: _nested(spec[2]))


SPECS = {cls: _specs(cls) for cls in FIELDS}
CODES = {cls: {code: (name, kind) for code, name, kind, _ in specs} for cls, specs in SPECS.items()}

Context = dict[str, Any]
"""Field name -> the value an absent field takes (instead of the default)."""


def _child_context(cls: type[BaseModel], name: str, parent: Any, saga: Any) -> Context:
    """What a child model's absent fields mean, given its parent and the saga."""
    if cls is Timer and name == "command":
        ctx: Context = {"command_id": parent.id, "due_at": parent.due_at}
        if saga is not None:
            ctx.update(tenant=saga.tenant, invoice_ref=saga.invoice_ref)
        return ctx
    if cls is Saga and name == "attempts":
        return {f: getattr(parent, f) for f in _SAGA_TO_ATTEMPT}
    return {}


class _Writer:
    """Encodes one value (its string table is per value)."""

    def __init__(self) -> None:
        self.strings: dict[str, int] = {}
        self.saga: Saga | None = None

    def model(self, obj: BaseModel, ctx: Context) -> dict[int, Any]:
        cls = type(obj)
        if cls is Saga:
            self.saga = typing.cast(Saga, obj)
        out: dict[int, Any] = {}
        for code, name, kind, default in SPECS[cls]:
            value = getattr(obj, name)
            if value == ctx.get(name, default):
                continue  # what an absent field means
            out[code] = self.value(value, kind, cls, name, obj)
        return out

    def value(self, value: Any, kind: _Kind, cls: Any, name: str, parent: Any) -> Any:
        if value is None:
            return None
        if kind.name == "plain":
            return self.string(value) if isinstance(value, str) else value
        if kind.name == "dt":
            offset = value.utcoffset()
            return us(value) if offset is not None and not offset else value.isoformat()
        if kind.name == "td":
            return value // _US
        if kind.name == "enum":
            return value.value
        if kind.name == "model":
            return self.model(value, _child_context(cls, name, parent, self.saga))
        assert kind.item is not None
        return [self.value(v, kind.item, cls, name, parent) for v in value]

    def string(self, text: str) -> str | int:
        known = self.strings.get(text)
        if known is not None:
            return known
        if len(text) >= _INTERN_MIN:
            self.strings[text] = len(self.strings)
        return text


class _Reader:
    """Decodes one value (mirrors ``_Writer``)."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.saga: Any = None

    def model(self, cls: type[BaseModel], data: dict[int, Any], ctx: Context) -> dict[str, Any]:
        """The model's fields (validated by the caller): absent ones take the context's
        value or are left to the model's default."""
        fields: dict[str, Any] = dict(ctx)
        parent = _Fields(fields)  # a live view: the plain fields come first
        if cls is Saga:
            self.saga = parent
        codes = CODES[cls]
        for code, raw in data.items():  # in the order the writer wrote (and interned) them
            name, kind = codes[code]
            if kind.name == "plain" and kind.cls is not str:
                fields[name] = raw
            else:
                fields[name] = self.value(raw, kind, cls, name, parent)
        return fields

    def value(self, raw: Any, kind: _Kind, cls: Any, name: str, parent: Any) -> Any:
        if raw is None:
            return None
        if kind.name == "plain":
            return self.string(raw) if kind.cls is str else raw
        if kind.name == "dt":
            return datetime.fromisoformat(raw) if isinstance(raw, str) else from_us(raw)
        if kind.name == "td":
            return timedelta(microseconds=raw)
        if kind.name == "enum":
            return kind.cls(raw)
        if kind.name == "model":
            return self.model(kind.cls, raw, _child_context(cls, name, parent, self.saga))
        assert kind.item is not None
        return tuple(self.value(v, kind.item, cls, name, parent) for v in raw)

    def string(self, raw: str | int) -> str:
        if isinstance(raw, int):
            return self.strings[raw]
        if len(raw) >= _INTERN_MIN:
            self.strings.append(raw)
        return raw


class _Fields:
    """Attribute access to a model's fields decoded so far (a child's context)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        return self._fields[name]
