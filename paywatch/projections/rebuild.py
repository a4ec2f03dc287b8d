"""Rebuild read models from the log: `paywatch replay` and POST /v1/ops/replay run this.

A job (:mod:`paywatch.db.replay_jobs`) rebuilds the models it names plus the models they
read (`after`: `invoices` reads `event_log` and `recovery_workflows`, so those come along,
else it would fold against the live tables). In three phases:

1. **bulk**: the models' source topics from offset 0 up to the end offsets taken when the
   job first ran, into a new generation (:mod:`paywatch.projections.generation`) through
   the projector's own sink and writer, checkpoints in the generation's schema. Decoding
   and folding are Python CPU, so `PAYWATCH_REPLAY_WORKERS` processes share it, each the
   partitions whose number is its index modulo their count (one invoice's events,
   transitions and commands share a key, so a partition number where the topics have as
   many partitions: each worker then folds whole invoices). Workers write as two live
   projectors do: the invoice locks serialise writers of one invoice, and the rollups'
   key order keeps them from deadlocking. Progress (events, rate, ETA, read from the
   generation's checkpoints) goes to `report` and the job row. Interrupted (Ctrl-C, kill)
   and run again, it resumes from those checkpoints; a record that cannot be decoded or
   written is skipped and counted (the live projector already dead-lettered it: not
   twice).
2. **catch-up**: the live projector went on meanwhile; the generation follows it up to its
   checkpoints (`L`), without blocking it, until the gap is small.
3. **swap**, one transaction: the sink's `GATE` taken exclusively (the projector's batch in
   flight commits first, the next waits), the last records up to `L` written, the tables
   swapped. The new tables are then at `L` or beyond (the bulk phase may pass a lagging
   projector): a full rebuild moves the live checkpoints up to the generation's, so the
   projector carries on from there; a partial one leaves them, and the projector writes
   the records between again, a no-op on the rebuilt models (their writes are idempotent,
   ARCHITECTURE §1) and the first time for the others.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from paywatch.db import create_pool, replay_jobs
from paywatch.db.replay_jobs import Job
from paywatch.errors import CodecError
from paywatch.kafka.clients import log_reader
from paywatch.kafka.security import kafka_security
from paywatch.projections import bulk, generation, metrics_daily
from paywatch.projections.base import ReadModel
from paywatch.projections.faults import record_fault
from paywatch.projections.merge import quoted
from paywatch.projections.registry import READ_MODELS
from paywatch.projections.runner import PROJECTION
from paywatch.projections.sink import GATE, PostgresSink
from paywatch.projections.writer import BatchWriter, Entry, durably
from paywatch.schemas.codec import Codec
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import Frozen
from paywatch.schemas.read_models import ALL
from paywatch.settings import Settings

log = logging.getLogger(__name__)
TABLES: Mapping[str, tuple[str, ...]] = {
    "tenant_policies": ("tenant_policies", "tenant_policy_changes"),
    "metrics_daily": metrics_daily.TABLES,
}
"""A model's tables when they are not just its name."""
REPORT_EVERY_S = 1.0
INTERRUPTED = 130
"""A bulk worker's exit code when it was stopped on request (as `paywatch replay`'s)."""
CATCH_UP_ROUNDS = 5
SWAP_ATTEMPTS = 5
Offsets = dict[TopicPartition, int]


class UnknownModel(ValueError):
    """A name that is not a registered read model."""


class MissingTopic(Exception):
    """A source topic is not in the cluster."""


class Interrupted(Exception):
    """Stopped on request; run the job again to resume."""


@dataclass(frozen=True)
class Plan:
    """What a job rebuilds: models (registry order), their tables and source topics."""

    models: tuple[ReadModel[Any], ...]
    complete: bool
    """Every registered model: the live checkpoints may move to the generation's."""

    @property
    def tables(self) -> tuple[str, ...]:
        """Every table of the models, in registry order."""
        return tuple(t for m in self.models for t in TABLES.get(m.name, (m.name,)))

    @property
    def sources(self) -> dict[str, type[Frozen]]:
        """Logical source topic -> record type."""
        return {topic: kind for m in self.models for topic, kind in m.sources.items()}


