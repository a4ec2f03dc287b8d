"""A decided batch made durable: journal rows and outcome records, all or nothing.

``apply`` opens one transaction, inserts the batch's journal rows (the idempotency
guard: only the rows it inserts are executed), sends the outcome records of those rows,
waits for every broker ack once and commits. Nothing is journaled unless its outcome is
acknowledged; a failure anywhere rolls the rows back and the batch is decided again.

One record's poison never sinks the batch: a row Postgres refuses for good is found by
splitting the insert (savepoints) until it stands alone, and is returned as refused; a
record Kafka refuses for good raises ``SendRefused`` naming it, so the caller
dead-letters it and applies the rest. Transient errors propagate for the caller's retry.

Customer notices: ``notify`` (email/outbox.py ``enqueue``) queues the emails of the
notification commands under the same savepoint as their journal rows, so an email is queued
exactly when its command is journaled, and the journal says ``emailed`` (or ``suppressed``
with the reason in ``detail.email``) instead of ``recorded``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from paywatch.executor import journal
from paywatch.executor.decide import (
    Decision,
    Entry,
    Invoice,
    Key,
    Output,
    customer_notice,
    needs_anchor,
)
from paywatch.executor.failures import Failed, permanent_db, permanent_kafka
from paywatch.schemas.models import RecoveryCommand

T = TypeVar("T")
R = TypeVar("R")


class SendRefused(Exception):
    """Kafka refused some records for good; the batch was rolled back."""

    def __init__(self, refused: Failed[Decision]) -> None:
        self.refused = refused
        super().__init__(f"{len(refused)} record(s) refused by Kafka")


@dataclass
class Applied:
    """What a batch did: executed (journaled now), duplicates (journaled before), refused."""

    executed: list[Decision] = field(default_factory=list)
    duplicates: list[Decision] = field(default_factory=list)
    refused: Failed[Decision] = field(default_factory=list)


Notify = Callable[[asyncpg.Connection, Sequence[RecoveryCommand]], Awaitable[Mapping[str, str]]]
"""Queues the customer messages of notification commands in the journal's transaction;
returns command id -> what became of it (``pending`` or ``suppressed:<reason>``)."""


async def apply(
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    decisions: Sequence[Decision],
    notify: Notify | None = None,
) -> Applied:
    """Journal the batch and append its outcomes in one transaction (see the module doc)."""
    if not decisions:
        return Applied()
    async with pool.acquire() as conn, conn.transaction():
        noticed: dict[Key, Entry] = {}
        found, refused = await bisect(decisions, lambda part: _insert(conn, part, notify, noticed))
        inserted = set().union(*found)
        executed = [
            replace(d, entry=noticed.get(d.entry.key, d.entry))
            for d in decisions
            if d.entry.key in inserted
        ]
        outputs = [(d, d.output) for d in executed if d.output is not None]
        failed = await send_all(producer, outputs)
        if failed:
            raise SendRefused(failed)  # rolls the rows back
    refused_ids = {id(d) for d, _ in refused}
    duplicates = [d for d in decisions if d.entry.key not in inserted and id(d) not in refused_ids]
    return Applied(executed, duplicates, refused)


async def _insert(
    conn: asyncpg.Connection,
    part: Sequence[Decision],
    notify: Notify | None,
    noticed: dict[Key, Entry],
) -> set[Key]:
    """Journal a part (and queue its customer messages) under a savepoint; `noticed` gets
    the entries whose outcome the queueing changed."""
    async with conn.transaction():  # a savepoint: a refused part leaves the others intact
        entries = [d.entry for d in part]
        if notify is not None:
            notices = [e.command for e in entries if customer_notice(e.command)]
            queued = await notify(conn, notices) if notices else {}
            entries = [_noticed(e, queued.get(e.command.command_id)) for e in entries]
        inserted = await journal.insert(conn, entries)
    noticed.update((e.key, e) for e in entries if e.key in inserted)
    return inserted


def _noticed(entry: Entry, status: str | None) -> Entry:
    """The journal entry of a notification command whose message was queued (or not)."""
    if status is None:
        return entry
    outcome, _, reason = status.partition(":")
    outcome = "emailed" if outcome == "pending" else outcome
    detail = {**entry.detail, "email": status} if reason else entry.detail
    return replace(entry, outcome=outcome, detail=detail)


async def bisect(
    items: Sequence[T], op: Callable[[Sequence[T]], Awaitable[R]]
) -> tuple[list[R], Failed[T]]:
    """Run `op` on all items; on a permanent database error split until the culprit is alone.

    Returns the results of the parts that succeeded and the items refused, with the error.
    """
    try:
        return [await op(items)], []
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if not permanent_db(exc):
            raise
        if len(items) == 1:
            return [], [(items[0], exc)]
    mid = len(items) // 2
    left, bad_left = await bisect(items[:mid], op)
    right, bad_right = await bisect(items[mid:], op)
    return left + right, bad_left + bad_right


async def anchors(
    pool: asyncpg.Pool, items: Sequence[tuple[T, RecoveryCommand, Any]]
) -> tuple[dict[Invoice, datetime], Failed[tuple[T, RecoveryCommand, Any]]]:
    """Earliest journaled due time of the invoices whose commands need it (one query)."""
    wanted = [item for item in items if needs_anchor(item[1])]
    if not wanted:
        return {}, []
    async with pool.acquire() as conn:
        found, refused = await bisect(
            wanted, lambda part: journal.first_due_ats(conn, [invoice(c) for _, c, _ in part])
        )
    return {k: v for part in found for k, v in part.items()}, refused


def invoice(command: RecoveryCommand) -> Invoice:
    """(tenant, invoice_ref) of a command."""
    return (command.tenant, command.invoice_ref)


async def send_all(producer: AIOKafkaProducer, items: Sequence[tuple[T, Output]]) -> Failed[T]:
    """Send every record, then wait for all acks at once.

    Records Kafka refuses for good are returned; a transient failure is raised (after
    every started send has settled, so none is left unobserved).
    """
    started: list[tuple[T, asyncio.Future[Any]]] = []
    refused: Failed[T] = []
    error: BaseException | None = None
    for token, out in items:
        try:
            started.append((token, await producer.send(out.topic, out.value, out.key)))
        except KafkaError as exc:
            if not permanent_kafka(exc):
                error = exc
                break
            refused.append((token, exc))
    results = await asyncio.gather(*(fut for _, fut in started), return_exceptions=True)
    for (token, _), result in zip(started, results, strict=True):
        if isinstance(result, BaseException):
            if not permanent_kafka(result):
                error = error or result
            else:
                refused.append((token, result))
    if error is not None:
        raise error
    return refused
