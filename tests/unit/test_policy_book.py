"""PolicyView's pure parts: the fold of PolicyChanged records and the ready condition."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition

from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.codec import SingleObjectCodec
from paywatch.schemas.models import PolicyChanged
from paywatch.streams.policy_view import DEFAULTS, PolicyBook, caught_up
from paywatch.tenants.policy_input import canonical_json

CODEC = SingleObjectCodec()
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def record(tenant: str, policy: TenantPolicy | str) -> bytes:
    text = policy if isinstance(policy, str) else canonical_json(policy)
    change = PolicyChanged(
        tenant=tenant, revision="r", policy_json=text, changed_at=T0, changed_by="cli"
    )
    return CODEC.encode(change)


def test_tenants_without_a_change_run_the_defaults() -> None:
    book = PolicyBook(CODEC)
    assert book.get("acme") is DEFAULTS and DEFAULTS == TenantPolicy()
    assert len(book) == 0


def test_the_last_change_of_each_tenant_wins() -> None:
    book = PolicyBook(CODEC)
    assert book.apply(record("a", TenantPolicy(window_days=10)), "p[0]@0") == "a"
    assert book.apply(record("b", TenantPolicy(window_days=20)), "p[1]@0") == "b"
    assert book.apply(record("a", TenantPolicy(window_days=15)), "p[0]@1") == "a"
    assert (book.get("a").window_days, book.get("b").window_days) == (15, 20)
    assert book.get("c") == TenantPolicy()


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        (b"not avro", "p[0]@7: not Avro single-object encoding"),
        (None, "p[0]@7: not Avro single-object encoding"),
        (record("a", '{"window_days": 0}'), "invalid policy for tenant a (1 errors; window_days:"),
        (record("a", '{"colour": "red"}'), "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_records_are_logged_and_skipped_keeping_the_policy_in_force(
    value: bytes | None, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    book = PolicyBook(CODEC)
    book.apply(record("a", TenantPolicy(window_days=12)), "p[0]@6")
    with caplog.at_level(logging.WARNING):
        assert book.apply(value, "p[0]@7") is None
    assert book.get("a").window_days == 12
    assert logged in caplog.text and "skipped policy change" in caplog.text


def test_ready_when_every_partition_reached_its_end_offset() -> None:
    p0, p1 = TopicPartition("t", 0), TopicPartition("t", 1)
    assert caught_up({}, {})
    assert caught_up({}, {p0: 0, p1: 0})  # empty partitions: nothing to wait for
    assert not caught_up({p0: 3}, {p0: 3, p1: 1})
    assert not caught_up({p0: 2, p1: 1}, {p0: 3, p1: 1})
    assert caught_up({p0: 3, p1: 1}, {p0: 3, p1: 1})
    assert caught_up({p0: 5, p1: 1}, {p0: 3, p1: 1})  # records written after start