def plan(names: Iterable[str], models: Sequence[ReadModel[Any]] = READ_MODELS) -> Plan:
    """The models named (``all``: every one) and every model they read, in registry order."""
    by_name = {m.name: m for m in models}
    wanted = set(by_name) if ALL in names else set(names)
    unknown = sorted(wanted - set(by_name))
    if unknown:
        raise UnknownModel(f"unknown read model {unknown[0]!r}: one of {ALL}, {', '.join(by_name)}")
    todo = list(wanted)
    while todo:
        for needed in by_name[todo.pop()].after:
            if needed not in wanted:
                wanted.add(needed)
                todo.append(needed)
    chosen = tuple(m for m in models if m.name in wanted)
    return Plan(chosen, complete=len(chosen) == len(models))


@dataclass(frozen=True)
class Progress:
    """How far a job is, as shown on stderr and in its row."""

    phase: str
    done: int
    total: int
    rate: float
    eta_s: float | None

    def line(self, job_id: str) -> str:
        """One progress line."""
        share = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
        eta = f", ETA {self.eta_s:.0f} s" if self.eta_s is not None else ""
        return (
            f"replay {job_id} {self.phase}: {self.done:,}/{self.total:,} events{share},"
            f" {self.rate:,.0f} events/s{eta}"
        )


Report = Callable[[Progress], None]


