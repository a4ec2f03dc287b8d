"""The fetch agent: thin webhooks' provider calls, off the normalize hot path (item 2).

The normalize agent hands every thin webhook (Xero, QuickBooks) to this agent and goes on
with its batch: a thin webhook's fetch takes one provider API round trip at best and
``settings.fetch_deadline_s`` at worst, and it must delay nobody but its own tenant.

* **Per-tenant bounded concurrency.** Each tenant has a queue and at most ``per_tenant``
  fetches in flight; a slow or dead Xero/QuickBooks API fills only its tenant's slots, and
  the other tenants' documents keep flowing.
* **Bounded per tenant.** At most ``tenant_max`` webhooks of one tenant wait or run; past
  that (its provider API has been slow or down for a while) a new thin webhook of that
  tenant is dead-lettered at once with the reason and its raw webhook (``FetchBacklogFull``,
  replayable), so one dead API can never fill the agent and stall the other tenants.
* **Bounded memory.** At most ``max_waiting`` webhooks wait or run in all; past that,
  ``submit`` waits (the normalize agent, hence the consumer, slows down) rather than
  holding an unbounded backlog.
* **Commits.** A handed-off record stays unfinished in the ``OffsetLedger`` until its
  documents (or its dead letter) are acked, so its partition's commit waits for it, while
  later records of the partition are processed. A crash replays it: the fetch ids are
  deterministic and the normalized events idempotent.

What a fetch does (``fetch.Fetcher``) and how a failure is dead-lettered (stage ``fetch``,
with the raw webhook, so an operator can replay it) are unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from paywatch.errors import VerificationError
from paywatch.providers.thin import ThinProvider
from paywatch.schemas.models import RawRef
from paywatch.streams.batches import Record, Stage, encode
from paywatch.streams.fetch import Fetcher, fetched_key
from paywatch.streams.normalize import Normalized

log = logging.getLogger(__name__)

PER_TENANT = 4
"""Fetches in flight for one tenant."""
TENANT_MAX = 1_000
"""Thin webhooks of one tenant waiting or being fetched (then its new ones are refused)."""
MAX_WAITING = 10_000
"""Thin webhooks waiting or being fetched, all tenants (then the normalize agent waits)."""


@dataclass(eq=False)
class FetchJob:
    """One thin webhook to fetch: its raw record and what normalization read from it."""

    record: Record
    provider: ThinProvider
    result: Normalized
    mark_seen: bool
    """Write the dedupe table once the documents are acked (first delivery)."""
    refused: str | None = None
    """Why the job is dead-lettered without a fetch (its tenant's backlog is full)."""

    @property
    def tenant(self) -> str:
        """The tenant whose API is called."""
        return self.result.raw.tenant if self.result.raw is not None else ""


@dataclass
class FetchBacklogFull(Exception):
    """A tenant's thin webhooks waiting for its provider API reached ``tenant_max``."""


@dataclass
class FetchAgent:
    """Runs ``run(job)`` with at most ``per_tenant`` jobs per tenant at a time."""

    run: Callable[[FetchJob], Awaitable[None]]
    per_tenant: int = PER_TENANT
    max_waiting: int = MAX_WAITING
    tenant_max: int = TENANT_MAX
    claimed: dict[str, int] = field(default_factory=dict)
    """Dedupe key -> raw offset of a fetch not finished yet (normalize's dedupe reads it)."""

    def __post_init__(self) -> None:
        self._room = asyncio.Semaphore(self.max_waiting)
        self._queues: dict[str, deque[FetchJob]] = {}
        self._running: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs = 0

    async def submit(self, job: FetchJob) -> None:
        """Queue one job behind its tenant's (waits while ``max_waiting`` are queued)."""
        await self._room.acquire()
        self._jobs += 1
        self.claimed[job.result.dedupe_key] = job.record.message.offset
        tenant = job.tenant
        held = len(self._queues.get(tenant, ())) + self._running.get(tenant, 0)
        if held >= self.tenant_max:
            job.refused = (
                f"tenant {tenant!r} has {held} thin webhooks waiting for its provider API"
                " (slow or down): this one is dead-lettered with its raw webhook; replay it"
                " once the API answers"
            )
            self._start(job, counted=False)
            return
        self._queues.setdefault(tenant, deque()).append(job)
        self._pump(tenant)

    def in_flight(self, tenant: str) -> int:
        """Jobs of ``tenant`` running now."""
        return self._running.get(tenant, 0)

    def waiting(self) -> int:
        """Jobs queued or running, all tenants."""
        return self._jobs

    def _pump(self, tenant: str) -> None:
        queue = self._queues.get(tenant)
        while queue and self._running.get(tenant, 0) < self.per_tenant:
            self._start(queue.popleft(), counted=True)
        if queue is not None and not queue:
            del self._queues[tenant]

    def _start(self, job: FetchJob, *, counted: bool) -> None:
        """Run ``job`` now; ``counted``: it takes one of its tenant's ``per_tenant`` slots."""
        if counted:
            self._running[job.tenant] = self._running.get(job.tenant, 0) + 1
        task = asyncio.create_task(self._run(job, counted), name=f"fetch:{job.tenant}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: FetchJob, counted: bool) -> None:
        try:
            await self.run(job)
        except Exception:  # a bug: the record stays unfinished, so it replays on restart
            msg = job.record.message
            log.exception("fetch of %s[%s]@%s failed", msg.topic, msg.partition, msg.offset)
        finally:
            tenant = job.tenant
            if counted:
                self._running[tenant] -= 1
                if not self._running[tenant]:
                    del self._running[tenant]
            if self.claimed.get(job.result.dedupe_key) == job.record.message.offset:
                del self.claimed[job.result.dedupe_key]
            self._jobs -= 1
            self._room.release()
            self._pump(tenant)


@dataclass
class FetchStage:
    """``FetchAgent.run`` of the worker: fetch, log the documents, or dead-letter."""

    stage: Stage
    fetcher: Fetcher | None
    fetched: Any
    """The webhooks.fetched Faust topic."""
    seen: Any
    """The normalize agent's dedupe table."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    async def __call__(self, job: FetchJob) -> None:
        """Fetch one thin webhook's documents and deliver them like a one-record batch."""
        record, msg = job.record, job.record.message
        record.stage, record.handed_off = "fetch", False
        if job.refused is not None:  # no fetch, no dedupe entry: a replay must get through
            record.error = FetchBacklogFull(job.refused)
            await self.stage.deliver([record])
            return
        try:
            if self.fetcher is None:
                raise VerificationError("the worker has no database: it cannot read OAuth secrets")
            source = RawRef(
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                provider_event_id=job.result.provider_event_id,
            )
            docs = await self.fetcher.fetch_all(
                job.provider, job.tenant, job.result.doc, source, self.now
            )
            record.outputs = [
                encode(self.stage.codec, self.fetched, fetched_key(d), d) for d in docs
            ]
        except Exception as exc:  # every fetch failure of one record is that record's letter
            record.error = exc
        if job.mark_seen:
            key, offset = job.result.dedupe_key, msg.offset
            record.after = lambda: self.seen.__setitem__(key, offset)
        await self.stage.deliver([record])
