"""Rebuilding the read models from the log (issue 10 item 3) on real Kafka and Postgres.

Each test has a database of its own (a rebuild swaps every read-model table, which other
tests share on the run's database) and topics of its own. The history is two tenants'
payment events, saga transitions, commands, risk scores, alerts and policy changes, across
partitions; the live projector builds the tables incrementally first, and the rebuild must
end with the same rows, row for row.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from paywatch.api.query.app import create_app
from paywatch.db import TenantPool, create_pool, migrate_dsn, replay_jobs
from paywatch.kafka.codec import make_codec
from paywatch.projections import bulk, rebuild
from paywatch.projections.runner import PROJECTION, Projector
from paywatch.providers.base import event_id
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import (
    Alert,
    AlertStatus,
    AlertWindow,
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    Frozen,
    PaymentEvent,
    PolicyChanged,
    RecoveryCommand,
    RiskBand,
    RiskScore,
    RuleRef,
    SagaState,
    SagaTransition,
    Severity,
)
from paywatch.schemas.topics import RECOVERY_POLICIES
from paywatch.settings import Settings
from paywatch.tenants.api_keys import hash_api_key
from paywatch.tenants.policy_input import canonical_json
from tests.kafka_helpers import destination, eventually
from tests.procs import settings_env, stop

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RULE = RuleRef(id="visa.cat2.reattempt", edition="2024-04", source="Visa Core Rules")
VOLATILE = {"updated_at", "recorded_at"}
"""Set to now() when a row is written: the only columns a rebuild may change."""
S = SagaState


def _event(t: str, ref: str, n: int, type_: EventType, minutes: int) -> PaymentEvent:
    failed = type_ is EventType.PAYMENT_FAILED
    return PaymentEvent(
        event_id=event_id(t, "stripe", f"evt_{ref}_{n}"),
        type=type_,
        tenant=t,
        provider="stripe",
        source_type="invoice.payment_failed" if failed else "invoice.paid",
        occurred_at=T0 + timedelta(minutes=minutes),
        customer_ref=f"cus_{int(ref.split('_')[1]) % 7}",
        invoice_ref=ref,
        amount_minor=1000 + int(ref.split("_")[1]),
        currency="USD" if n % 3 else "EUR",
        attempt=n,
        decline=Decline(
            code="insufficient_funds" if n % 2 else "do_not_honor",
            category=DeclineCategory.SOFT if n % 2 else DeclineCategory.HARD,
        )
        if failed
        else None,
    )


def _move(t: str, ref: str, src: SagaState | None, dst: SagaState, minutes: int) -> SagaTransition:
    return SagaTransition(
        tenant=t, invoice_ref=ref, from_state=src, to_state=dst,
        cause_event_id=f"cause_{ref}_{minutes}", at=T0 + timedelta(minutes=minutes),
        rule=RULE, attempts_used=1, attempts_allowed=4,
        next_action=CommandType.RETRY_PAYMENT if dst is S.retrying else None,
        next_action_at=T0 + timedelta(days=1) if dst is S.retrying else None,
    )  # fmt: skip


def _retry(t: str, ref: str, minutes: int) -> RecoveryCommand:
    return RecoveryCommand(
        command_id=f"cmd_{ref}_{minutes}", type=CommandType.RETRY_PAYMENT, tenant=t,
        invoice_ref=ref, due_at=T0 + timedelta(days=1), attempt=2, reason="soft decline",
        rule=RULE, issued_at=T0 + timedelta(minutes=minutes),
    )  # fmt: skip


def history(t: str, invoices: int) -> list[Frozen]:
    """A tenant's months in small: failures and retries, recoveries, cancellations and
    exhaustions, duplicates and late arrivals, scores moving, alerts opening and resolving,
    the policy changed twice."""
    out: list[Frozen] = []
    for i in range(invoices):
        ref, m = f"in_{i}", i * 10
        out += [_event(t, ref, 1, EventType.PAYMENT_FAILED, m), _move(t, ref, None, S.failed, m)]
        out += [_move(t, ref, S.failed, S.retrying, m + 1), _retry(t, ref, m + 1)]
        out.append(_event(t, ref, 2, EventType.PAYMENT_FAILED, m + 2))
        if i % 4 == 0:  # recovered, the success delivered twice
            ok = _event(t, ref, 3, EventType.PAYMENT_SUCCEEDED, m + 3)
            out += [ok, ok, _move(t, ref, S.retrying, S.recovered, m + 3)]
        elif i % 4 == 1:
            out.append(_event(t, ref, 3, EventType.SUBSCRIPTION_CANCELED, m + 3))
            out.append(_move(t, ref, S.retrying, S.canceled, m + 3))
        elif i % 4 == 2:  # a late failure arriving after the last one
            out += [_move(t, ref, S.retrying, S.exhausted, m + 4)]
            out.append(_event(t, ref, 1, EventType.PAYMENT_FAILED, m))
            if i % 8 == 6:  # paid after exhaustion
                out.append(_event(t, ref, 4, EventType.PAYMENT_SUCCEEDED, m + 5))
                out.append(_move(t, ref, S.exhausted, S.recovered, m + 5))
        elif i % 8 == 3:  # the provider announced its own retry, which succeeded
            retry = _event(t, ref, 3, EventType.PAYMENT_FAILED, m + 3)
            out.append(retry.model_copy(update={"provider_retry_at": T0 + timedelta(days=1)}))
            paid = _event(t, ref, 4, EventType.PAYMENT_SUCCEEDED, m + 4)
            out.append(paid.model_copy(update={"payment_ref": f"pi_{ref}"}))
            out.append(_move(t, ref, S.retrying, S.recovered, m + 4))
        else:  # the customer updated the card, then paid
            out.append(_event(t, ref, 3, EventType.PAYMENT_METHOD_UPDATED, m + 3))
            out.append(_event(t, ref, 4, EventType.PAYMENT_SUCCEEDED, m + 4))
            out.append(_move(t, ref, S.retrying, S.recovered, m + 4))
    for c in range(7):
        for k in range(3):
            out.append(
                RiskScore(
                    tenant=t,
                    customer_ref=f"cus_{c}",
                    score=(c + k) / 10,
                    band=RiskBand.MEDIUM,
                    reasons=["open invoices"],
                    model_version="risk-v1",
                    as_of=T0 + timedelta(hours=k),
                )
            )
    window = AlertWindow(start=T0, end=T0 + timedelta(minutes=5))
    for status in (AlertStatus.OPEN, AlertStatus.RESOLVED):
        out.append(
            Alert(
                tenant=t,
                kind="decline_spike",
                severity=Severity.WARNING,
                window=window,
                observed=0.4,
                baseline=0.1,
                alert_id=f"{t}/spike",
                opened_at=T0,
                status=status,
                resolved_at=T0 + timedelta(minutes=9) if status is AlertStatus.RESOLVED else None,
            )
        )
    for days in (21, 30):
        policy = TenantPolicy().model_copy(update={"window_days": days})
        out.append(
            PolicyChanged(
                tenant=t,
                revision=policy.revision,
                policy_json=canonical_json(policy),
                changed_at=T0 + timedelta(days=days),
                changed_by="test",
            )
        )
    return out


async def publish(settings: Settings, bootstrap: str, records: list[Frozen]) -> None:
    """Produce the records keyed as the worker and the policy store key them."""
    codec = make_codec(settings)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for r in records:
            if isinstance(r, PolicyChanged):
                topic, key = settings.topic(RECOVERY_POLICIES), r.tenant
            else:
                topic, key = destination(settings, r)  # type: ignore[arg-type]
            await producer.send(topic, key=key.encode(), value=codec.encode(r, topic=topic))
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture
async def db(scratch_db: str) -> str:
    await migrate_dsn(scratch_db)
    return scratch_db


@pytest.fixture
def settings(test_settings: Settings, db: str) -> Settings:
    return test_settings.model_copy(update={"database_url": SecretStr(db)})


@pytest.fixture
async def owner(db: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db, max_size=4)
    yield pool
    await pool.close()


async def _ends(settings: Settings, bootstrap: str) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # private: topics() may be stale
        tps = [
            TopicPartition(settings.topic(t), p)
            for t in rebuild.plan(["all"]).sources
            for p in consumer.partitions_for_topic(settings.topic(t)) or ()
        ]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): at for tp, at in ends.items() if at}


class Live:
    """The live projector as a task in this test."""

    def __init__(self, settings: Settings, bootstrap: str, pool: asyncpg.Pool) -> None:
        self.settings, self.bootstrap, self.pool = settings, bootstrap, pool
        self.projector = Projector(settings, bootstrap, pool, make_codec(settings))
        self.task = asyncio.create_task(self.projector.run())

    async def caught_up(self) -> None:
        """Wait until its checkpoints are the topics' end offsets."""
        ends = await _ends(self.settings, self.bootstrap)

        async def done() -> bool:
            if self.task.done():
                self.task.result()
            rows = await self.pool.fetch(
                "SELECT topic, partition, next_offset FROM public.projection_checkpoints"
                " WHERE projection = $1",
                PROJECTION,
            )
            stored = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
            return bool(ends) and all(stored.get(k, 0) >= v for k, v in ends.items())

        await eventually(done, timeout=120, what="the live projector at the end offsets")

    async def stop(self) -> None:
        self.projector.stop()
        await asyncio.wait_for(self.task, 60)


