"""The fetch agent's scheduling: a hung tenant API delays only that tenant (item 2)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from paywatch.schemas.models import RawWebhook
from paywatch.streams.batches import Record
from paywatch.streams.fetch_agent import FetchAgent, FetchJob
from paywatch.streams.normalize import Normalized
from tests.kafka_helpers import eventually

DEADLINE_S = 5.0


def job(tenant: str, offset: int) -> FetchJob:
    message = SimpleNamespace(topic="webhooks.raw", partition=0, offset=offset)
    raw = RawWebhook(
        ingest_id=f"i{offset}",
        tenant=tenant,
        provider="xero",
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        body=b"{}",
    )
    result = Normalized(dedupe_key=f"{tenant}/xero/{offset}", raw=raw)
    return FetchJob(Record(SimpleNamespace(message=message)), Any, result, True)  # type: ignore[arg-type]


class Api:
    """A fake run(): tenant ``hung`` never answers, every other tenant answers at once."""

    def __init__(self) -> None:
        self.done: list[tuple[str, int]] = []
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.release = asyncio.Event()

    async def __call__(self, job: FetchJob) -> None:
        tenant = job.tenant
        self.running[tenant] = self.running.get(tenant, 0) + 1
        self.most[tenant] = max(self.most.get(tenant, 0), self.running[tenant])
        try:
            if tenant == "hung" and job.refused is None:  # a refused job fetches nothing
                await self.release.wait()
            else:
                await asyncio.sleep(0)
            self.done.append((tenant, job.record.message.offset))
        finally:
            self.running[tenant] -= 1


async def until(condition: Callable[[], bool]) -> None:
    async def probe() -> bool:
        return condition()

    await eventually(probe, timeout=DEADLINE_S, every=0.001)


async def test_a_hung_tenant_delays_only_its_own_documents() -> None:
    api = Api()
    agent = FetchAgent(api, per_tenant=2, max_waiting=100)
    for offset in range(10):  # ten webhooks of the hung tenant first, in the same partition
        await agent.submit(job("hung", offset))
    for offset in range(10, 15):
        await agent.submit(job("ok", offset))
    await until(lambda: len(api.done) == 5)
    assert api.done == [("ok", o) for o in range(10, 15)]
    assert agent.in_flight("hung") == 2 and api.most["hung"] == 2  # bounded per tenant
    assert agent.claimed.keys() == {f"hung/xero/{o}" for o in range(10)}
    api.release.set()
    await until(lambda: len(api.done) == 15)
    assert agent.waiting() == 0 and agent.claimed == {}


async def test_submit_waits_when_the_agent_holds_its_maximum() -> None:
    api = Api()
    agent = FetchAgent(api, per_tenant=1, max_waiting=3)
    for offset in range(3):
        await agent.submit(job("hung", offset))
    blocked = asyncio.create_task(agent.submit(job("ok", 3)))
    for _ in range(100):  # loop turns for the blocked submit to (wrongly) get through
        await asyncio.sleep(0)
    assert not blocked.done() and agent.waiting() == 3
    api.release.set()
    await until(lambda: blocked.done() and ("ok", 3) in api.done)


async def test_a_tenant_past_its_backlog_is_refused_not_waited_for() -> None:
    """A dead API fills only its tenant's share: past ``tenant_max`` its new webhooks are
    refused at once (dead-lettered by the worker), and other tenants' webhooks still go."""
    api = Api()
    agent = FetchAgent(api, per_tenant=1, max_waiting=100, tenant_max=3)
    hung = [job("hung", offset) for offset in range(5)]
    for j in hung:
        await agent.submit(j)  # never blocks: the fourth and fifth are refused
    assert [j.refused is not None for j in hung] == [False] * 3 + [True] * 2
    assert "3 thin webhooks waiting" in (hung[3].refused or "")
    await agent.submit(job("ok", 9))
    await until(lambda: ("ok", 9) in api.done and ("hung", 4) in api.done)
    assert ("hung", 3) in api.done  # run() got the refused ones: the worker dead-letters them
    assert agent.in_flight("hung") == 1  # refused jobs took no slot of the hung tenant
    api.release.set()
    await until(lambda: agent.waiting() == 0)