class Rebuild:
    """Runs one job to its swap (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        dsn: str,
        codec: Codec,
        job: Job,
        report: Report = lambda progress: None,
    ) -> None:
        self.settings, self.bootstrap, self.dsn, self.codec = settings, bootstrap, dsn, codec
        self.job, self.report = job, report
        self.plan = plan(job.models)
        self.stopping = asyncio.Event()
        self.skipped = 0
        self._topics = {settings.topic(t): kind for t, kind in self.plan.sources.items()}
        self._done = 0
        self._total = 0
        self._first: Offsets = {}
        self._clock = (time.monotonic(), 0)
        self._reported = 0.0
        self._owner: asyncpg.Pool | None = None

    def stop(self) -> None:
        """Finish the batch being written, then raise Interrupted (resumable)."""
        self.stopping.set()

    async def run(self) -> None:
        """Bulk, catch-up and swap; the job ends `done` (or raises, left to resume)."""
        owner = await create_pool(self.dsn, min_size=1, max_size=2)
        workers = max(2, self.settings.replay_workers)  # as many ANALYZEs at once
        gen = await create_pool(with_search_path(self.dsn, self.job.schema), max_size=workers)
        consumer = self._consumer()
        await consumer.start()
        self._owner = owner
        try:
            await self._run(owner, gen, consumer)
        finally:
            await consumer.stop()
            await gen.close()
            await owner.close()

    async def _run(self, owner: asyncpg.Pool, gen: asyncpg.Pool, consumer: Any) -> None:
        tps = await self._partitions(consumer)
        async with owner.acquire() as conn:
            await generation.create(conn, self.job.schema, self.plan.tables)
            targets = await self._targets(consumer, tps)
            first = await consumer.beginning_offsets(tps)
            self._total = sum(max(0, targets[tp] - first[tp]) for tp in tps)
            await replay_jobs.start(conn, self.job.job_id, _jsonable(targets), self._total)
        writer = BatchWriter(gen, PROJECTION, self._skip, self.plan.models, self.stopping)
        self._first = first
        self._done = await self._written(gen, tps)
        self._clock = (time.monotonic(), self._done)
        deferred = any(True for _ in self._groups(targets, await self._positions(gen, tps)))
        if deferred:  # some groups load in bulk: their tables' other indexes are built after
            loaded = [t for t in self.plan.tables if t in bulk.TABLES]
            async with gen.acquire() as conn:
                await generation.drop_secondary_indexes(conn, self.job.schema, loaded)
        else:  # a resumed job whose groups are all loaded: its lookups need them now
            await generation.restore_indexes(gen, self.job.schema, self.plan.tables)
        workers = min(self.settings.replay_workers, len({tp.partition for tp in tps}))
        if workers > 1:
            consumer.pause(*tps)  # the workers read; this consumer must not fetch meanwhile
            later = await self._bulk_in_processes(gen, targets, workers, deferred)
        else:
            later = await self._bulk_phase(consumer, gen, targets, writer, deferred)
        if deferred:
            await generation.restore_indexes(gen, self.job.schema, self.plan.tables)
        await self._consume(consumer, gen, later, writer, "bulk")  # groups left for after them
        await asyncio.gather(*(_analyze(gen, t) for t in self.plan.tables))  # as the pool allows
        await self._catch_up(consumer, owner, gen, tps, writer)
        await self._swap(consumer, owner, tps, writer)

    async def _written(self, gen: Any, tps: list[TopicPartition]) -> int:
        """Events the generation has checkpointed past."""
        at = await self._positions(gen, tps)
        return sum(max(0, at[tp] - self._first.get(tp, 0)) for tp in tps)

    async def _bulk_in_processes(
        self, gen: Any, targets: Offsets, workers: int, deferred: bool
    ) -> Offsets:
        """The bulk phase in `workers` processes (:func:`bulk_worker`), progress read from
        the generation's checkpoints; a stop is passed on to them as SIGTERM. Returns the
        partitions left for after the indexes (`_bulk_phase`)."""
        context = multiprocessing.get_context("spawn")  # no fork of a running event loop
        results = context.SimpleQueue()
        parts = [
            Part(i, self.settings, self.bootstrap, self.dsn, self.job, share, deferred)
            for i, share in enumerate(shares(targets, workers))
        ]
        procs = [context.Process(target=bulk_worker, args=(p, results)) for p in parts]
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()  # a stop, or a worker gone: look at once
        for proc in procs:
            proc.start()
            loop.add_reader(proc.sentinel, _exited, loop, proc.sentinel, wake)
        stopping = asyncio.ensure_future(self.stopping.wait())
        stopping.add_done_callback(lambda _: wake.set())
        stopped = False
        try:
            while any(proc.exitcode is None for proc in procs):
                if self.stopping.is_set() and not stopped:
                    stopped = True
                    for proc in procs:
                        if proc.exitcode is None and proc.pid is not None:
                            os.kill(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(wake.wait(), REPORT_EVERY_S)
                except TimeoutError:
                    pass
                wake.clear()
                if stopped:
                    await asyncio.to_thread(_join, procs)
                self._done = await self._written(gen, list(targets))
                await self._progress("bulk")
        finally:
            stopping.cancel()
            for proc in procs:  # cancelled (or failed above): no worker outlives the job
                loop.remove_reader(proc.sentinel)
                if proc.exitcode is None:
                    proc.terminate()
            await asyncio.to_thread(_join, procs)
        errors: dict[int, str] = {}
        later: Offsets = {}
        while not results.empty():
            index, skipped, error, left = results.get()
            self.skipped += skipped
            later.update(left)
            if error:
                errors[index] = error
        codes = [proc.exitcode for proc in procs]
        if any(code == INTERRUPTED for code in codes) or self.stopping.is_set():
            raise Interrupted(f"replay {self.job.job_id} interrupted: run it again to resume")
        failed = [(i, code) for i, code in enumerate(codes) if code != 0]
        if failed:
            i, code = failed[0]
            why = errors.get(i, f"exit code {code}")
            raise RuntimeError(f"replay {self.job.job_id}: bulk worker {i} failed: {why}")
        return later

    async def _bulk_phase(
        self, consumer: Any, gen: Any, goal: Offsets, w: BatchWriter, deferred: bool
    ) -> Offsets:
        """`goal`'s partitions up to it: the groups that qualify loaded whole
        (:mod:`paywatch.projections.bulk`), the other partitions incrementally, except,
        returned, those that read the bulk tables while their indexes are `deferred`
        (the lookups would scan): a group whose load failed, one too large or resumed."""
        at = await self._positions(gen, list(goal))
        rest = dict(goal)
        later: Offsets = {}
        loader: asyncpg.Connection | None = None
        try:
            for group in self._groups(goal, at):
                if self.stopping.is_set():
                    break
                if loader is None:  # asyncpg's own jsonb codec: JSON text in binary COPY
                    loader = await asyncpg.connect(with_search_path(self.dsn, self.job.schema))
                for tp in group:
                    del rest[tp]
                if not await self._load(consumer, loader, group, at):
                    later.update(group)
        finally:
            if loader is not None:
                await loader.close()
        if deferred:
            topics = {self.settings.topic(t) for t in bulk.TOPICS}
            later.update({tp: end for tp, end in rest.items() if tp.topic in topics})
            rest = {tp: end for tp, end in rest.items() if tp.topic not in topics}
        await self._consume(consumer, gen, rest, w, "bulk")
        return later

    def _groups(self, goal: Offsets, at: Offsets) -> Iterable[Offsets]:
        """The partition groups a bulk load may take: none of their partitions written yet,
        at most `replay_bulk_records` records, every model reading them foldable in bulk."""
        reading = {m.name for m in self.plan.models if set(m.sources) & set(bulk.TOPICS)}
        if not reading or not reading <= bulk.MODELS:
            return
        topics = {self.settings.topic(t) for t in bulk.TOPICS}
        by_number: dict[int, Offsets] = {}
        for tp, end in goal.items():
            if tp.topic in topics:
                by_number.setdefault(tp.partition, {})[tp] = end
        for _, group in sorted(by_number.items()):
            fresh = all(at[tp] <= self._first.get(tp, 0) for tp in group)
            size = sum(max(0, end - at[tp]) for tp, end in group.items())
            if fresh and 0 < size <= self.settings.replay_bulk_records:
                yield group

    async def _load(self, consumer: Any, conn: Any, group: Offsets, at: Offsets) -> bool:
        """Read the group whole and write it in one transaction; False (nothing written)
        when stopped meanwhile or when a row cannot be written (then it goes
        incrementally, where the record at fault is found and skipped)."""
        gc.disable()  # the group's history is a large young heap: the collector would scan
        try:  # it again and again (~1/3 of the decoding time), to find no cycles in it
            return await self._load_group(consumer, conn, group, at)
        finally:
            gc.enable()

    async def _load_group(self, consumer: Any, conn: Any, group: Offsets, at: Offsets) -> bool:
        records = bulk.Group()
        async for entries in self._batches(consumer, {tp: at[tp] for tp in group}, group):
            for entry in entries:
                records.add(entry.record, entry.at)
            self._done += len(entries)
            await self._progress("bulk")
        if self.stopping.is_set():
            return False
        loaded = bulk.load(records, [m.name for m in self.plan.models])
        positions = {(tp.topic, tp.partition): end for tp, end in group.items()}
        try:
            await durably(lambda: bulk.write(conn, loaded, PROJECTION, positions), self.stopping)
        except Exception as exc:
            if not record_fault(exc):
                raise
            log.warning(
                "replay %s: partition group %s goes incrementally: %s",
                self.job.job_id, next(iter(group)).partition, exc,
            )  # fmt: skip
            self._done -= sum(group[tp] - at[tp] for tp in group)
            return False
        return True

    def _consumer(self) -> AIOKafkaConsumer:
        return log_reader(
            self.bootstrap,
            client_id=f"paywatch-replay-{self.job.job_id}",
            security=kafka_security(self.settings),
            isolation_level="read_committed",  # what the live projector reads
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def _partitions(self, consumer: Any) -> list[TopicPartition]:
        """Every partition of the source topics, assigned; a missing topic is an error (a
        rebuild from nothing would swap empty tables in)."""
        cluster = await consumer._client.fetch_all_metadata()  # topics() may be stale
        tps = []
        for topic in self._topics:
            found = cluster.partitions_for_topic(topic)
            if not found:
                raise MissingTopic(f"source topic {topic} does not exist")
            tps += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(tps)
        return tps

    async def _targets(self, consumer: Any, tps: list[TopicPartition]) -> Offsets:
        """The bulk phase's end offsets: kept in the job row from its first run."""
        stored = self.job.targets
        if stored is not None:
            return {tp: stored.get(tp.topic, {}).get(str(tp.partition), 0) for tp in tps}
        ends: Offsets = await consumer.end_offsets(tps)
        return ends

    async def _positions(self, pool: Any, tps: list[TopicPartition], where: str = "") -> Offsets:
        """Checkpoints (next offsets) of the projection: the generation's, or `where`'s."""
        table = (
            generation.qualified(where, generation.CHECKPOINTS)
            if where
            else "projection_checkpoints"
        )
        rows = await pool.fetch(
            f"SELECT topic, partition, next_offset FROM {table}"  # noqa: S608 (fixed names)
            " WHERE projection = $1 AND topic = ANY($2::text[])",
            PROJECTION,
            list(self._topics),
        )
        stored = {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}
        return {tp: stored.get(tp, 0) for tp in tps}

    async def _consume(
        self, consumer: Any, gen: Any, goal: Offsets, writer: BatchWriter, phase: str
    ) -> None:
        """Read every partition from the generation's checkpoint up to `goal` and write it,
        the next batch fetched and decoded while the previous one is written."""
        at = await self._positions(gen, list(goal))
        pending: asyncio.Task[int] | None = None
        try:
            async for entries in self._batches(consumer, at, goal):
                if pending is not None:
                    await pending
                pending = asyncio.create_task(writer.write(entries))
                self._done += len(entries)
                await self._progress(phase)
                if self.stopping.is_set():
                    break
        finally:
            if pending is not None:
                await pending
        if self.stopping.is_set():
            raise Interrupted(f"replay {self.job.job_id} interrupted: run it again to resume")

    async def _batches(self, consumer: Any, at: Offsets, goal: Offsets) -> Any:
        """Batches of entries below `goal`, from `at`, until every partition reached it."""
        left = {tp for tp in goal if at[tp] < goal[tp]}
        for tp in goal:
            consumer.seek(tp, at[tp])
        consumer.pause(*[tp for tp in goal if tp not in left])
        consumer.resume(*left)
        limit = self.settings.projector_batch
        while left and not self.stopping.is_set():
            polled = await consumer.getmany(*left, timeout_ms=500, max_records=limit)
            entries = []
            for tp, records in polled.items():
                end = goal[tp]
                entries += [await self._entry(r) for r in records if r.offset < end]
                if records and records[-1].offset + 1 >= end:
                    left.discard(tp)
                    consumer.pause(tp)
            for tp in list(left):  # a compacted or transactional tail: no record at end - 1
                if await consumer.position(tp) >= goal[tp]:
                    left.discard(tp)
                    consumer.pause(tp)
            if entries:
                yield entries

    async def _entry(self, rec: Any) -> Entry:
        at = Coords(rec.topic, rec.partition, rec.offset)
        try:
            record = self.codec.decode(rec.value, self._topics[rec.topic], topic=rec.topic)
        except CodecError as exc:
            self._skipped(at, exc)
            return Entry(None, at, rec.key, rec.value)
        return Entry(record, at, rec.key, rec.value)

    async def _skip(self, entry: Entry, exc: BaseException) -> None:
        self._skipped(entry.at, exc)

    def _skipped(self, at: Coords, exc: BaseException) -> None:
        self.skipped += 1
        log.warning("replay skips %s[%s]@%s: %s", at.topic, at.partition, at.offset, exc)

    async def _progress(self, phase: str, force: bool = False) -> None:
        """Report on stderr (through `report`) and in the job row, about once a second."""
        now = time.monotonic()
        if not force and now - self._reported < REPORT_EVERY_S:
            return
        self._reported = now
        since, done_then = self._clock
        rate = (self._done - done_then) / max(now - since, 1e-6)
        left = max(self._total - self._done, 0)
        eta = left / rate if rate > 0 and phase == "bulk" else None
        self.report(Progress(phase, self._done, self._total, rate, eta))
        if self._owner is not None:
            async with self._owner.acquire() as conn:
                await replay_jobs.progress(conn, self.job.job_id, self._done, rate, eta)

    async def _catch_up(
        self, consumer: Any, owner: Any, gen: Any, tps: list[TopicPartition], w: BatchWriter
    ) -> None:
        """Follow the live projector's checkpoints, unblocked, until the gap is small."""
        for _ in range(CATCH_UP_ROUNDS):
            live = await self._positions(owner, tps, generation.PUBLIC)
            mine = await self._positions(gen, tps)
            gap = sum(max(0, live[tp] - mine[tp]) for tp in tps)
            if gap <= self.settings.projector_batch:
                return
            goal = {tp: max(live[tp], mine[tp]) for tp in tps}
            await self._consume(consumer, gen, goal, w, "catch-up")

    async def _swap(self, consumer: Any, owner: Any, tps: list[TopicPartition], w: Any) -> None:
        """The last records and the swap in one transaction under the exclusive GATE."""
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            async with owner.acquire() as conn:
                await replay_jobs.set_status(conn, self.job.job_id, "swapping")
                try:
                    await self._swap_once(conn, consumer, tps)
                except (asyncpg.DeadlockDetectedError, _RecordFault) as exc:
                    log.warning(
                        "replay %s: swap attempt %s failed: %s", self.job.job_id, attempt, exc
                    )
                    await replay_jobs.set_status(conn, self.job.job_id, "running")
                    if isinstance(exc, _RecordFault):  # isolate it outside the transaction
                        live = await self._positions(conn, tps, generation.PUBLIC)
                        await self._consume(consumer, w.pool, live, w, "catch-up")
                    continue
                await replay_jobs.set_status(conn, self.job.job_id, "done")
                await self._progress("swapped", force=True)
                keep = self.settings.replay_keep_archives
                for schema in await generation.prune_archives(conn, keep):
                    log.info("replay %s: dropped the older archive %s", self.job.job_id, schema)
                return
        raise RuntimeError(f"replay {self.job.job_id}: the swap failed {SWAP_ATTEMPTS} times")

    async def _swap_once(self, conn: Any, consumer: Any, tps: list[TopicPartition]) -> None:
        schema = self.job.schema
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", GATE)
            await conn.execute("SELECT set_config('search_path', $1, true)", schema)
            live = await self._positions(conn, tps, generation.PUBLIC)
            mine = await self._positions(conn, tps)
            goal = {tp: max(live[tp], mine[tp]) for tp in tps}
            async for entries in self._batches(consumer, mine, goal):
                sink = PostgresSink(PROJECTION, self.plan.models)
                for entry in entries:
                    sink.add(entry.record, entry.at)
                try:
                    await sink.write(conn)  # a savepoint: this connection holds the GATE
                except Exception as exc:
                    if record_fault(exc):
                        raise _RecordFault(str(exc)) from exc
                    raise
                self._done += len(entries)
            if self.stopping.is_set():  # cut short: roll all of it back
                raise Interrupted(f"replay {self.job.job_id} interrupted: run it again to resume")
            await conn.execute("SELECT set_config('search_path', 'public', true)")
            if self.plan.complete:
                await conn.executemany(
                    "INSERT INTO public.projection_checkpoints (projection, topic, partition,"
                    " next_offset) VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic,"
                    " partition) DO UPDATE SET next_offset = GREATEST("
                    "projection_checkpoints.next_offset, EXCLUDED.next_offset), updated_at = now()",
                    [(PROJECTION, tp.topic, tp.partition, goal[tp]) for tp in tps],
                )
            await generation.swap(conn, schema, self.job.archive, self.plan.tables)
            await generation.drop(conn, schema)