async def projected(
    settings: Settings, bootstrap: str, owner: asyncpg.Pool, records: list[Frozen]
) -> None:
    """Publish the records and let the live projector build the tables from them."""
    await publish(settings, bootstrap, records)
    live = Live(settings, bootstrap, owner)
    await live.caught_up()
    await live.stop()


def _key(row: dict[str, Any]) -> str:
    return repr(sorted((k, repr(v)) for k, v in row.items()))


async def snapshot(pool: Any, schema: str = "public") -> dict[str, list[dict[str, Any]]]:
    """Every read-model table's rows without the write-time columns, in a fixed order."""
    tables = {}
    for table in rebuild.plan(["all"]).tables:
        rows = await pool.fetch(f'SELECT * FROM "{schema}"."{table}"')
        clean = [{k: v for k, v in dict(r).items() if k not in VOLATILE} for r in rows]
        tables[table] = sorted(clean, key=_key)
    return tables


async def _open(owner: asyncpg.Pool, names: list[str]) -> replay_jobs.Job:
    async with owner.acquire() as conn:
        return await rebuild.open_job(conn, names, None, "test")


async def test_a_rebuild_equals_the_incremental_build_and_the_projector_carries_on(
    settings: Settings, kafka_bootstrap: str, owner: asyncpg.Pool, db: str, unique: str
) -> None:
    a, b = f"{unique}a", f"{unique}b"
    await publish(settings, kafka_bootstrap, history(a, 40) + history(b, 25))
    live = Live(settings, kafka_bootstrap, owner)
    await live.caught_up()
    built = await snapshot(owner)
    assert len(built["invoices"]) == 65 and len(built["customers"]) == 14  # a real history
    paths = {f["path"] for f in built["recovery_facts"]}
    assert {"provider_retry", "payment_method_updated", "late_payment"} <= paths
    assert all(built[t] for t in ("event_log", "failures", "recovery_log", "tenant_policies"))
    indexes = await owner.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    )

    progress: list[rebuild.Progress] = []
    job = await _open(owner, ["all"])
    parallel = settings.model_copy(update={"replay_workers": 3})  # 3 bulk processes
    await rebuild.run_job(
        rebuild.Rebuild(parallel, kafka_bootstrap, db, make_codec(settings), job, progress.append)
    )  # the live projector keeps running: the swap takes the gate from it

    assert await snapshot(owner) == built  # row for row
    assert await snapshot(owner, job.archive) == built  # the old generation, archived
    assert progress[-1].phase == "swapped" and progress[-1].done >= progress[-1].total > 0
    done = await _job(owner, job.job_id)
    assert done.status == "done" and done.events_done == progress[-1].done
    after = await owner.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    )
    assert sorted(map(tuple, after)) == sorted(map(tuple, indexes))  # same names, same shapes
    assert not await owner.fetch(  # autovacuum was off in the generation only, not after
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND array_to_string(reloptions, ',') LIKE '%autovacuum_enabled%'"
    )
    assert not await owner.fetchval(
        "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", job.schema
    )

    # The API's role reads the new tables, its tenant's rows only (RLS, policies, grants).
    api = await create_pool(settings.role_dsn("api", db), max_size=1)
    try:
        seen = await TenantPool(api, a).fetch("SELECT DISTINCT tenant FROM invoices")
        assert [r["tenant"] for r in seen] == [a]
        assert await TenantPool(api, None).fetch("SELECT * FROM customers") == []
    finally:
        await api.close()

    # The live projector writes what comes next into the new generation.
    await publish(settings, kafka_bootstrap, [_event(a, "in_900", 1, EventType.PAYMENT_FAILED, 0)])
    await live.caught_up()
    await live.stop()
    count = "SELECT count(*) FROM public.invoices WHERE tenant = $1 AND invoice_ref = 'in_900'"
    assert await owner.fetchval(count, a) == 1


