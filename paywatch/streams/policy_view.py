"""PolicyView: every tenant's recovery policy in force, read from ``recovery.policies``.

The worker keeps one per process. An aiokafka consumer without a group assigns every
partition of the topic and reads it from the beginning (the topic is small: a few changes
per tenant, kept forever), folding the last PolicyChanged of each tenant into a dict
(``PolicyBook``, pure). ``wait_ready`` returns once the view has read up to the end offsets
seen at start, so a saga never decides with the defaults for a tenant that stored a policy;
the view keeps following new changes after that, which apply to the decisions made after
them.

A record that does not decode, or whose policy does not validate, is logged with its
topic[partition]@offset and skipped: the tenant keeps the policy it had, and a bad record
never stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from confluent_kafka import KafkaException
from pydantic import ValidationError

from paywatch.errors import CodecError, InfraError
from paywatch.kafka.admin import admin_client
from paywatch.kafka.clients import log_reader
from paywatch.kafka.codec import make_codec
from paywatch.kafka.security import PLAINTEXT, KafkaSecurity, kafka_security
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import PolicyChanged
from paywatch.schemas.topics import RECOVERY_POLICIES
from paywatch.settings import Settings

log = logging.getLogger(__name__)

DEFAULTS = TenantPolicy()
_RETRY_S = 1.0
_METADATA_TIMEOUT_S = 30.0


class PolicyBook:
    """Tenant -> the policy of its last valid PolicyChanged (defaults for the others)."""

    def __init__(self, codec: Codec, topic: str | None = None) -> None:
        self._codec = codec
        self._topic = topic
        self._policies: dict[str, TenantPolicy] = {}

    def get(self, tenant: str) -> TenantPolicy:
        """The tenant's policy in force."""
        return self._policies.get(tenant, DEFAULTS)

    def __len__(self) -> int:
        return len(self._policies)

    def apply(self, value: bytes | None, where: str) -> str | None:
        """Fold one record (`where`: topic[partition]@offset); its tenant, or None if skipped."""
        try:
            change = self._codec.decode(value or b"", PolicyChanged, topic=self._topic)
            policy = TenantPolicy.model_validate_json(change.policy_json)
        except CodecError as exc:
            log.warning("skipped policy change %s: %s", where, exc)
            return None
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            path = ".".join(str(p) for p in first["loc"]) or "(policy)"
            log.warning(
                "skipped policy change %s: invalid policy for tenant %s (%d errors; %s: %s)",
                where, change.tenant, exc.error_count(), path, first["msg"],
            )  # fmt: skip
            return None
        self._policies[change.tenant] = policy
        return change.tenant


def caught_up(positions: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]) -> bool:
    """True when every partition's position has reached its end offset."""
    return all(positions.get(tp, 0) >= end for tp, end in ends.items())


def _partition_ids(bootstrap: str, topic: str, security: KafkaSecurity) -> list[int]:
    try:
        admin = admin_client(bootstrap, security=security)
        metadata = admin.list_topics(topic, timeout=_METADATA_TIMEOUT_S)
    except KafkaException as exc:
        raise InfraError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    found = metadata.topics.get(topic)
    return [] if found is None or found.error is not None else sorted(found.partitions)


def where(rec: Any) -> str:
    """A record's coordinates for the log: topic[partition]@offset."""
    return f"{rec.topic}[{rec.partition}]@{rec.offset}"


class TopicView:
    """A small topic followed live by one worker process, folded into memory.

    An aiokafka consumer without a group reads every partition from the beginning and hands
    each record to ``apply(value, where)``; ``wait_ready`` returns once the view has read up
    to the end offsets seen at start, and it keeps following after that.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        apply: Callable[[bytes | None, str], object],
        name: str,
        *,
        security: KafkaSecurity,
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._topic = topic
        self._apply = apply
        self._name = name
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._ends: dict[TopicPartition, int] = {}
        self._ready = asyncio.Event()

    @property
    def ready(self) -> bool:
        """True once the view has read everything the topic held when it started."""
        return self._ready.is_set()

    async def start(self) -> None:
        """Assign every partition, note the end offsets, start reading from the beginning."""
        consumer = log_reader(
            self._bootstrap, client_id=f"paywatch-{self._name}", security=self._security
        )
        await consumer.start()
        try:
            partitions = await self._partitions()
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            self._ends = await consumer.end_offsets(partitions)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer), name=self._name)
        self._task.add_done_callback(self._ended)

    async def _partitions(self) -> list[TopicPartition]:
        # aiokafka only learns the partitions of topics it subscribed to: ask the admin API.
        found = await asyncio.to_thread(
            _partition_ids, self._bootstrap, self._topic, self._security
        )
        if not found:
            raise InfraError(f"topic {self._topic} does not exist: run `paywatch init`")
        return [TopicPartition(self._topic, p) for p in found]

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        await self._check_ready(consumer)
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except KafkaError as exc:  # keep following: the broker may come back
                log.warning("%s: %s; retrying in %.0f s", self._name, exc, _RETRY_S)
                await asyncio.sleep(_RETRY_S)
                continue
            for records in batches.values():
                for rec in records:
                    self._fold(rec)
            if not self._ready.is_set():
                await self._check_ready(consumer)

    def _fold(self, rec: Any) -> None:
        """Fold one record (a view that needs the key too overrides this)."""
        self._apply(rec.value, where(rec))

    async def _check_ready(self, consumer: AIOKafkaConsumer) -> None:
        positions = {tp: await consumer.position(tp) for tp in self._ends}
        if caught_up(positions, self._ends):
            self._ready.set()
            log.info("%s ready: %s", self._name, self.summary())

    def summary(self) -> str:
        """What the view knows, for the log line when it is ready."""
        return "caught up"

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped following %s", self._name, self._topic,
                      exc_info=task.exception())  # fmt: skip

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline for callers)
        """Return once caught up with the end offsets seen at start, else TimeoutError."""
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__}.start() was not called")
        waiter = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({waiter, self._task}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
        if self._ready.is_set():
            return
        if self._task.done():
            self._task.result()  # raises why it stopped
        raise TimeoutError(f"{self._name} did not catch up with {self._topic} in {timeout:g} s")

    async def stop(self) -> None:
        """Stop following and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


class PolicyView(TopicView):
    """The policies of every tenant, followed live from ``recovery.policies``."""

    def __init__(
        self, bootstrap: str, topic: str, codec: Codec, *, security: KafkaSecurity = PLAINTEXT
    ) -> None:
        self._book = PolicyBook(codec, topic)
        super().__init__(bootstrap, topic, self._book.apply, "policy view", security=security)

    @classmethod
    def from_settings(cls, settings: Settings, bootstrap: str) -> PolicyView:
        """A view of the settings' ``recovery.policies`` topic with their codec."""
        topic, codec = settings.topic(RECOVERY_POLICIES), make_codec(settings)
        return cls(bootstrap, topic, codec, security=kafka_security(settings))

    def get(self, tenant: str) -> TenantPolicy:
        """The tenant's policy in force (the defaults until it stores one; see wait_ready)."""
        return self._book.get(tenant)

    def summary(self) -> str:
        """How many tenants stored a policy."""
        return f"{len(self._book)} tenant(s) with a stored policy"