class _RecordFault(Exception):
    """A record failed to write inside the swap's transaction."""


@dataclass(frozen=True)
class Part:
    """One bulk worker's share of a job (pickled into its process)."""

    index: int
    settings: Settings
    bootstrap: str
    dsn: str
    job: Job
    goal: Offsets
    deferred: bool
    """The bulk tables' secondary indexes are built after the bulk phase."""


def shares(targets: Offsets, workers: int) -> list[Offsets]:
    """`targets` split by partition number modulo `workers` (every topic's partition n goes
    to the same worker: the records of one key)."""
    return [{tp: at for tp, at in targets.items() if tp.partition % workers == i}
            for i in range(workers)]  # fmt: skip


async def _analyze(pool: Any, table: str) -> None:
    """The planner's statistics of a new table, before readers come."""
    async with pool.acquire() as conn:
        await conn.execute(f"ANALYZE {quoted(table)}")


def _exited(loop: asyncio.AbstractEventLoop, sentinel: int, wake: asyncio.Event) -> None:
    loop.remove_reader(sentinel)  # readable for good once the process is gone
    wake.set()


def _join(procs: Sequence[Any]) -> None:
    for proc in procs:
        proc.join()


def bulk_worker(part: Part, results: Any) -> None:
    """A bulk worker process: its share of the bulk phase, then its exit code (0, or
    INTERRUPTED after SIGINT/SIGTERM, or 1 with the error put on `results`)."""
    raise SystemExit(asyncio.run(_bulk_share(part, results)))