async def test_a_group_the_bulk_load_cannot_write_goes_incrementally(
    settings: Settings, kafka_bootstrap: str, owner: asyncpg.Pool, db: str, unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    await projected(settings, kafka_bootstrap, owner, history(f"{unique}a", 60))
    built = await snapshot(owner)
    loads: list[int] = []
    load = bulk.write

    async def refused_once(conn: Any, loaded: bulk.Load, *args: Any) -> None:
        loads.append(len(loaded.tables["event_log"][1]))
        if len(loads) == 1:  # a row Postgres refuses: the whole group rolls back
            raise asyncpg.UniqueViolationError("duplicate key value (test)")
        await load(conn, loaded, *args)

    monkeypatch.setattr(bulk, "write", refused_once)
    job = await _open(owner, ["all"])
    one = settings.model_copy(update={"replay_workers": 1})  # in this process: patched
    await rebuild.run_job(rebuild.Rebuild(one, kafka_bootstrap, db, make_codec(settings), job))
    assert len(loads) >= 2 and loads[0] > 0  # the other groups were loaded whole
    assert await snapshot(owner) == built  # bulk groups and the incremental one together


async def test_only_the_newest_archives_are_kept(
    settings: Settings, kafka_bootstrap: str, owner: asyncpg.Pool, db: str, unique: str
) -> None:
    await projected(settings, kafka_bootstrap, owner, history(f"{unique}a", 8))
    one = settings.model_copy(update={"replay_workers": 1})
    archives = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pw_archive_%'"
    jobs = []
    for keep in (1, 1, 2):
        job = await _open(owner, ["all"])
        kept = one.model_copy(update={"replay_keep_archives": keep})
        await rebuild.run_job(rebuild.Rebuild(kept, kafka_bootstrap, db, make_codec(one), job))
        jobs.append(job)
    assert sorted(r[0] for r in await owner.fetch(archives)) == sorted(
        [jobs[1].archive, jobs[2].archive]  # the first went when the second kept one
    )


async def _job(owner: asyncpg.Pool, job_id: str) -> replay_jobs.Job:
    async with owner.acquire() as conn:
        job = await replay_jobs.get(conn, job_id)
    assert job is not None
    return job


def _cli(settings: Settings, log: Path, *args: str, workers: int = 2) -> subprocess.Popen[bytes]:
    env = settings_env(settings) | {
        "PAYWATCH_PROJECTOR_BATCH": "1",  # slow: one record per batch
        "PAYWATCH_REPLAY_BULK_RECORDS": "0",  # ... incrementally (no group loaded whole)
        "PAYWATCH_REPLAY_WORKERS": str(workers),  # 1: the bulk phase in the job's process
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "paywatch", "replay", *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip


async def _progressing(owner: asyncpg.Pool, floor: int) -> replay_jobs.Job:
    async def probe() -> replay_jobs.Job | None:
        async with owner.acquire() as conn:
            job = await replay_jobs.active(conn)
        return job if job is not None and job.events_done > floor else None

    return await eventually(probe, timeout=120, what=f"a running job past {floor} events")


async def test_interrupted_and_run_again_it_resumes(
    settings: Settings, kafka_bootstrap: str, owner: asyncpg.Pool, tmp_path: Path, unique: str
) -> None:
    await projected(settings, kafka_bootstrap, owner, history(f"{unique}a", 120))
    built = await snapshot(owner)
    log = tmp_path / "replay.log"

    first = _cli(settings, log, "--projection", "all")
    job = await _progressing(owner, 0)
    first.send_signal(signal.SIGINT)  # Ctrl-C: the batch in flight, then exit 130
    assert await asyncio.to_thread(first.wait, 60) == 130, log.read_text()
    interrupted = await _job(owner, job.job_id)
    assert (
        interrupted.status == "running" and 0 < interrupted.events_done < interrupted.events_total
    )
    assert await snapshot(owner) == built  # nothing swapped

    second = _cli(settings, log, "--projection", "all")  # resumes the same job
    resumed = await _progressing(owner, interrupted.events_done)
    assert resumed.job_id == job.job_id
    second.kill()  # no goodbye at all
    await asyncio.to_thread(second.wait, 60)

    third = _cli(settings, log, "--projection", "all")
    assert await asyncio.to_thread(third.wait, 300) == 0, log.read_text()
    finished = await _job(owner, job.job_id)
    assert finished.status == "done" and finished.events_done >= (finished.events_total or 0)
    assert await snapshot(owner) == built
    text = log.read_text()
    assert "events/s" in text and "ETA" in text and f"replay {job.job_id}: swapped in" in text


async def _api_key(owner: asyncpg.Pool, tenant: str, role: str) -> dict[str, str]:
    key = f"pw_{role}_{secrets.token_urlsafe(24)}"
    await owner.execute("INSERT INTO tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING", tenant)
    await owner.execute(
        "INSERT INTO api_keys (tenant, role, key_hash, prefix) VALUES ($1, $2, $3, $4)",
        tenant, role, hash_api_key(key), key[:16],
    )  # fmt: skip
    return {"Authorization": f"Bearer {key}"}


async def test_the_api_starts_a_job_and_serves_the_old_generation_until_the_swap(
    settings: Settings, kafka_bootstrap: str, owner: asyncpg.Pool, db: str, tmp_path: Path,
    unique: str,
) -> None:  # fmt: skip
    a, b = f"{unique}a", f"{unique}b"
    await projected(settings, kafka_bootstrap, owner, history(a, 120))
    # Mark the old generation: the rebuild must not carry this over, and must not hide it
    # before the swap either.
    await owner.execute("UPDATE invoices SET amount_minor = -1 WHERE invoice_ref = 'in_5'")
    operator, analyst = await _api_key(owner, a, "operator"), await _api_key(owner, a, "analyst")
    stranger = await _api_key(owner, b, "operator")
    children: list[subprocess.Popen[bytes]] = []

    async def launch(_: Settings, job_id: str) -> None:  # the app's own spawns `os.environ`'s
        children.append(_cli(settings, tmp_path / "api-replay.log", "--job", job_id, workers=1))

    app = create_app(settings, db)
    app.state.replay_launcher = launch
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
    ):
        try:
            r = await api.post("/v1/ops/replay", json={"projection": "all"}, headers=analyst)
            assert r.status_code == 403 and r.json()["error"] == "forbidden"
            r = await api.post("/v1/ops/replay", json={"projection": "nope"}, headers=operator)
            assert r.status_code == 400 and "body.projection" in r.json()["detail"]
            r = await api.post("/v1/ops/replay", json={"projection": "invoices"}, headers=operator)
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            assert r.json()["status"] == "pending" and r.json()["models"] == ["invoices"]
            again = await api.post("/v1/ops/replay", json={"projection": "all"}, headers=operator)
            assert again.status_code == 409 and again.json()["error"] == "replay_running"
            r = await api.get(f"/v1/ops/replay/{job_id}", headers=stranger)
            assert r.status_code == 404  # another tenant's job: no existence leak

            async def running() -> dict[str, Any] | None:
                got = (await api.get(f"/v1/ops/replay/{job_id}", headers=operator)).json()
                return got if got["status"] == "running" and got["events_done"] > 0 else None

            during = await eventually(running, timeout=120, what="the job running")
            assert during["events_total"] > during["events_done"] and during["eta_s"] is not None
            old = await api.get("/v1/invoices/in_5", headers=operator)
            assert old.json()["amount_minor"] == -1  # the old generation, still served

            async def finished() -> dict[str, Any] | None:
                got = (await api.get(f"/v1/ops/replay/{job_id}", headers=operator)).json()
                assert got["status"] != "failed", got
                return got if got["status"] == "done" else None

            await eventually(finished, timeout=300, what="the job done")
            new = await api.get("/v1/invoices/in_5", headers=operator)
            assert new.json()["amount_minor"] == 1005  # rebuilt from the log
        finally:
            for child in children:
                stop(child)
