"""Whose fault a failed batch write is: a record's (isolate it) or the database's (wait).

A record's fault is a failure that another record would not have had:

* Postgres refused the data: SQLSTATE classes 22 (data exception: a NUL in text, a value out
  of range, bad JSON), 23 (integrity constraint), P0 (a trigger or function raised) and 54
  (program limit exceeded: a row or an index entry too large);
* asyncpg could not encode an argument (its client-side ``DataError``);
* the read model's own code failed on the data (decide or encode: any other exception that
  is not a connection, I/O or timeout error).

Everything else is the database's fault and says nothing about the records: a lost or
refused connection (asyncpg connection errors, ``InterfaceError``, ``OSError``), too many
connections, a shutdown, a serialization failure or deadlock, a missing table, a timeout.
Those batches are retried whole, after a backoff, until Postgres answers again; isolating
records for them would dead-letter a healthy stream.
"""

from __future__ import annotations

import asyncio

import asyncpg
from aiokafka.errors import KafkaError
from asyncpg.exceptions import _base as asyncpg_base

RECORD_SQLSTATE_CLASSES = frozenset({"22", "23", "P0", "54"})
"""The SQLSTATE classes that depend on the rows written."""

_INFRASTRUCTURE = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg_base.InternalClientError,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    KafkaError,
)


def record_fault(exc: BaseException) -> bool:
    """Is this failure due to the records written (so one of them can be isolated)?"""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in RECORD_SQLSTATE_CLASSES
    if isinstance(exc, asyncpg_base.DataError):  # an argument asyncpg could not encode
        return True
    return isinstance(exc, Exception) and not isinstance(exc, _INFRASTRUCTURE)


def describe(exc: BaseException) -> str:
    """The error as a dead letter's bounded, NUL-free text."""
    state = getattr(exc, "sqlstate", None)
    text = f"{type(exc).__name__}{f' [{state}]' if state else ''}: {exc}"
    clean = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\\x00")
    return clean[:2000]