async def _bulk_share(part: Part, results: Any) -> int:
    from paywatch.kafka.codec import make_codec  # the worker's own codec (schema caches)

    runner = Rebuild(part.settings, part.bootstrap, part.dsn, make_codec(part.settings), part.job)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop)
    parent = multiprocessing.parent_process()
    if parent is not None:  # the job's process killed (-9): finish the batch and go too
        loop.add_reader(parent.sentinel, runner.stop)
    code, error, later = 0, "", {}
    try:
        gen = await create_pool(with_search_path(part.dsn, part.job.schema), max_size=2)
        consumer = runner._consumer()
        await consumer.start()
        try:
            consumer.assign(list(part.goal))
            writer = BatchWriter(gen, PROJECTION, runner._skip, runner.plan.models, runner.stopping)
            later = await runner._bulk_phase(consumer, gen, part.goal, writer, part.deferred)
        finally:
            await consumer.stop()
            await gen.close()
    except Interrupted:
        code = INTERRUPTED
    except Exception as exc:  # reported to the job's process, which fails the job
        log.exception("replay %s: bulk worker %s failed", part.job.job_id, part.index)
        code, error = 1, f"{type(exc).__name__}: {exc}"
    results.put((part.index, runner.skipped, error, later))
    return code


def with_search_path(dsn: str, schema: str) -> str:
    """`dsn` whose sessions resolve unqualified names in `schema` alone (asyncpg passes an
    unknown DSN parameter on as a server setting)."""
    parts = urlsplit(dsn)
    query = urlencode([*parse_qsl(parts.query), ("search_path", schema)])
    return urlunsplit(parts._replace(query=query))


