"""One-shot database calls of the command line that are operator actions: each is recorded
on ``ops.audit`` in the same step (paywatch/tenants/ops_audit.py).

The change and its record commit together: the change runs in a transaction, the record is
appended before the commit, and Kafka down rolls the change back with a one-line error
(exit 1) that says nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from paywatch.errors import InfraError, Retryable
from paywatch.kafka.admin import ensure_topics
from paywatch.kafka.security import kafka_security
from paywatch.ops.infra import resolve_endpoints
from paywatch.schemas.topics import OPS_AUDIT, topic_specs
from paywatch.settings import Settings
from paywatch.tenants.api_keys import cli_actor
from paywatch.tenants.ops_audit import OpsEntry, open_ops_log, record_ops

T = TypeVar("T")
_CHATTY = ("aiokafka", "paywatch.kafka.appender", "paywatch.kafka.admin")
"""Loggers that would print each failed connect on stderr: the one-line error says it."""


@contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CHATTY]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def ensure_ops_topic(settings: Settings, bootstrap: str) -> None:
    """Create ``ops.audit`` when missing: a stack upgraded from a release without it must
    not refuse every operator action until its processes restart (they create topics)."""
    name = settings.topic(OPS_AUDIT)
    specs = [spec for spec in topic_specs(settings) if spec.name == name]
    try:
        ensure_topics(
            bootstrap, specs, timeout=settings.ingest_ack_timeout_s,
            security=kafka_security(settings),
        )  # fmt: skip
    except InfraError as exc:
        raise InfraError(f"{exc}: nothing was changed") from exc


def audited_call(
    settings: Settings,
    fn: Callable[[Any], Coroutine[Any, Any, T]],
    entry: Callable[[T], OpsEntry | None],
) -> T:
    """Run ``fn(conn)`` and record ``entry(result)`` as the CLI's user, all or nothing.

    ``entry`` returning None records nothing (an action that turned out to change nothing).
    """
    from paywatch.db import create_pool, migrate

    ends = resolve_endpoints(settings)

    async def go() -> T:
        pool = await create_pool(ends.dsn, min_size=1, max_size=1)
        try:
            async with open_ops_log(settings, ends.bootstrap) as log, pool.acquire() as conn:
                await migrate(conn)
                async with conn.transaction():
                    result = await fn(conn)
                    made = entry(result)
                    if made is not None:
                        await record_ops(log, made, actor=cli_actor())
                    return result
        finally:
            await pool.close()

    try:
        with _quiet():
            ensure_ops_topic(settings, ends.bootstrap)
            return asyncio.run(go())
    except Retryable as exc:
        raise InfraError(
            f"Kafka at {ends.bootstrap} did not take the ops.audit record ({exc}): nothing was "
            "changed; is the stack running (`paywatch status`)?"
        ) from exc
