"""Which failures belong to one record (dead-letter it) and which are transient (retry).

* Permanent, the record's fault: a value Postgres refuses (SQLSTATE classes 22 data
  exception, 23 integrity violation, 54 program limit, P0 raised by a trigger or
  function; asyncpg's DataError for a value it cannot send) and a record Kafka refuses
  (too large, invalid). A batch failing this way is split until the record is found.
* Transient, never dead-lettered: Kafka or Postgres unreachable, timeouts, any other
  broker or server error (a missing table or an overloaded server is not one record's
  fault); the batch is retried with backoff.

Dead letters are built so that they always fit the DLQ: errors without NUL or lone
surrogates and at most MAX_TEXT characters, payloads and keys cut to what a record holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import asyncpg
from aiokafka.errors import (
    InvalidMessageError,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from paywatch.executor.decide import Coords
from paywatch.schemas.models import MAX_BODY, MAX_HEADER, MAX_TEXT, DeadLetter, dead_letter_reason

PERMANENT_SQLSTATE = ("22", "23", "54", "P0")
PERMANENT_KAFKA = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidMessageError,
    InvalidTimestampError,
)
T = TypeVar("T")
Failed = list[tuple[T, BaseException]]
"""Items refused for good, each with the error."""
MAX_KEY = MAX_HEADER
RETRIED = (KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
"""The exception types `transient` sorts (anything else is a bug and propagates)."""


def permanent_db(exc: BaseException) -> bool:
    """True when Postgres (or asyncpg) refused a value: the record's fault."""
    if isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError):
        return True  # asyncpg's own DataError: a parameter it cannot encode
    state = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    return isinstance(state, str) and state.startswith(PERMANENT_SQLSTATE)


def permanent_kafka(exc: BaseException) -> bool:
    """True when the broker or the client refused the record itself."""
    return isinstance(exc, PERMANENT_KAFKA)


def transient(exc: BaseException) -> bool:
    """True for failures that pass: retry the batch later, never dead-letter it."""
    if isinstance(exc, KafkaError):
        return not permanent_kafka(exc)
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return not permanent_db(exc)
    return isinstance(exc, OSError | TimeoutError)


def dead_letter(
    coords: Coords, key: bytes | None, value: bytes | None, stage: str, exc: BaseException,
    at: datetime,
) -> DeadLetter:  # fmt: skip
    """The DeadLetter of a record that failed at `stage`, cut to fit a Kafka record."""
    payload = value or b""
    error = dead_letter_reason(exc)
    if len(payload) > MAX_BODY:
        note = f" [payload cut from {len(payload)} to {MAX_BODY} bytes]"
        error, payload = error[: MAX_TEXT - len(note)] + note, payload[:MAX_BODY]
    return DeadLetter(
        source_topic=coords.topic,
        source_partition=coords.partition,
        source_offset=coords.offset,
        stage=stage,
        error=error,
        key=None if key is None else key[:MAX_KEY],
        payload=payload,
        failed_at=at,
    )
