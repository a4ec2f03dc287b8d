"""Sorting executor failures: the record's fault (dead letter) vs transient (retry)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg.exceptions as pg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from paywatch.executor.decide import Coords
from paywatch.executor.failures import dead_letter, permanent_db, permanent_kafka, transient
from paywatch.kafka.codec import make_codec
from paywatch.schemas.models import MAX_BODY, MAX_TEXT, DeadLetter
from paywatch.settings import Settings

AT = Coords("recovery.commands", 3, 99)
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "exc",
    [
        pg.RaiseError("refused by a trigger"),
        pg.CharacterNotInRepertoireError("invalid byte sequence 0x00"),
        pg.NumericValueOutOfRangeError("out of range"),
        pg.CheckViolationError("check"),
        pg.ProgramLimitExceededError("index row too big"),
    ],
)
def test_values_postgres_refuses_are_the_records_fault(exc: Exception) -> None:
    assert permanent_db(exc) and not transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        pg.SerializationError("retry"),
        pg.AdminShutdownError("shutting down"),
        pg.UndefinedTableError("no table: not one record's fault"),
        pg.ConnectionDoesNotExistError("closed"),
        ConnectionRefusedError("refused"),
        TimeoutError(),
        KafkaConnectionError("no broker"),
        KafkaTimeoutError(),
    ],
)
def test_unavailable_servers_are_transient(exc: Exception) -> None:
    assert transient(exc) and not permanent_db(exc) and not permanent_kafka(exc)


def test_a_record_kafka_refuses_is_the_records_fault() -> None:
    exc = MessageSizeTooLargeError()
    assert permanent_kafka(exc) and not transient(exc)


def test_a_dead_letter_always_fits_the_dlq() -> None:
    # The error quotes a NUL and a lone surrogate and is long; payload and key are huge.
    exc = ValueError("bad \x00 value \udcff " + "x" * 5000)
    letter = dead_letter(AT, b"k" * 100_000, b"p" * (MAX_BODY + 10), "journal", exc, NOW)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == AT
    assert letter.stage == "journal" and len(letter.error) <= MAX_TEXT
    assert letter.error.startswith("ValueError: bad \\x00 value \\udcff")
    assert "payload cut from" in letter.error and len(letter.payload) == MAX_BODY
    codec = make_codec(Settings())
    value = codec.encode(letter, topic="recovery.commands.dlq")
    assert len(value) < 1_000_000
    assert codec.decode(value, DeadLetter, topic="recovery.commands.dlq") == letter