def _jsonable(offsets: Offsets) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for tp, at in offsets.items():
        out.setdefault(tp.topic, {})[str(tp.partition)] = at
    return out


JOB_LOCKS = 0x7077
"""Class id of the session advisory lock held by the process running a job."""


class JobBusy(Exception):
    """The job is being run by another process."""


class JobUnusable(Exception):
    """The job asked for cannot be run (unknown, done, or another job is unfinished)."""


async def open_job(conn: Any, names: Sequence[str], job_id: str | None, by: str) -> Job:
    """The job to run: `job_id`'s, else the unfinished job rebuilding the same models
    (resumed), else a new one. JobUnusable when none of these can be."""
    if job_id is not None:
        job = await replay_jobs.get(conn, job_id)
        if job is None:
            raise JobUnusable(f"no replay job {job_id}")
        if job.status == "done":
            raise JobUnusable(f"replay job {job_id} is done already")
        return job
    wanted = [m.name for m in plan(names).models]
    current = await replay_jobs.active(conn)
    if current is not None:
        if [m.name for m in plan(current.models).models] == wanted:
            return current
        raise JobUnusable(
            f"replay job {current.job_id} ({', '.join(current.models)}) is unfinished:"
            f" finish it first with `paywatch replay --job {current.job_id}`"
        )
    try:
        return await replay_jobs.create(conn, None, wanted, by)
    except replay_jobs.JobActive as exc:
        raise JobUnusable(str(exc)) from exc


async def run_job(rebuild: Rebuild) -> None:
    """Run the job holding its lease; a failure is recorded on the job (an interruption is
    not: the job stays running, to be resumed)."""
    conn = await asyncpg.connect(rebuild.dsn)
    try:
        lease = "SELECT pg_try_advisory_lock($1, hashtext($2))"
        if not await conn.fetchval(lease, JOB_LOCKS, rebuild.job.job_id):
            raise JobBusy(f"replay job {rebuild.job.job_id} is being run by another process")
        try:
            await rebuild.run()
        except (Interrupted, asyncio.CancelledError):
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            await replay_jobs.set_status(conn, rebuild.job.job_id, "failed", error)
            raise
    finally:
        await conn.close()
