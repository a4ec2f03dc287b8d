"""Whose fault a failed projector write is: the records' (isolate one) or the database's."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError
from asyncpg.exceptions import _base as asyncpg_base
from pydantic import ValidationError

from paywatch.projections.faults import describe, record_fault
from paywatch.schemas.models import DeadLetter

RECORDS_FAULT = [
    asyncpg.exceptions.RaiseError("refused by a trigger"),
    asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence: 0x00"),
    asyncpg.exceptions.UntranslatableCharacterError("\\u0000 cannot be converted to text"),
    asyncpg.exceptions.NumericValueOutOfRangeError("bigint out of range"),
    asyncpg.exceptions.NotNullViolationError("null value in column"),
    asyncpg.exceptions.CheckViolationError("violates check constraint"),
    asyncpg.exceptions.ProgramLimitExceededError("index row size exceeds maximum"),
    asyncpg_base.DataError("invalid input for query argument $1"),
    ValueError("a fold refused the record"),
    KeyError("missing"),
]
DATABASES_FAULT = [
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection"),
    asyncpg.exceptions.SerializationError("could not serialize access"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    asyncpg.exceptions.UndefinedTableError('relation "invoices" does not exist'),
    asyncpg.exceptions.DiskFullError("could not extend file"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg_base.InternalClientError("no binary format encoder"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    KafkaConnectionError("broker down"),
]


@pytest.mark.parametrize("exc", RECORDS_FAULT, ids=lambda e: type(e).__name__)
def test_data_errors_are_the_records_fault(exc: BaseException) -> None:
    assert record_fault(exc)


@pytest.mark.parametrize("exc", DATABASES_FAULT, ids=lambda e: type(e).__name__)
def test_unreachable_or_unready_databases_are_not(exc: BaseException) -> None:
    assert not record_fault(exc)


def test_the_description_fits_a_dead_letter() -> None:
    exc = asyncpg.exceptions.RaiseError("bad \x00 ref \udcff " + "x" * 5000)
    text = describe(exc)
    assert text.startswith("RaiseError [P0001]: bad \\x00 ref ? x")
    assert len(text) == 2000
    try:
        DeadLetter(
            source_topic="t",
            source_partition=0,
            source_offset=1,
            stage="project",
            error=text,
            payload=b"",
            failed_at="2026-11-02T09:00:00Z",
        )
    except ValidationError as invalid:  # pragma: no cover - the assertion's message
        pytest.fail(f"a described error must fit DeadLetter.error: {invalid}")
